"""liquid_control: one setup.py for colcon (ament_python) and for pip (regular and editable).

Installed layout, the same for both: share/liquid_control/{package.xml, launch/, config/, models/},
share/ament_index/resource_index/packages/liquid_control, the ROS executables in lib/liquid_control/,
and the `liquid-control` command in bin/.
"""

import os
import xml.etree.ElementTree as ET

from setuptools import find_packages, setup

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: no PEP 660 editable installs to fix
    editable_wheel = None

PACKAGE = "liquid_control"

# Installed under share/liquid_control/ with their subdirectories.
SHARE_DIRS = ("launch", "config", "models")

# The executables: one shell script, resource/ros_executable, linked under each name in
# resource/executables/ (liquid_control/start.py maps the names to modules). ros2 run and
# launch_ros look for <prefix>/lib/liquid_control/NAME; console scripts cannot land there for both
# installers (pip puts them in bin/) and would carry the shebang of whichever Python ran the build
# (apt's /usr/bin/colcon: /usr/bin/python3, without the venv's torch). As data files, pip and colcon
# (also --symlink-install) install the same script with its mode, and it runs the prefix's own
# Python when the prefix has one (a venv) and python3 from PATH otherwise. Static files: a build
# writes nothing into the source tree.
EXECUTABLES_DIR = "resource/executables"


def package_version() -> str:
    """The version lives in package.xml only."""
    return ET.parse("package.xml").getroot().findtext("version").strip()


def executables() -> list[str]:
    return sorted(os.path.join(EXECUTABLES_DIR, name) for name in os.listdir(EXECUTABLES_DIR))


if editable_wheel is not None:

    class EditableWheelWithDataFiles(editable_wheel):
        """`pip install -e` with the data files a regular install gets.

        setuptools (65.5 and 84.2 read) leaves data_files out of editable wheels: it asks the
        distribution for has_data(), which only has has_data_files(). Without this, an editable
        venv has no package.xml, ament index marker or lib/liquid_control/ executables. They are
        copies, so a change under launch/, config/ or models/ needs a reinstall (the Makefile does it).
        """

        def _run_install(self, category: str) -> None:
            if category == "data" and self.distribution.has_data_files():
                self.run_command("install_data")
            else:
                super()._run_install(category)

    CMDCLASS = {"editable_wheel": EditableWheelWithDataFiles}
else:
    CMDCLASS = {}


def share_files() -> list[tuple[str, list[str]]]:
    """Every file under SHARE_DIRS, walked at build time, so new files need no edit here."""
    entries = []
    for top in SHARE_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            files = [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
            if files:
                entries.append((os.path.join("share", PACKAGE, dirpath), files))
    return entries


setup(
    name=PACKAGE,
    version=package_version(),
    description="Liquid neural network controllers for ROS 2 robots",
    maintainer="liquid_control maintainers",
    maintainer_email="maintainers@users.noreply.r-seed-ad571336.example",
    license="Apache-2.0",
    packages=find_packages(exclude=["test", "test.*"]),
    python_requires=">=3.10",
    # The base install runs the node on an exported model (backend onnx, with [edge]); torch
    # (training, the default torch backend, export) and MuJoCo (the simulator) are extras, so a
    # robot's small board need not carry them. `[full]` is everything; the Makefile installs it.
    install_requires=[
        "numpy",
        "safetensors",
        "transforms3d",
        "rosbags",
        "mcap",  # liquid-control recover reads MCAP files record by record, without their summary
        "numba",
        "pyyaml",
        "simplejpeg",  # libjpeg-turbo: compressed camera frames, decoded at DCT scale
        "tqdm",  # progress bars: collect, cache building, train, eval, table
    ],
    extras_require={
        # torch pinned in requirements/constraints.txt; onnx: export; matplotlib, networkx: plots
        # scipy: the evaluation table's intervals and tests (learning/stats.py)
        "torch": ["torch", "onnx", "matplotlib", "networkx", "scipy"],
        # The plots (train's loss curve, replay's commands, eval and drive --plot) and `info --graph`
        # (networkx: Wiring.get_graph, as ncps has it); train and replay always draw, hence in [torch].
        "plots": ["matplotlib", "networkx"],
        "sim": ["mujoco"],
        "edge": ["onnxruntime"],  # controller_node backend:=onnx, no torch
        "png": ["opencv-python-headless"],  # PNG camera frames (JPEG needs nothing more)
        # `liquid-control replay --video`: MP4 through the ffmpeg that imageio-ffmpeg's wheel ships
        "video": ["imageio", "imageio-ffmpeg"],
        "full": [
            "torch",
            "onnx",
            "onnxruntime",
            "mujoco",
            "matplotlib",
            "networkx",
            "opencv-python-headless",
            "imageio",
            "imageio-ffmpeg",
            "scipy",
        ],
        # ROS 2 Jazzy from PyPI wheels, for a venv without a ROS distro.
        "ros": [
            "ros-jazzy-rclpy",
            "ros-jazzy-rmw-fastrtps-cpp",
            "ros-jazzy-std-msgs",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-geometry-msgs",
            "ros-jazzy-nav-msgs",
            "ros-jazzy-std-srvs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-rosgraph-msgs",
            "ros-jazzy-rcl-interfaces",
            "ros-jazzy-lifecycle-msgs",  # controller_node --managed
        ],
        # pytest < 9: launch_testing 3.4.3 (Jazzy) cannot load its plugin under pytest 9
        # (ros2/launch#979), which breaks every launch test on a ROS machine.
        # `make docs`: the docs/ pages as rosdoc2 builds them (Sphinx, Markdown through myst-parser)
        "docs": ["sphinx", "myst-parser"],
        "test": [
            "pytest>=7.4,<9",
            "pytest-xdist",
            "ncps==1.0.1",
            "ruff",
            "mcap-ros2-support",
            "hypothesis",
            "opencv-python-headless",
        ],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files(),
        (f"lib/{PACKAGE}", executables()),
        ("bin", [os.path.join(EXECUTABLES_DIR, "liquid-control")]),  # on PATH in a venv and a sourced workspace
    ],
    cmdclass=CMDCLASS,
    zip_safe=False,
)
