"""The package's plots, drawn with matplotlib headless (Agg, no pyplot): the trajectory over the road
(`eval --plot`, `drive --plot`), the training loss curve, replayed against recorded commands, and
the liquid neurons' activity per layer (`replay --activity`).

Each `*_figure` function returns a matplotlib Figure (tests look at its axes); each `write_*` writes
it as a PNG and returns it too. matplotlib is imported when a plot is made, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DPI = 100
ROAD = "#d9d9d9"  # road surface
EDGE = "#404040"  # road edges
CENTRE = "#8c8c8c"  # dashed centre line


def new_figure(width: float = 8.0, height: float = 6.0):
    """A Figure on an Agg canvas (no pyplot, no global state), `width` x `height` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """The figure as a PNG with a 256-colour palette (a third of the bytes, the same to the eye)."""
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    path = Path(path)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)
    return path


# --- trajectories over the road ---------------------------------------------------------------
def road_edges(centreline: np.ndarray, road_width: float) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) edges of a closed road: the centreline samples offset by half the road width
    along the normal (left of the direction the samples run)."""
    c = np.asarray(centreline, dtype=float)
    tangent = np.roll(c, -1, axis=0) - np.roll(c, 1, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    half = road_width / 2
    return c + half * normal, c - half * normal


def trajectory_figure(centreline: np.ndarray, road_width: float, paths: Mapping[str, np.ndarray], title: str = ""):
    """Top-down view in metres, equal aspect: the road (surface, edges, dashed centre line) of a
    closed track given by its centreline samples (n, 2), and each path (m, 2) of `paths` with its
    start marked and its direction shown; one legend entry per path."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    centre = np.asarray(centreline, dtype=float)
    left, right = road_edges(centre, road_width)
    lo = np.minimum(left.min(0), right.min(0)) - 0.5 * road_width
    hi = np.maximum(left.max(0), right.max(0)) + 0.5 * road_width
    span = hi - lo
    width = 8.0
    fig = new_figure(width, float(np.clip(width * span[1] / span[0] + 0.8, 3.5, 9.0)))
    ax = fig.add_subplot()

    ring = lambda p: np.vstack([p, p[:1]])  # noqa: E731
    outer, inner = ring(left), ring(right)[::-1]  # opposite windings: the inside is a hole
    codes = np.full(len(outer) + len(inner), MPath.LINETO)
    codes[0] = codes[len(outer)] = MPath.MOVETO
    surface = MPath(np.vstack([outer, inner]), codes)
    ax.add_patch(PathPatch(surface, facecolor=ROAD, edgecolor="none", zorder=0.8))  # over the grid
    ax.plot(*ring(left).T, color=EDGE, lw=1.5, zorder=1, label=f"road edges ({road_width:g} m wide)")
    ax.plot(*ring(right).T, color=EDGE, lw=1.5, zorder=1)
    ax.plot(*ring(centre).T, color=CENTRE, lw=1.0, ls=(0, (6, 4)), zorder=1, label="centre line")

    for k, (label, path) in enumerate(paths.items()):
        xy = np.asarray(path, dtype=float).reshape(-1, 2)
        if len(xy) == 0:
            continue
        colour = f"C{k % 10}"
        ax.plot(xy[:, 0], xy[:, 1], color=colour, lw=2.0, zorder=3, label=label)
        ax.plot(*xy[0], "o", ms=8, mfc=colour, mec="black", mew=1.2, zorder=4)
        ahead = _point_ahead(xy, 0.5 * road_width)
        if ahead is not None:  # an arrow from the start: the driving direction
            ax.annotate(
                "",
                xy=xy[ahead],
                xytext=xy[0],
                zorder=4,
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "black",
                    "lw": 1.2,
                    "shrinkA": 0,
                    "shrinkB": 0,
                    "mutation_scale": 14,
                },
            )
    handles, labels = ax.get_legend_handles_labels()
    if paths:
        handles.append(Line2D([], [], ls="none", marker="o", ms=8, mfc="white", mec="black", mew=1.2))
        labels.append("start (arrow: direction)")
    ax.legend(handles, labels, loc="best", fontsize=9, framealpha=0.9)

    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.grid(True, color="#eeeeee", lw=0.8, zorder=-1)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return fig


def _point_ahead(xy: np.ndarray, distance: float) -> int | None:
    """Index of the first point at least `distance` from the start (None if the path is shorter)."""
    far = np.nonzero(np.hypot(*(xy - xy[0]).T) >= distance)[0]
    return int(far[0]) if len(far) else None


def write_trajectory_png(
    path: str | Path, centreline, road_width: float, paths: Mapping[str, np.ndarray], title: str = ""
):
    fig = trajectory_figure(centreline, road_width, paths, title)
    save_png(fig, path)
    return fig


# --- training ---------------------------------------------------------------------------------
def loss_figure(
    iterations: Sequence[float],
    train: Sequence[float],
    validation: Sequence[float],
    title: str = "",
    ylabel: str = "loss",
):
    """Training and validation loss over iterations, log-scale y, the best validation point marked."""
    fig = new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    it = np.asarray(iterations, dtype=float)
    tr, val = np.asarray(train, dtype=float), np.asarray(validation, dtype=float)
    ax.plot(it, tr, "-o", ms=3, lw=1.5, color="C0", label="train")
    ax.plot(it, val, "-s", ms=3, lw=1.5, color="C1", label="validation")
    if np.isfinite(val).any():
        best = int(np.nanargmin(val))
        ax.plot(
            it[best],
            val[best],
            "*",
            ms=14,
            color="C3",
            mec="black",
            zorder=5,
            label=f"best validation {val[best]:.4g} (iteration {it[best]:g})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", color="#dddddd")
    ax.grid(True, which="minor", color="#f2f2f2")
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return fig


def write_loss_png(path: str | Path, iterations, train, validation, title: str = "", ylabel: str = "loss"):
    fig = loss_figure(iterations, train, validation, title, ylabel)
    save_png(fig, path)
    return fig


# --- commands over time ----------------------------------------------------------------------
COMMAND_PANELS = (("linear.x", "m/s"), ("angular.z", "rad/s"))


def commands_figure(
    t: Sequence[float],
    replayed: Mapping[str, Sequence[float]],
    recorded: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    max_gap: float = 1.0,
):
    """One panel per command field (linear.x in m/s, angular.z in rad/s) over time in s: the
    replayed commands, and the recorded ones when given (keys: the field names). Pauses in the
    stamps longer than `max_gap` s (between a bag's episodes) are cut out of the time axis and
    marked by a dotted line, so that each episode stays readable."""
    fig = new_figure(9.0, 6.0)
    axes = fig.subplots(len(COMMAND_PANELS), 1, sharex=True)
    t, breaks, gaps = _cut_gaps(np.asarray(t, dtype=float), max_gap)
    for ax, (name, unit) in zip(axes, COMMAND_PANELS, strict=True):
        if recorded is not None:
            ax.plot(t, _broken(recorded[name], breaks), color="C1", lw=2.4, alpha=0.75, label=f"recorded {name}")
        ax.plot(t, _broken(replayed[name], breaks), color="C0", lw=1.2, label=f"replayed {name}")
        for x, _ in gaps:
            ax.axvline(x, color="#777777", ls=":", lw=1.2)
        ax.set_ylabel(f"{name} [{unit}]")
        ax.grid(True, color="#e5e5e5")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    for x, length in gaps:  # above the top panel, clear of the data
        axes[0].annotate(
            f"{length:.0f} s cut",
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="#555555",
        )
    xlabel = "time [s] from the first command"
    if gaps:
        xlabel += f" (pauses over {max_gap:g} s cut out: dotted lines)"
    axes[-1].set_xlabel(xlabel)
    if title:
        fig.suptitle(title)
    return fig


def _cut_gaps(t: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Times with each pause over max_gap shortened to a small spacer and a NaN after its last
    sample (to break the lines); the indices where the NaNs go; (position, pause length) each."""
    if len(t) < 2:
        return t, np.array([], dtype=int), []
    dt = np.diff(t)
    breaks = np.nonzero(dt > max_gap)[0] + 1
    if not len(breaks):
        return t, breaks, []
    spacer = 0.02 * float(np.sum(dt[dt <= max_gap]))
    shift = np.zeros_like(t)
    gaps = []
    for i in breaks:
        shift[i:] += dt[i - 1] - spacer
    shown = t - shift
    gaps = [(float(shown[i] - spacer / 2), float(dt[i - 1])) for i in breaks]
    return np.insert(shown, breaks, np.nan), breaks, gaps


def _broken(values: Sequence[float], breaks: np.ndarray) -> np.ndarray:
    return np.insert(np.asarray(values, dtype=float), breaks, np.nan)


def write_commands_png(path: str | Path, t, replayed, recorded=None, title: str = ""):
    fig = commands_figure(t, replayed, recorded, title)
    save_png(fig, path)
    return fig


# --- neuron activity -------------------------------------------------------------------------
# The wiring's layers from the camera to the wheels (nets/wirings.py); "hidden" for a core without one.
LAYERS = ("sensory", "inter", "command", "motor", "hidden")


def _layer_colours(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def activity_figure(
    t: Sequence[float],
    layers: Mapping[str, tuple[Sequence[str], np.ndarray, np.ndarray | None]],
    title: str = "",
    max_gap: float = 1.0,
):
    """The liquid network over time (s), one row per layer in LAYERS order: left each neuron's
    state, right its effective time constant in s (log scale). A row whose `tau` is None (the
    sensory inputs) is one wide panel of the inputs. `layers`: name -> (neuron labels, state
    (steps, k), tau (steps, k) or None). A legend per row names its neurons; pauses over `max_gap`
    s are cut out as in commands_figure."""
    rows = [name for name in LAYERS if name in layers] + [name for name in layers if name not in LAYERS]
    fig = new_figure(11.0, 1.0 + 2.3 * len(rows))
    grid = fig.add_gridspec(len(rows), 2)
    shown, breaks, gaps = _cut_gaps(np.asarray(t, dtype=float), max_gap)
    first = None
    bottom = []
    for r, name in enumerate(rows):
        labels, state, tau = layers[name]
        colours = _layer_colours(len(labels))
        state = np.asarray(state, dtype=float).reshape(len(t), len(labels))
        if tau is None:
            panels = [fig.add_subplot(grid[r, :], sharex=first)]
        else:
            panels = [fig.add_subplot(grid[r, 0], sharex=first), None]
            panels[1] = fig.add_subplot(grid[r, 1], sharex=panels[0])
        first = first or panels[0]
        state_ax = panels[0]
        for k, label in enumerate(labels):
            state_ax.plot(shown, _broken(state[:, k], breaks), color=colours[k], lw=1.0, label=label)
        state_ax.set_ylabel("input (normalised)" if tau is None else "state (dimensionless)")
        state_ax.set_title(
            f"{name}: {len(labels)} {'inputs' if tau is None else 'neurons'}"
            + ("" if tau is None else ": state (left), time constant (right)"),
            loc="left",
            fontsize=10,
        )
        if tau is not None:
            tau_ax = panels[1]
            tau = np.asarray(tau, dtype=float).reshape(len(t), len(labels))
            for k in range(len(labels)):
                tau_ax.plot(shown, _broken(tau[:, k], breaks), color=colours[k], lw=1.0)
            if np.all(np.isfinite(tau) & (tau > 0)):
                tau_ax.set_yscale("log")
            tau_ax.set_ylabel("time constant [s]")
        for ax in panels:
            ax.grid(True, which="major", color="#e5e5e5")
            for x, _ in gaps:
                ax.axvline(x, color="#777777", ls=":", lw=1.2)
        ncol = 1 if len(labels) <= 8 else 2
        panels[-1].legend(
            *state_ax.get_legend_handles_labels(),
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=7,
            ncol=ncol,
            title=name,
            title_fontsize=8,
            borderaxespad=0.0,
        )
        bottom = panels
    xlabel = "time [s] from the first step"
    if gaps:
        xlabel += f" (pauses over {max_gap:g} s cut out: dotted lines)"
    for ax in bottom:
        ax.set_xlabel(xlabel)
    if title:
        fig.suptitle(title)
    return fig


def write_activity_png(path: str | Path, t, layers, title: str = ""):
    fig = activity_figure(t, layers, title)
    save_png(fig, path)
    return fig
