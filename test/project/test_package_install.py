"""The installed layout in this interpreter's prefix (the venv `make test` builds), as ROS tools see it:
share/liquid_control/, the ament index marker, and the executables `ros2 run` and launch_ros find
in lib/liquid_control/."""

import ast
import importlib.metadata
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from liquid_control.start import EXECUTABLES

REPO = Path(__file__).resolve().parents[2]
PREFIX = Path(sys.prefix)
SHARE = PREFIX / "share" / "liquid_control"


def _setup_py_constant(name):
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"setup.py has no {name}")


SHARE_DIRS = _setup_py_constant("SHARE_DIRS")


def _run(args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)


def test_installed_package_xml_names_the_package_at_the_installed_version():
    root = ET.parse(SHARE / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "liquid_control"
    assert root.findtext("version") == importlib.metadata.version("liquid_control")
    assert root.findtext("export/build_type") == "ament_python"
    assert "rclpy" in [e.text for e in root.findall("exec_depend")]
    # An editable install copies data files: a stale copy means the venv needs a reinstall.
    assert (SHARE / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()


def test_share_holds_every_launch_config_and_model_file():
    sources = [
        p
        for top in SHARE_DIRS
        if (REPO / top).is_dir()
        for p in (REPO / top).rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(REPO).parts)
    ]
    for source in sources:
        installed = SHARE / source.relative_to(REPO)
        assert installed.is_file(), f"{source.relative_to(REPO)} is not installed at {installed}"
        assert installed.read_bytes() == source.read_bytes(), f"{installed} is stale: reinstall"


def test_ament_index_resolves_the_package_to_this_prefix():
    ament_index_python = pytest.importorskip("ament_index_python")
    assert str(PREFIX) in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep)  # conftest puts it there
    marker = PREFIX / "share" / "ament_index" / "resource_index" / "packages" / "liquid_control"
    assert marker.is_file()
    assert Path(ament_index_python.get_package_prefix("liquid_control")) == PREFIX
    assert Path(ament_index_python.get_package_share_directory("liquid_control")) == SHARE
    assert "liquid_control" in ament_index_python.get_packages_with_prefixes()


def test_every_executable_is_one_script_under_its_own_name():
    folder = REPO / "resource" / "executables"
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXECUTABLES)
    assert {p.resolve() for p in folder.iterdir()} == {(REPO / "resource" / "ros_executable").resolve()}


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_executable_is_where_ros2_run_and_launch_ros_look(name):
    # ros2 run / launch_ros: an executable file <prefix of the package>/lib/<package>/<name>
    path = PREFIX / "lib" / "liquid_control" / name
    assert path.is_file(), f"{path} missing"
    assert os.access(path, os.X_OK), f"{path} is not executable"
    result = _run([path, "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_cli_wrapper_passes_arguments_and_exit_code_and_uses_the_prefix_python():
    path = PREFIX / "lib" / "liquid_control" / "liquid-control"
    # No venv and no pyenv on PATH: the wrapper must still find this prefix's own interpreter.
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = _run([path, "no such command"], env=env)
    assert result.returncode == 2  # argparse's exit status comes through the wrapper
    assert "invalid choice: 'no such command'" in result.stderr  # one argument, spaces kept
    assert "usage: liquid-control" in result.stderr


def test_cli_is_on_path_in_the_prefix():
    path = PREFIX / "bin" / "liquid-control"
    assert os.access(path, os.X_OK), f"{path} is not an executable"
    result = _run([path, "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: liquid-control" in result.stdout


# Every Python distribution the package needs at run time (setup.py's install_requires and
# extras_require["full"]) -> its rosdep key (rosdistro's rosdep/python.yaml), or None where rosdep has
# none or only the distribution's build (then the colcon pip line of docs/install.md installs it). A colcon
# workspace installs nothing from setup.py: a distribution missing here is missing there.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "pyyaml": "python3-yaml",
    "transforms3d": "python3-transforms3d",
    "rosbags": "python3-rosbags-pip",
    "mujoco": "python3-mujoco-pip",
    "matplotlib": "python3-matplotlib",
    "networkx": "python3-networkx",
    "opencv-python-headless": "python3-opencv",
    "tqdm": "python3-tqdm",
    "scipy": "python3-scipy",
    "simplejpeg": "python3-simplejpeg-pip",
    "onnxruntime": "python3-onnxruntime-pip",
    "torch": None,
    "numba": None,
    "safetensors": None,
    "mcap": None,
    "onnx": None,
    "imageio": None,
    "imageio-ffmpeg": None,
}


def _setup_requirements() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup"]
    keywords = {k.arg: k.value for k in call.keywords}
    required = ast.literal_eval(keywords["install_requires"])
    extras = ast.literal_eval(keywords["extras_require"])
    return {name.split("=")[0].split("<")[0].split(">")[0] for name in [*required, *extras["full"]]}


def test_every_runtime_dependency_is_a_rosdep_key_in_package_xml_or_on_the_colcon_pip_line():
    needed = _setup_requirements()
    assert needed <= set(ROSDEP_KEYS), f"decide how a colcon workspace gets {sorted(needed - set(ROSDEP_KEYS))}"
    package = ET.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for e in package.findall("exec_depend")}
    comments = (REPO / "package.xml").read_text(encoding="utf-8")
    install = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    colcon = install.split("\n## In a colcon workspace", 1)[1].split("\n## ", 1)[0]
    pip_lines = [line for line in colcon.splitlines() if "pip install" in line]
    assert pip_lines, "docs/install.md's colcon section has no pip line"
    for name in sorted(needed):
        key = ROSDEP_KEYS[name]
        if key is not None:
            assert key in exec_depends, f"package.xml lacks <exec_depend>{key}</exec_depend> ({name})"
        else:
            assert any(f" {name}" in line for line in pip_lines), f"docs/install.md's colcon pip line lacks {name}"
            assert f" {name}" in comments, f"package.xml's pip comment lacks {name}"
    assert "lifecycle_msgs" in exec_depends  # controller_node --managed
