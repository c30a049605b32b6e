"""Where the package's installed data lives (share/liquid_control), with no ROS import: through
ament_index_python when it is there (colcon, or the venv on AMENT_PREFIX_PATH), else beside the
sources (a checkout)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "liquid_control"


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
