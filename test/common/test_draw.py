"""The plots (liquid_control.draw.plot) and their call sites: matplotlib figures with axes, labels,
units, legends and scales, written as PNGs a person can read."""

import io
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (a matplotlib dependency)

from liquid_control.draw import plot  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402


def _legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None, "no legend"
    return [t.get_text() for t in legend.get_texts()]


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.fixture(scope="module")
def oval():
    return Track.load(track_path("oval"))


def test_road_edges_are_half_a_road_width_from_the_centreline(oval):
    left, right = plot.road_edges(oval.samples, oval.road_width)
    for edge in (left, right):  # the track's own cross-track error says: on the road's edge
        xte = [abs(oval.project(*p)["xte"]) for p in edge[::25]]
        assert np.allclose(xte, oval.road_width / 2, atol=0.005)
    # One edge on each side: the signed cross-track errors have opposite signs.
    assert np.sign(oval.project(*left[0])["xte"]) == -np.sign(oval.project(*right[0])["xte"])


def test_trajectory_has_road_start_legend_and_metre_axes_at_equal_aspect(oval, tmp_path):
    start = oval.pose_at(3.0, 0.1)
    path = np.array([oval.pose_at(3.0 + s, 0.1)[:2] for s in np.linspace(0, 6, 60)])
    out = tmp_path / "traj.png"
    fig = plot.write_trajectory_png(
        out, oval.samples, oval.road_width, {"episode 0": path, "episode 1": path[::-1]}, title="two drives"
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x [m]" and ax.get_ylabel() == "y [m]"
    assert ax.get_aspect() == 1.0
    assert ax.get_title() == "two drives"
    texts = _legend_texts(ax)
    assert texts[0] == "road edges (1 m wide)" and texts[1] == "centre line"
    assert texts[2:4] == ["episode 0", "episode 1"] and "start" in texts[4]
    labelled = {line.get_label(): line for line in ax.get_lines()}
    assert np.allclose(labelled["episode 0"].get_xydata(), path)
    # Two road edges, the centre line, and per path its line and its start marker.
    assert len(ax.get_lines()) == 3 + 2 * 2
    starts = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [tuple(s.get_xydata()[0]) for s in starts][0] == pytest.approx(start[:2])
    assert len(ax.patches) == 1  # the road surface
    xmin, xmax = ax.get_xlim()
    assert xmin < oval.samples[:, 0].min() - oval.road_width / 2 and xmax > oval.samples[:, 0].max()
    width, height = _png_size(out)
    assert width == 800 and 350 <= height <= 900


def test_loss_curve_has_log_y_train_and_validation_lines_and_a_title(tmp_path):
    out = tmp_path / "loss.png"
    it = [10, 20, 30, 40]
    fig = plot.write_loss_png(out, it, [1.0, 0.3, 0.1, 0.05], [0.8, 0.2, 0.15, 0.16], title="cfc loss", ylabel="MSE")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "MSE" and ax.get_title() == "cfc loss"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines.get("validation").get_ydata()) == [0.8, 0.2, 0.15, 0.16]
    assert list(lines.get("train").get_xdata()) == it
    texts = _legend_texts(ax)
    assert texts[:2] == ["train", "validation"] and "best validation 0.15 (iteration 30)" in texts[2]
    assert _png_size(out) == (800, 500)


def test_commands_have_two_panels_with_units_and_pauses_cut_out(tmp_path):
    t = np.concatenate([np.arange(0, 5, 0.01), 1000 + np.arange(0, 5, 0.01)])
    replayed = {"linear.x": np.full(len(t), 0.5), "angular.z": np.sin(t)}
    recorded = {"linear.x": np.full(len(t), 0.45), "angular.z": np.cos(t)}
    out = tmp_path / "cmd.png"
    fig = plot.write_commands_png(out, t, replayed, recorded, title="replay")
    top, bottom = fig.axes
    assert top.get_ylabel() == "linear.x [m/s]" and bottom.get_ylabel() == "angular.z [rad/s]"
    assert bottom.get_xlabel().startswith("time [s]") and "cut out" in bottom.get_xlabel()
    assert fig.get_suptitle() == "replay"
    for ax, name in ((top, "linear.x"), (bottom, "angular.z")):
        assert _legend_texts(ax) == [f"recorded {name}", f"replayed {name}"]
        data = [line for line in ax.get_lines() if line.get_label().endswith(name)]
        assert len(data) == 2
        y = data[1].get_ydata()
        assert np.isnan(y).sum() == 1  # the line is broken at the pause, not drawn across it
        assert np.nanmax(data[1].get_xdata()) < 20  # the 995 s pause is cut from the time axis
    assert any("995 s cut" in t.get_text() for t in top.texts)
    assert _png_size(out) == (900, 600)

    alone = plot.commands_figure(t[:500], {k: v[:500] for k, v in replayed.items()})
    assert [len(ax.get_lines()) for ax in alone.axes] == [1, 1]
    assert "cut" not in alone.axes[1].get_xlabel()


def test_plots_use_no_pyplot():
    code = (
        "import sys, numpy as np\n"
        "from liquid_control.draw import plot\n"
        "plot.loss_figure([1, 2], [1.0, 0.5], [1.0, 0.6]); plot.commands_figure([0, 1], "
        "{'linear.x': [0, 1], 'angular.z': [0, 1]})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "import matplotlib; assert matplotlib.get_backend().lower() != 'tkagg'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_replay_plot_call_site_writes_both_panels(tmp_path):
    from liquid_control.bags.replay import _write_plot

    rows = [(10 + k // 100, (k % 100) * 10_000_000, 0, "step", 0.4, 0.1 * k) for k in range(300)]
    matched = [(0.0, "", 0.5, 0.1 * k + 0.05) for k in range(300)]
    out = tmp_path / "replay.png"
    assert _write_plot(out, rows, {"match": matched, "summary": {"topic": "/cmd_vel"}})
    assert _png_size(out) == (900, 600)
    assert not _write_plot(tmp_path / "none.png", rows[:1], None)


def test_drive_report_call_site_draws_the_trajectory(oval, tmp_path):
    from liquid_control.demos.ros_drive import _Progress, _report

    progress = _Progress(oval)
    progress.path = [oval.pose_at(s)[:2] for s in np.linspace(0, 4, 40)]
    progress.xte, progress.distance = [0.01] * 40, 4.0
    out = tmp_path / "drive.png"
    result = _report(progress, 8.0, out, None, None, out=lambda *_: None)
    assert result["plot"] == str(out)
    width, _ = _png_size(out)
    assert width == 800


def test_eval_call_site_draws_the_episode_on_the_road(tmp_path):
    pytest.importorskip("mujoco")
    from liquid_control.learning.configs import EvalConfig
    from liquid_control.learning.evaluate import evaluate
    from liquid_control.paths import DEFAULT_MODEL

    out = tmp_path / "eval.png"
    summary = evaluate(EvalConfig(DEFAULT_MODEL, episodes=1, seconds=1.0, plot=str(out)))
    assert summary["plot"] == str(out)
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[1] == 800
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn, not blank


def test_the_road_texture_writer_is_kept_byte_exact():
    from liquid_control.draw.png import png_bytes

    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (255, 0, 0)
    data = png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as decoded:
        assert np.array_equal(np.asarray(decoded.convert("RGB")), image)
