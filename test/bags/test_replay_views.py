"""`liquid-control replay --video / --activity`: a video with one frame per camera frame (read back
with imageio), and the neurons' activity, a CSV row per step and a column per neuron of the
model's wiring, with its plot. On a bag recorded in the simulator, through the shipped policy."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip("torch")
pytest.importorskip("mujoco")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402  (a matplotlib dependency)

from liquid_control.bags.io import read_events, summarize  # noqa: E402
from liquid_control.draw import plot  # noqa: E402
from liquid_control.learning.collect import collect  # noqa: E402
from liquid_control.model.modelfile import load_policy  # noqa: E402
from liquid_control.paths import DEFAULT_MODEL  # noqa: E402
from liquid_control.runtime.controller import LiquidController  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402

CLI = [sys.executable, "-m", "liquid_control.cli"]
CAMERA = "/camera/image_raw"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("views") / "drive"
    collect([Track.load(track_path("kidney"))], path, episodes=1, seconds=2.0, seed=11)
    return path


@pytest.fixture(scope="module")
def replayed(bag, tmp_path_factory):
    """One `liquid-control replay` with both views, as a user runs it; its JSON summary and paths."""
    pytest.importorskip("imageio_ffmpeg")
    out = tmp_path_factory.mktemp("replayed")
    paths = {"video": out / "drive.mp4", "activity": out / "activity.csv"}
    result = subprocess.run(
        [
            *CLI,
            "replay",
            str(bag),
            "--output",
            str(out / "commands"),
            "--video",
            str(paths["video"]),
            "--activity",
            str(paths["activity"]),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), paths


def test_the_video_has_one_frame_per_camera_frame_of_the_bag(bag, replayed):
    import imageio.v2 as imageio

    summary, paths = replayed
    frames_in_bag = summarize(bag).topics[CAMERA].count  # what the bag holds, not what replay counted
    with imageio.get_reader(paths["video"]) as reader:
        meta = reader.get_meta_data()
        frames = [frame for frame in reader]
    assert len(frames) == frames_in_bag == summary["video_frames"] == summary["camera_frames"]
    assert frames[0].shape == (432, 768, 3) and meta["codec"] == "h264"
    assert meta["fps"] == pytest.approx(30.0, rel=0.05)  # the camera's rate: the video runs in real time
    # Frames that show something and change over the drive (the camera moves, the commands scroll).
    assert all(frame.std() > 10 for frame in frames[::10])
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0
    assert summary["views_s"] > 0 and "video" in summary


def _activity(paths):
    with open(paths["activity"], newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_the_activity_has_a_row_per_step_and_a_column_per_neuron_of_the_wiring(bag, replayed):
    summary, paths = replayed
    header, rows = _activity(paths)
    policy, config = load_policy(DEFAULT_MODEL)
    wiring = policy.core.wiring
    assert len(rows) == summary["steps"] == summary["activity_steps"] > 0
    states = [c for c in header if c.startswith("state.")]
    taus = [c for c in header if c.startswith("tau_s.")]
    inputs = [c for c in header if c.startswith("input.")]
    assert header[:2] == ["stamp", "event"] and len(header) == 2 + len(states) + len(taus) + len(inputs)
    assert len(states) == len(taus) == wiring.units and len(inputs) == wiring.input_dim
    # Each neuron's column names its layer, as the wiring has it.
    for layer_id, name in enumerate(wiring.layer_names()):
        ids = wiring.get_neurons_of_layer(layer_id)
        assert sorted(int(c.rsplit(".", 1)[1]) for c in states if c.split(".")[1] == name) == sorted(ids)
    # The last row is the state a controller fed the bag's events directly ends in.
    offline = LiquidController(policy, config)
    for event in read_events(bag, command=None):
        offline.on_sensor(event.kind, event.stamp, event.data)
    last = np.array(rows[-1][2:], dtype=float)
    np.testing.assert_allclose(last[: wiring.units], offline.hidden, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(last[wiring.units : 2 * wiring.units], offline.time_constants, rtol=1e-7)
    assert np.all(np.array([r[2 + wiring.units : 2 + 2 * wiring.units] for r in rows], dtype=float) > 0)


def test_the_activity_plot_is_written_beside_the_csv(replayed):
    summary, paths = replayed
    png = paths["activity"].with_suffix(".png")
    assert summary["activity_plot"] == str(png)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 600
        assert np.asarray(image.convert("L")).std() > 10  # not a blank page


def test_the_activity_figure_has_a_row_per_layer_with_units_and_legends():
    t = np.linspace(0.0, 2.0, 50)
    layers = {
        "motor": (["neuron 0", "neuron 1"], np.zeros((50, 2)), np.ones((50, 2))),
        "inter": (["neuron 2"], np.sin(t)[:, None], np.full((50, 1), 0.5)),
        "sensory": (["camera_0", "angular_velocity.z"], np.zeros((50, 2)), None),
    }
    fig = plot.activity_figure(t, layers, title="activity")
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    # Rows in the wiring's order from the inputs to the wheels: sensory (one wide panel), inter, motor.
    assert [s.split(":")[0] for s in titles if s] == ["sensory", "inter", "motor"]
    assert len(fig.axes) == 1 + 2 + 2
    state_axes = [ax for ax in fig.axes if ax.get_ylabel().startswith("state")]
    tau_axes = [ax for ax in fig.axes if ax.get_ylabel() == "time constant [s]"]
    assert len(state_axes) == len(tau_axes) == 2 and all(ax.get_yscale() == "log" for ax in tau_axes)
    assert fig.axes[0].get_ylabel() == "input (normalised)"
    assert all(ax.get_xlabel().startswith("time [s]") for ax in fig.axes[-2:])
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [[t.get_text() for t in legend.get_texts()] for legend in legends] == [
        ["camera_0", "angular_velocity.z"],
        ["neuron 2"],
        ["neuron 0", "neuron 1"],
    ]
    np.testing.assert_allclose(state_axes[0].get_lines()[0].get_ydata(), np.sin(t))


def test_without_imageio_the_video_is_refused_saying_what_to_install(bag, tmp_path):
    blocker = tmp_path / "no_imageio"
    for name in ("imageio", "imageio_ffmpeg"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name} is not installed here (test blocker)', name='{name}')\n"
        )
    out = tmp_path / "commands"
    result = subprocess.run(
        [*CLI, "replay", str(bag), "--output", str(out), "--video", str(tmp_path / "v.mp4")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))},
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'liquid_control[video]'" in result.stderr and "imageio" in result.stderr
    assert not out.exists() and not (tmp_path / "v.mp4").exists()  # refused before anything was written
