"""Bags with takeovers, as a robot records them beside the controller node: the applied commands on
/cmd_vel (the policy's, and the person's while they took over), the node's ~/intervention marks and
~/proposed_cmd_vel. Written by the rosbags library directly (not our recorder). `info` counts the
takeovers, `train` weights them, and a model trained on the person's stretches alone learns what
the person did where the policy's own commands would have taught it nothing."""

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
from support import DRIVE_LABEL as LABEL  # noqa: E402
from support import DRIVE_MARKS as MARKS  # noqa: E402
from support import DRIVE_PROPOSED as PROPOSED  # noqa: E402
from support import person, run_cli, write_camera_drive  # noqa: E402

from liquid_control.learning.dataset import Episode  # noqa: E402

write_takeover_bag = write_camera_drive

TAKEOVERS = [(2.0, 5.0), (8.0, 12.5), (15.0, 17.0), (20.0, 23.5)]


_cli = partial(run_cli, timeout=900)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("takeovers")
    folder = root / "drives"
    folder.mkdir()
    write_takeover_bag(folder / "run1", 26.0, TAKEOVERS)
    write_takeover_bag(folder / "run2", 26.0, [(a + 1.0, b + 1.0) for a, b in TAKEOVERS], seed=4)
    held_out = write_takeover_bag(root / "held_out", 12.0, [], seed=9)  # the person drove all of it
    return folder, held_out


def test_info_counts_the_takeovers_of_a_bag_and_when_they_were(bags):
    folder, held_out = bags
    result = _cli("info", folder / "run1", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["training"]["intervention"] == MARKS
    marks = info["takeovers"]
    assert marks["topic"] == MARKS and marks["count"] == len(TAKEOVERS)
    # Bag time from the first message (the first frame, logged 20 ms after its stamp; the marks 21 ms).
    starts = [a for a, _ in marks["spans_s"]]
    ends = [b for _, b in marks["spans_s"]]
    np.testing.assert_allclose(starts, [a + 0.001 for a, _ in TAKEOVERS], atol=1e-6)
    np.testing.assert_allclose(ends, [b + 0.001 for _, b in TAKEOVERS], atol=1e-6)
    assert marks["seconds"] == pytest.approx(sum(b - a for a, b in TAKEOVERS), abs=1e-6)
    text = _cli("info", folder / "run1").stdout
    assert f"takeovers: 4 on {MARKS}, 13.0 s" in text and "from 2.00 s to 5.00 s" in text
    # A bag without marks says nothing of takeovers; --intervention-topic none reads none.
    assert "takeovers" not in json.loads(_cli("info", held_out, "--json").stdout)
    off = json.loads(_cli("info", folder / "run1", "--json", "--intervention-topic", "none").stdout)
    assert "takeovers" not in off and off["training"]["intervention"] is None
    wrong = _cli("info", folder / "run1", "--intervention-topic", LABEL)
    assert "the takeover marks must be std_msgs/msg/Bool" in wrong.stdout


def test_step_weights_weigh_takeovers_and_the_seconds_before_them():
    from liquid_control.learning.train import step_weights

    takeover = np.zeros(40, np.uint8)
    takeover[10:15] = 1
    takeover[30:] = 1
    episode = Episode(
        frames=np.zeros((1, 2, 2, 3), np.uint8),
        frame_index=np.zeros(40, np.int64),
        fields=np.zeros((40, 0), np.float32),
        dt=np.full(40, 0.1, np.float32),
        target=np.zeros((40, 2), np.float32),
        takeover=takeover,
    )
    w = step_weights(episode, 5.0, 0.0, 1.0)
    np.testing.assert_array_equal(w, np.where(takeover == 1, 5.0, 1.0))
    w = step_weights(episode, 5.0, 0.35, 0.0)  # 3 steps of 0.1 s before each takeover
    want = np.zeros(40)
    want[7:15] = 5.0
    want[27:] = 5.0
    np.testing.assert_array_equal(w, want)


def _replayed_error(model: Path, held_out: Path, out: Path) -> float:
    result = _cli("replay", held_out, "--model", model, "--output", out, "--compare-topic", LABEL, "--json")
    assert result.returncode == 0, result.stderr
    with open(json.loads(result.stdout)["csv"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["reason"] == "policy" and r["recorded_angular_z"]]
    replayed = np.array([float(r["angular_z"]) for r in rows])
    driver = np.array([float(r["recorded_angular_z"]) for r in rows])
    return float(np.abs(replayed - driver).mean())


@pytest.mark.slow
def test_learning_from_the_persons_takeovers_alone_follows_the_person_where_the_policy_did_not_steer(bags, tmp_path):
    """The same bags, trained twice: as they are (every step weighs 1, so half of the labels are the
    policy's own zero steering), and HG-DAgger's way (the takeovers only: --autonomous-weight 0).
    On a held-out drive of the person's, the second follows the person better by a margin."""
    folder, held_out = bags
    errors = {}
    for name, extra in (("all", []), ("takeovers", ["--autonomous-weight", "0", "--takeover-weight", "1"])):
        model = tmp_path / f"{name}.safetensors"
        result = _cli(
            "train", "--bag", folder, "--output", model, "--iterations", "80", "--window", "60", "--batch", "4",
            "--warmup", "10", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["topics"][str(folder / "run1")]["intervention"] == MARKS
        assert report["autonomous_weight"] == (0.0 if name == "takeovers" else 1.0)
        assert "a person commanded" in result.stdout
        errors[name] = _replayed_error(model, held_out, tmp_path / f"replayed_{name}")
    constant = float(np.mean(np.abs([person(k * 0.05) for k in range(240)])))
    assert errors["takeovers"] < 0.75 * errors["all"], (errors, constant)
    assert errors["takeovers"] < 0.8 * constant, (errors, constant)
    # replay finds the node's recorded proposals and compares them with the driver (the applied
    # commands: the person's steering in the takeovers, the policy's zero elsewhere) and with itself.
    result = _cli(
        "replay", folder / "run1", "--model", tmp_path / "takeovers.safetensors", "--output", tmp_path / "again",
        "--compare-topic", LABEL, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    proposals = json.loads(result.stdout)["proposals"]
    frames = [k * 0.05 for k in range(520)]
    driver = [abs(person(s)) if any(a <= s < b for a, b in TAKEOVERS) else 0.0 for s in frames]
    assert proposals["topic"] == PROPOSED and proposals["count"] == 520
    assert proposals["vs_driver"]["matched"] == 520
    assert proposals["vs_driver"]["angular.z"]["mean_abs_error"] == pytest.approx(np.mean(driver), rel=1e-5)
    assert proposals["vs_driver"]["linear.x"]["mean_abs_error"] == pytest.approx(0.0, abs=1e-6)
    assert proposals["vs_replay"]["matched_by"] == "header stamp" and proposals["vs_replay"]["matched"] > 500
    text = _cli(
        "replay", folder / "run1", "--model", tmp_path / "takeovers.safetensors", "--output", tmp_path / "text",
        "--compare-topic", LABEL,
    ).stdout  # fmt: skip
    assert f"the node's proposals on {PROPOSED}: 520" in text and f"vs the driver's {LABEL}" in text
