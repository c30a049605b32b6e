"""Sphinx configuration for the package's docs (Markdown through myst-parser, as rosdoc2 builds ROS
packages' docs for docs.ros.org). `make docs` builds them with warnings as errors."""

import xml.etree.ElementTree as ET
from pathlib import Path

_package = ET.parse(Path(__file__).resolve().parents[1] / "package.xml").getroot()

project = "liquid_control"
release = version = _package.findtext("version").strip()
author = "liquid_control maintainers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links to a page's sections (#a-section) resolve and are checked
html_theme = "alabaster"
