"""Where the package's installed data lives (share/liquid_control), with no ROS import: through
ament_index_python when it is there (colcon, or the venv on AMENT_PREFIX_PATH), else beside the
sources (a checkout)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "liquid_control"


def cache_root() -> Path:
    """Where the package keeps what it can rebuild (training's decoded frames, the camera encoder's
    ONNX graphs): $LIQUID_CONTROL_CACHE, else $XDG_CACHE_HOME/liquid_control, else
    ~/.cache/liquid_control."""
    if os.environ.get("LIQUID_CONTROL_CACHE"):
        return Path(os.environ["LIQUID_CONTROL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "liquid_control"


def share_path(*parts: str) -> Path:
    """share/liquid_control/<parts>, installed if found there, else in the source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            path = Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
            if path.exists():
                return path
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH not set
            pass
    except ImportError:
        pass
    path = Path(__file__).resolve().parents[1].joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join(parts)} not found in share/{PACKAGE} nor beside the sources")
    return path


PACKAGE_SCHEME = "package://"
DEFAULT_MODEL = f"{PACKAGE_SCHEME}{PACKAGE}/models/ncp_cfc_lane_keeping.safetensors"


def resolve_model_path(path: str | Path) -> Path:
    """A model path as users write it: a file path, or `package://<package>/<file>` (as in URDF)
    for a file installed in a package's share directory (ours is found from a checkout too)."""
    text = str(path)
    if not text.startswith(PACKAGE_SCHEME):
        return Path(text).expanduser()
    package, _, rest = text[len(PACKAGE_SCHEME) :].partition("/")
    if not package or not rest:
        raise FileNotFoundError(f"{text}: a package URI is package://<package>/<path>")
    if package == PACKAGE:
        return share_path(*rest.split("/"))
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package)) / rest
    except ImportError:
        raise FileNotFoundError(f"{text}: ament_index_python is needed to find package {package!r}") from None
    except Exception as exc:  # PackageNotFoundError, or AMENT_PREFIX_PATH unset
        raise FileNotFoundError(f"{text}: package {package!r} not found ({exc})") from None
