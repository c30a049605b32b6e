"""The arm64 check (bench/arm64_check.sh, `make arm64-check`) says why when it cannot run, and its
replay script gives the onnx backend's commands for a bag and tells equal recordings from different
ones. The emulated run itself (debootstrap, qemu, aarch64 wheels: minutes) is `make arm64-check`'s."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liquid_control.learning.collect import collect
from liquid_control.paths import DEFAULT_MODEL
from liquid_control.sim.track import Track, track_path

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "bench" / "arm64_check.sh"
REPLAY = ROOT / "bench" / "arm64_replay.py"


def test_without_its_tools_the_check_says_what_is_missing_and_how_to_get_it(tmp_path):
    # A PATH with the shell's basics only: no debootstrap, no qemu.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("uname", "id", "dirname", "mount", "date", "mktemp", "rm"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir)}
    result = subprocess.run(["/bin/bash", str(CHECK)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("arm64-check: cannot run here: "), line
    if os.getuid() == 0:
        assert "debootstrap is not installed: apt-get install -y qemu-user-static binfmt-support debootstrap" in line
    else:
        assert "sudo make arm64-check" in line


@pytest.fixture(scope="module")
def exported_and_bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arm64")
    model = folder / "model.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "export", DEFAULT_MODEL, "--onnx", str(model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    collect([Track.load(track_path("kidney"))], folder / "bag", episodes=1, seconds=2.0, seed=5)
    return model, folder / "bag"


def _replay(*args):
    return subprocess.run([sys.executable, str(REPLAY), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_replay_script_records_the_commands_and_compares_recordings(exported_and_bag, tmp_path):
    model, bag = exported_and_bag
    result = _replay(model, bag, tmp_path / "a.npy")
    assert result.returncode == 0, result.stderr
    commands = np.load(tmp_path / "a.npy")
    # 2 s of a 200 Hz IMU and a 30 Hz camera, answered once both flow; some of them driving.
    assert commands.shape[1] == 3 and 300 < len(commands) <= 2.0 * 230 + 1
    assert np.any(commands[:, 1] > 0.1)
    again = _replay(model, bag, tmp_path / "b.npy")
    assert again.returncode == 0, again.stderr
    same = _replay("--compare", tmp_path / "a.npy", tmp_path / "b.npy")
    assert same.returncode == 0 and same.stdout.startswith("same:"), same.stdout
    nudged = commands.copy()
    nudged[len(nudged) // 2, 2] += 2e-5  # one angular.z off by twice the tolerance
    np.save(tmp_path / "c.npy", nudged)
    different = _replay("--compare", tmp_path / "a.npy", tmp_path / "c.npy")
    assert different.returncode == 1 and different.stdout.startswith("DIFFERENT:"), different.stdout
    np.save(tmp_path / "d.npy", commands[:-1])
    shorter = _replay("--compare", tmp_path / "a.npy", tmp_path / "d.npy")
    assert shorter.returncode == 1 and "commands against" in shorter.stdout, shorter.stdout
