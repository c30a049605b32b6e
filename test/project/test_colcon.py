"""The package as a ROS 2 workspace builds and runs it: colcon (colcon-core and colcon-ros from PyPI,
in a venv of its own, as apt's /usr/bin/colcon runs on a Python other than the user's) builds a
copy of the source in a temporary workspace, plain and --symlink-install; the build writes nothing
into the source; from the sourced install space, with this venv's python3 first on PATH and no
other prefix in AMENT_PREFIX_PATH, `liquid-control --help`, a one-episode `eval` of the shipped
model (found through the install space's ament index) and controller_node answering sensor
messages work."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

REPO = Path(__file__).resolve().parents[2]
COLCON = REPO / ".colcon-venv" / "bin" / "colcon"
SHIPPED = "package://liquid_control/models/ncp_cfc_lane_keeping.safetensors"


def _source_files() -> list[str]:
    """What a clone holds: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({p for p in listed.split("\0") if p and os.path.lexists(REPO / p)})


def _snapshot(root: Path) -> dict[str, tuple]:
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            entries[str(path.relative_to(root))] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                os.readlink(path) if path.is_symlink() else None,
            )
    return entries


def _env() -> dict[str, str]:
    """A user's shell: this venv's bin first on PATH (its python3 has torch and the ROS wheels), no
    prefix of ours in AMENT_PREFIX_PATH or PYTHONPATH until the workspace's setup.sh adds its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    return env


@pytest.fixture(scope="module", params=["symlink", "plain"])
def workspace(request, tmp_path_factory):
    if not COLCON.exists():
        pytest.skip(f"{COLCON} missing: `make venv` (and `make test`) make it from requirements/colcon.txt")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to copy the source as a clone holds it")
    ws = tmp_path_factory.mktemp(f"ws_{request.param}")
    src = ws / "src" / "liquid_control"
    for rel in _source_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            target.symlink_to(os.readlink(REPO / rel))
        else:
            shutil.copy2(REPO / rel, target)
    before = _snapshot(src)
    args = [str(COLCON), "build", "--base-paths", "src", *(["--symlink-install"] if request.param == "symlink" else [])]
    result = subprocess.run(args, cwd=ws, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = _snapshot(src)
    assert after == before, (
        f"colcon build wrote into the source: {sorted(set(after.items()) ^ set(before.items()))[:10]}"
    )
    return ws


def _in_workspace(ws: Path, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", f". install/setup.sh && {command}"],
        cwd=ws,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_install_space_has_the_executables_and_runs_the_cli(workspace):
    prefix = workspace / "install" / "liquid_control"
    for name in ("controller_node", "sim_node", "liquid-control"):
        assert os.access(prefix / "lib" / "liquid_control" / name, os.X_OK), name
    result = _in_workspace(
        workspace,
        "command -v liquid-control && liquid-control --help && "
        "python3 -c 'import liquid_control, ament_index_python as a; "
        'print(liquid_control.__file__); print(a.get_package_prefix("liquid_control"))\'',
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(prefix / "bin" / "liquid-control")
    assert "usage: liquid-control" in result.stdout
    # The workspace's package, not this venv's editable one.
    assert Path(lines[-2]).is_relative_to(workspace) and Path(lines[-1]) == prefix, lines[-2:]


def test_eval_runs_one_episode_from_the_install_space(workspace):
    result = _in_workspace(workspace, "liquid-control eval --episodes 1 --seconds 3 --json")
    assert result.returncode == 0, result.stderr
    assert f'"{SHIPPED}"' in result.stdout and '"episodes": 1' in result.stdout.replace("'", '"'), result.stdout


def test_the_installed_node_answers_sensor_messages(workspace):
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, Imu
    from support import publish_sensors, spinning_node

    from liquid_control.processes import stop

    ns = f"/lc_colcon_{os.getpid()}_{workspace.name}"
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            ". install/setup.sh && exec install/liquid_control/lib/liquid_control/controller_node "
            f"--ros-args -r __ns:={ns} -p model_path:={SHIPPED}",
        ],
        cwd=workspace,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peer, close = spinning_node("colcon_peer", ns)
    try:
        imu = peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
        camera = peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        commands = []
        peer.create_subscription(Twist, "cmd_vel", commands.append, 10)
        deadline = time.monotonic() + 120
        while imu.get_subscription_count() == 0 or camera.get_subscription_count() == 0:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the installed node never subscribed"
            time.sleep(0.05)
        k = 0
        while not commands:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the installed node never answered"
            publish_sensors(imu, camera, 100.0 + 0.01 * k, frame=k % 3 == 0, width=96, height=64)
            k += 1
            time.sleep(0.01)
        assert rclpy.ok(context=peer.context)
    finally:
        close()
        stop(proc)
