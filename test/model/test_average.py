"""liquid-control average: fine-tunes of one model averaged weight by weight (model/average.py).
The files are real model files: the shipped policy, and copies of it whose weights were moved as
a fine-tune moves them, written by save_model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from liquid_control.model.average import average_models
from liquid_control.model.modelfile import ModelFileError, load_model, save_model
from liquid_control.paths import resolve_model_path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = resolve_model_path(ROOT / "models" / "ncp_cfc_lane_keeping.safetensors")
CAR = ROOT / "models" / "ncp_cfc_car_camera_only.safetensors"


def _fine_tune(path: Path, seed: int, step: float = 0.01, **provenance) -> Path:
    """The shipped policy with every trained weight moved by seeded noise, saved as a model file."""
    policy, config = load_model(SHIPPED)
    g = torch.Generator().manual_seed(seed)
    trained = {k for k, v in policy.named_parameters() if v.requires_grad}  # not the wiring or normalisation
    state = {
        k: v + step * torch.randn(v.shape, generator=g, dtype=v.dtype) if k in trained else v
        for k, v in policy.state_dict().items()
    }
    policy.load_state_dict(state)
    save_model(path, policy, config.sensors, config.outputs, {**config.provenance, **provenance})
    return path


def test_the_average_is_the_mean_of_each_weight_and_keeps_everything_else(tmp_path):
    a, b = _fine_tune(tmp_path / "a.safetensors", 1), _fine_tune(tmp_path / "b.safetensors", 2, note="b")
    summary = average_models([str(a), str(b)], tmp_path / "soup.safetensors")
    ta, tb, soup = (load_file(str(p)) for p in (a, b, tmp_path / "soup.safetensors"))
    assert set(soup) == set(ta) and summary["tensors"] == len(ta)
    moved = 0
    for name, value in soup.items():
        if value.is_floating_point():
            expected = ((ta[name].double() + tb[name].double()) / 2).to(value.dtype)
            assert torch.equal(value, expected), name
            moved += int(not torch.equal(value, ta[name]))
        else:
            assert torch.equal(value, ta[name])
    assert moved > 10  # the mean is neither input
    assert 0.0 < summary["largest_difference"] < 1.0
    policy, config = load_model(tmp_path / "soup.safetensors")
    _, original = load_model(SHIPPED)
    assert (config.network, config.sensors, config.outputs, config.encoder) == (
        original.network,
        original.sensors,
        original.outputs,
        original.encoder,
    )
    averaged = config.provenance["averaged"]
    assert [x["file"] for x in averaged] == [str(a), str(b)] and averaged[1]["provenance"]["note"] == "b"
    assert config.provenance["trainer"] == "liquid-control average"
    for key in ("robot", "architecture", "labels"):  # what every input says alike of the model
        assert config.provenance[key] == original.provenance[key], key
    assert all(len(x["sha256"]) == 64 for x in averaged)


def test_a_model_averaged_with_itself_is_itself(tmp_path):
    average_models([str(SHIPPED), str(SHIPPED)], tmp_path / "same.safetensors")
    before, after = load_file(str(SHIPPED)), load_file(str(tmp_path / "same.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_models_that_differ_in_more_than_weights_are_refused_by_name(tmp_path):
    # The camera-only car reads other inputs, for another robot: no mean of the two is a model.
    with pytest.raises(ModelFileError, match=r"car_camera_only.*cannot be averaged.*network.*robot.*sensors"):
        average_models([str(SHIPPED), str(CAR)], tmp_path / "x.safetensors")
    other_robot = _fine_tune(tmp_path / "r.safetensors", 3, robot="car")
    with pytest.raises(ModelFileError, match=r"its robot differ"):
        average_models([str(SHIPPED), str(other_robot)], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_what_cannot_be_averaged_says_why_and_writes_nothing(tmp_path):
    a = _fine_tune(tmp_path / "a.safetensors", 1)
    for args, error, why in (
        (([str(a)], tmp_path / "y.safetensors"), ValueError, "two models or more"),
        (([str(a), str(tmp_path / "missing.safetensors")], tmp_path / "y.safetensors"), ModelFileError, "missing"),
        (([str(a), str(a)], tmp_path / "y.pt"), ValueError, "end in .safetensors"),
    ):
        with pytest.raises(error, match=why):
            average_models(*args)
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "y.pt").exists()


def test_the_command_line_writes_the_mean_and_says_in_one_line_what_it_cannot_do(tmp_path):
    a, b = _fine_tune(tmp_path / "a.safetensors", 1), _fine_tune(tmp_path / "b.safetensors", 2)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "liquid_control.cli", "average", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    ok = cli(a, b, "--output", tmp_path / "soup.safetensors", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["averaged"] == [str(a), str(b)]
    for args, why in (
        ((a, b, "--output", a), "the output is one of the models"),
        ((a, CAR, "--output", tmp_path / "y.safetensors"), "cannot be averaged"),
    ):
        bad = cli(*args)
        assert bad.returncode == 2 and why in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "y.pt").exists()
