"""`liquid-control dagger` end to end on a short run in real MuJoCo: a policy trained on a little
expert data drives, the expert takes over (HG-DAgger) or labels and shares the driving (DAgger's
beta), the rounds' bags are what a robot's would be, each round fine-tunes the last model on all
the data, is evaluated, and an interrupted run goes on where it stopped."""

import json
import os
from functools import partial

import pytest

pytest.importorskip("mujoco")

from support import run_cli  # noqa: E402

pytestmark = [pytest.mark.sim, pytest.mark.slow]
ENV = {**os.environ, "MUJOCO_GL": "egl"}
SHORT = ["--track", "oval", "--episodes", "1", "--seconds", "5", "--iterations", "3"]
EVAL = ["--eval-condition", "nominal", "--eval-episodes", "1"]


_cli = partial(run_cli, timeout=600, env=ENV)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Two short expert episodes and a policy trained on them for a few iterations: one that
    leaves the road without help."""
    root = tmp_path_factory.mktemp("dagger")
    result = _cli("collect", "--track", "oval", "--episodes", "2", "--seconds", "6", "--output", root / "base")
    assert result.returncode == 0, result.stderr
    result = _cli(
        "train", "--bag", root / "base", "--output", root / "start.safetensors", "--iterations", "8",
        "--window", "60", "--batch", "2", "--warmup", "10", "--eval-every", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root


def test_takeover_rounds_record_what_a_robot_would_and_fine_tune_on_the_takeovers(start, tmp_path):
    from liquid_control.model.modelfile import load_model

    out = tmp_path / "run"
    args = ["dagger", "--output", out, "--bag", start / "base", "--model", start / "start.safetensors"]
    args += ["--mode", "takeover", "--threshold", "0.05", "--rounds", "2", *SHORT, *EVAL, "--json"]
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["round"] for r in state["rounds"]] == [1, 2]
    for r in state["rounds"]:
        rollouts = r["rollouts"]
        # The expert took over at least once and handed back: both drove.
        assert rollouts["takeovers"] >= 1 and 0.0 < rollouts["policy_share"] < 1.0, rollouts
        info = json.loads(_cli("info", r["bag"], "--json").stdout)
        assert info["takeovers"]["topic"] == "/liquid_controller/intervention"
        assert info["takeovers"]["count"] == rollouts["takeovers"]
        assert "/liquid_controller/proposed_cmd_vel" in info["topics"]
        assert "/teacher/cmd_vel" not in info["topics"]  # a person labels only their takeovers
        assert info["training"]["label"] == "/cmd_vel"
        assert set(r["evaluation"]) == {"nominal"} and r["evaluation"]["nominal"]["episodes"] == 1
    # Each round fine-tunes the last one's model on every bag so far, from the takeovers alone.
    _, first = load_model(out / "round1" / "model.safetensors")
    _, second = load_model(out / "round2" / "model.safetensors")
    assert first.provenance["init"] == str(start / "start.safetensors")
    assert second.provenance["init"] == str(out / "round1" / "model.safetensors")
    assert second.provenance["autonomous_weight"] == 0.0
    assert len(second.provenance["bags"]) == 3
    assert second.provenance["topics"][str(out / "round2" / "rollouts")]["intervention"] == (
        "/liquid_controller/intervention"
    )
    # Interrupted after round 2's rollouts: its bag is kept, its model trained again.
    bag_stamp = (out / "round2" / "rollouts").stat().st_mtime_ns
    (out / "round2" / "model.safetensors").unlink()
    state_file = json.loads((out / "dagger.json").read_text())
    state_file["rounds"] = state_file["rounds"][:1]
    (out / "dagger.json").write_text(json.dumps(state_file))
    result = _cli(*args[:-1])
    assert result.returncode == 0, result.stderr
    assert (out / "round2" / "rollouts").stat().st_mtime_ns == bag_stamp
    assert (out / "round2" / "model.safetensors").exists() and "round 2: takeover rollouts" not in result.stdout
    # Other options on the same folder are refused, not mixed in.
    refused = _cli(*[a if a != "takeover" else "beta" for a in args[:-1]])
    assert refused.returncode == 2 and "holds rounds of another run (it differs in mode)" in refused.stderr


def test_beta_rounds_label_every_state_and_share_the_driving_as_beta_says(start, tmp_path):
    beta = 1.0  # the expert drives every second of round 1 (the takeover test has both driving)
    out = tmp_path / "beta"
    result = _cli(
        "dagger", "--output", out, "--bag", start / "base", "--model", start / "start.safetensors",
        "--mode", "beta", "--beta", beta, "--rounds", "1", *SHORT, *EVAL, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (r,) = json.loads(result.stdout.strip().splitlines()[-1])["rounds"]
    assert r["beta"] == beta and r["rollouts"]["policy_share"] == 1.0 - beta
    info = json.loads(_cli("info", r["bag"], "--json").stdout)
    assert info["training"]["label"] == "/teacher/cmd_vel"  # the expert labels every state
    assert info["topics"]["/teacher/cmd_vel"]["count"] == info["topics"]["/imu/data"]["count"]
    assert "takeovers" not in info
