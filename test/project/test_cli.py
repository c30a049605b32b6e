"""The `liquid-control` command line, run as a user runs it (a subprocess of this venv)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from liquid_control import nets
from liquid_control.model.modelfile import OutputSpec, SensorSpec, save_model
from liquid_control.paths import DEFAULT_MODEL

pytestmark = pytest.mark.sim


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info_prints_config_parameters_and_wiring(tmp_path):
    torch.manual_seed(0)
    model = nets.CfC(4, nets.AutoNCP(19, 2, seed=7))
    path = tmp_path / "policy.safetensors"
    save_model(
        path,
        model,
        SensorSpec(("a", "b", "c", "d"), (0.0,) * 4, (1.0,) * 4, image={"width": 96, "height": 64, "encoding": "rgb8"}),
        OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.0, 1.0))),
        {"trainer": "test"},
    )
    result = _cli("info", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CFC wired, 4 inputs -> 2 outputs, state 19" in out
    wiring = model.wiring
    assert (
        f"neurons    inter {len(wiring.get_neurons_of_layer(0))}, command {len(wiring.get_neurons_of_layer(1))}, motor 2"
        in out
    )
    assert f"{wiring.sensory_synapse_count} sensory, {wiring.synapse_count} internal" in out
    assert "output     angular.z [rad/s] in [-1.0, 1.0]" in out
    assert '"trainer": "test"' in out

    as_json = json.loads(_cli("info", str(path), "--json").stdout)
    assert as_json["parameters"]["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert as_json["config"]["network"]["wiring"] == {
        "type": "AutoNCP",
        "units": 19,
        "output_size": 2,
        "sparsity_level": 0.5,
        "seed": 7,
    }
    assert as_json["wiring"]["synapses"] == wiring.synapse_count


def test_info_on_a_bad_file_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 5)
    result = _cli("info", str(bad))
    assert result.returncode == 2
    assert "broken.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_every_command_given_a_file_it_cannot_use_says_so_in_one_line_with_status_2(tmp_path):
    """A FIFO where a model belongs (opening it would wait forever), a truncated model, a track file
    that is not there: one line naming the file and the problem, status 2, for every command that
    takes them; never a traceback, never a hang."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 5)
    cases = [
        (("eval", "--model", str(fifo), "--seconds", "1"), str(fifo)),
        (("eval", "--model", str(broken), "--seconds", "1"), str(broken)),
        (("eval", "--track", str(tmp_path / "none.yaml"), "--seconds", "1"), "none.yaml"),
        (("eval", "--track", str(fifo), "--seconds", "1"), str(fifo)),
        (("info", str(fifo)), str(fifo)),
        (("export", str(fifo), "--onnx", str(tmp_path / "x.onnx")), str(fifo)),
    ]
    for args, names in cases:
        result = _cli(*args, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and names in lines[0], (args, result.stderr)
        assert lines[0].startswith("error: ")


def test_demo_trains_a_liquid_driver_that_keeps_the_road(tmp_path):
    # A shorter training than the default; still has to drive the synthetic road closed loop.
    result = _cli("demo", "--iterations", "80", "--seed", "2", "--output", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    liquid, expert, blind = results["liquid CfC"], results["expert"], results["no steering"]
    assert not blind["on_road"]
    assert liquid["on_road"]
    assert liquid["mean_abs_offset_m"] < 2.0 * expert["mean_abs_offset_m"]
    assert liquid["mean_abs_offset_m"] < blind["mean_abs_offset_m"] / 5
    assert (tmp_path / "demo_cfc.safetensors").exists()
    assert "liquid step latency" in result.stdout


def test_table_evaluates_models_across_conditions_and_writes_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "table.json", tmp_path / "table.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "liquid_control.cli",
            "table",
            "--model",
            f"shipped={DEFAULT_MODEL}",
            "--model",
            f"shipped={DEFAULT_MODEL}",
            "--model",
            f"again={DEFAULT_MODEL}",
            "--model",
            "expert=expert",
            "--condition",
            "nominal",
            "--condition",
            "dark",
            "--episodes",
            "2",
            "--seconds",
            "3",
            "--jobs",
            "2",  # cells in spawned workers (forked ones could inherit a lock held by a torch thread)
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )
    assert result.returncode == 0, result.stderr
    table = json.loads(out_json.read_text())
    row = table["rows"]["shipped"]
    assert row["parameters"]["liquid_core"] > 0
    assert row["seeds"] == 2 and table["reference"] == "shipped"
    for condition in ("nominal", "dark"):
        cell = row["cells"][condition]
        # Two "seeds" (the same file twice) drive the same 2 episodes each, split over the training tracks.
        assert cell["episodes"] == 4 and cell["tracks"] == ["oval", "kidney"]
        # The shipped policy keeps the road in both (models/README.md: 100% over 6 x 30 s in each).
        assert cell["success_rate"] == 1.0 and cell["mean_abs_xte_m"] < 0.05, cell
        assert cell["success_ci"][0] < 1.0 == cell["success_ci"][1]  # 4 of 4 is not certainty
        assert cell["mean_abs_xte_ci"][0] <= cell["mean_abs_xte_m"] <= cell["mean_abs_xte_ci"][1]
        assert cell["success_rate_per_seed"] == [1.0, 1.0]
        # The same model under another name drives the same episodes: not distinguishable.
        vs = table["rows"]["again"]["cells"][condition]["vs_reference"]
        assert not vs["success_differs"] and not vs["xte_differs"], vs
    assert "| shipped |" in out_md.read_text() and "| shipped |" in result.stdout
    # The demonstrator as a row: no network, on the road where nothing makes it leave.
    expert = table["rows"]["expert"]
    assert expert["architecture"] == "pure pursuit on ground truth" and expert["parameters"]["trainable"] == 0
    assert all(expert["cells"][c]["success_rate"] == 1.0 for c in ("nominal", "dark"))
    assert "| expert | 1 | 0 | 0 |" in out_md.read_text()
    # The same table a row per condition: the models become columns, in the same order.
    from liquid_control.learning.report import markdown

    lines = markdown(table, by_condition=True).splitlines()
    assert "| condition | shipped | again | expert |" in lines and "| seeds | 2 | 1 | 1 |" in lines
    by_row = [line for line in lines if line.startswith("| dark |")]
    assert len(by_row) == 2 and all(line.count("|") == 5 for line in by_row), by_row  # success, then |xte|
    assert (
        by_row[0].split(" | ")[1] == f"{row['cells']['dark']['success_rate']:.0%} ["
        f"{row['cells']['dark']['success_ci'][0]:.0%}-{row['cells']['dark']['success_ci'][1]:.0%}]"
    )
    bad = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "table", "--model", "no-equals-sign"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "NAME=FILE" in bad.stderr


def test_table_keeps_cells_and_an_interrupted_table_resumes_from_them(tmp_path):
    cells = tmp_path / "cells"

    def table(*extra):
        out = tmp_path / "table.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "liquid_control.cli",
                "table",
                "--model",
                f"shipped={DEFAULT_MODEL}",
                "--condition",
                "nominal",
                "--episodes",
                "2",
                "--seconds",
                "2",
                "--cells",
                str(cells),
                "--json",
                str(out),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MUJOCO_GL": "egl"},
        )
        assert result.returncode == 0, result.stderr
        return json.loads(out.read_text()), result.stderr

    first, log = table()
    stored = sorted(cells.glob("*.json"))
    assert [p.name.split("-")[:2] for p in stored] == [["nominal", "kidney"], ["nominal", "oval"]]
    assert "kept from an earlier run" not in log
    # What is in the folder is what the next table uses (a mark no simulation would give).
    for path in stored:
        cell = json.loads(path.read_text())
        cell["per_episode"][0]["mean_abs_xte_m"] = 7.0
        path.write_text(json.dumps(cell))
    again, log = table()
    assert log.count("kept from an earlier run") == 2
    assert again["rows"]["shipped"]["cells"]["nominal"]["mean_abs_xte_m"] == 7.0
    assert first["rows"]["shipped"]["cells"]["nominal"]["mean_abs_xte_m"] < 0.05
    # Another seed is another key: evaluated, not reused.
    _, log = table("--seed", "101")
    assert "kept from an earlier run" not in log and len(list(cells.glob("*.json"))) == 4


def test_the_expert_drives_at_its_speed_and_up_to_a_raised_limit_where_the_road_allows():
    """eval's `expert`: 0.5 m/s under the node's default limit; scheduled by the road up to 1.0 m/s
    where a condition raises the limit (faster on the hairpin's straights, slower in its turns),
    as collect --speed 0.5 --max-speed 1.0 drives; on the road in both."""
    from liquid_control.learning.configs import EvalConfig
    from liquid_control.learning.evaluate import evaluate

    os.environ.setdefault("MUJOCO_GL", "egl")
    slow = evaluate(EvalConfig("expert", "hairpin", "nominal", 2, 12.0, 5), show_progress=False)
    fast = evaluate(EvalConfig("expert", "hairpin", "fast_tight_turns", 2, 12.0, 5), show_progress=False)
    raised = evaluate(EvalConfig("expert", "hairpin", "nominal", 2, 12.0, 5, max_linear_speed=1.0), show_progress=False)
    assert slow["success_rate"] == fast["success_rate"] == raised["success_rate"] == 1.0
    assert slow["mean_speed_mps"] <= 0.5 + 0.02 and slow["max_linear_speed"] == 0.5
    assert 0.55 < fast["mean_speed_mps"] <= 1.0 + 0.02 and fast["max_linear_speed"] == 1.0
    # eval --max-linear-speed raises the limit of a condition that sets none: nominal at 1.0 m/s is
    # fast_tight_turns (the hairpin at 1.0 m/s) in all but name.
    assert raised["max_linear_speed"] == 1.0 and raised["per_episode"] == fast["per_episode"]
    with pytest.raises(ValueError, match="max_linear_speed must be in"):
        evaluate(EvalConfig("expert", "hairpin", "nominal", 1, 1.0, 5, max_linear_speed=-1.0), show_progress=False)
