"""A wiring drawn with matplotlib: neurons as dots coloured by type, synapses as arrows coloured by
polarity. `draw_wiring` is what `Wiring.draw_graph` (ncps's API) runs; `wiring_figure` is the
picture of `liquid-control info MODEL --graph PNG`: sensory, inter, command and motor neurons in
columns, with the counts in the title and the legend.

The wiring is duck-typed (anything with ncps's `get_graph()`), so this module imports no network
code; networkx and matplotlib are imported when something is drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .plot import new_figure, save_png

LAYERS = ("sensory", "inter", "command", "motor")
NEURON_COLOURS = {"sensory": "tab:olive", "inter": "tab:blue", "command": "tab:purple", "motor": "tab:orange"}
SYNAPSE_COLOURS = {"excitatory": "tab:green", "inhibitory": "tab:red"}
LAYOUTS = ("layers", "shell", "spring", "circular", "kamada", "random", "spectral", "spiral")
NODE_SIZE = 260  # points^2


def layered_positions(graph) -> dict[str, tuple[float, float]]:
    """Node positions with one column per neuron type present (LAYERS order, left to right); each
    column's neurons spread over the same height, in id order from the top."""
    columns: dict[str, list[str]] = {}
    for node, data in graph.nodes(data=True):
        columns.setdefault(data.get("neuron_type", "inter"), []).append(node)
    order = [t for t in LAYERS if t in columns] + sorted(set(columns) - set(LAYERS))
    tallest = max(len(v) for v in columns.values())
    half = (tallest - 1) / 2
    pos = {}
    for x, kind in enumerate(order):
        nodes = sorted(columns[kind], key=_node_id)
        ys = np.linspace(half, -half, len(nodes)) if len(nodes) > 1 else [0.0]
        pos.update({node: (float(x), float(y)) for node, y in zip(nodes, ys, strict=True)})
    return pos


def _node_id(node: str) -> int:
    return int(str(node).rsplit("_", 1)[-1])


def _positions(graph, layout: str):
    if layout == "layers":
        return layered_positions(graph)
    import networkx as nx

    layouts = {
        "shell": nx.shell_layout,
        "spring": nx.spring_layout,
        "circular": nx.circular_layout,
        "kamada": nx.kamada_kawai_layout,
        "random": nx.random_layout,
        "spectral": nx.spectral_layout,
        "spiral": nx.spiral_layout,
    }
    if layout not in layouts:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    return {k: (float(v[0]), float(v[1])) for k, v in layouts[layout](graph).items()}


def _self_loop_marker():
    """A circle above the origin, touching it: matplotlib scales a marker path by its largest
    coordinate and keeps the offset, so the loop sits on top of the neuron's dot."""
    from matplotlib.path import Path as MPath

    circle = MPath.unit_circle()
    return MPath(circle.vertices + [0.0, 1.9], circle.codes)


def _axes(ax):
    """The given axes; else pyplot's current ones if the caller uses pyplot (ncps's draw_graph
    draws there); else a new Figure's."""
    if ax is not None:
        return ax
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        return pyplot.gca()
    return new_figure().add_subplot()


def draw_wiring(
    wiring,
    ax=None,
    layout: str = "shell",
    neuron_colors: dict[str, str] | None = None,
    synapse_colors: str | dict[str, str] | None = None,
    draw_labels: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> list:
    """Draw `wiring` on `ax`; returns one legend patch per neuron type drawn ("Inter neurons", ...),
    as ncps's draw_graph. `input_names` / `output_names` label the sensory / motor neurons."""
    from matplotlib.patches import FancyArrowPatch, Patch

    if isinstance(synapse_colors, str):
        synapse_colors = {"excitatory": synapse_colors, "inhibitory": synapse_colors}
    synapse_colors = {**SYNAPSE_COLOURS, **(synapse_colors or {})}
    neuron_colors = {**NEURON_COLOURS, **(neuron_colors or {})}
    ax = _axes(ax)
    graph = wiring.get_graph()
    pos = _positions(graph, layout)
    kinds = {node: data["neuron_type"] for node, data in graph.nodes(data=True)}
    radius_pt = np.sqrt(NODE_SIZE) / 2

    for src, dest, data in graph.edges(data=True):
        colour = synapse_colors[data["polarity"]]
        alpha = 0.45 if kinds[src] == "sensory" else 0.8
        if src == dest:  # a self-synapse: a small loop above the neuron (a marker: sized in points)
            ax.plot(
                *pos[src],
                marker=_self_loop_marker(),
                ms=4.6 * radius_pt,
                mfc="none",
                mec=colour,
                mew=1.1,
                alpha=alpha,
                zorder=1,
                ls="none",
            )
            continue
        same_column = layout == "layers" and pos[src][0] == pos[dest][0]
        ax.add_patch(
            FancyArrowPatch(
                pos[src],
                pos[dest],
                arrowstyle="-|>",
                mutation_scale=9,
                lw=0.9,
                color=colour,
                alpha=alpha,
                shrinkA=radius_pt,
                shrinkB=radius_pt + 1,
                zorder=1,
                connectionstyle=f"arc3,rad={0.45 if same_column else 0.0}",
            )
        )

    handles = []
    present = [t for t in LAYERS if t in kinds.values()] + sorted(set(kinds.values()) - set(LAYERS))
    for kind in present:
        nodes = [n for n in graph.nodes if kinds[n] == kind]
        colour = neuron_colors.get(kind, "tab:blue")
        pts = np.array([pos[n] for n in nodes])
        ax.scatter(pts[:, 0], pts[:, 1], s=NODE_SIZE, c=colour, edgecolors="white", linewidths=1.0, zorder=3)
        handles.append(Patch(color=colour, label=f"{kind[0].upper()}{kind[1:]} neurons"))
        if draw_labels:
            for n in nodes:
                ax.text(*pos[n], str(_node_id(n)), ha="center", va="center", fontsize=7, color="white", zorder=4)
    names = {"sensory": (input_names, "right", -1), "motor": (output_names, "left", 1)}
    for kind, (labels, align, side) in names.items():
        if labels is None:
            continue
        for n in (n for n in graph.nodes if kinds[n] == kind):
            i = _node_id(n)
            if i < len(labels):
                ax.annotate(
                    labels[i],
                    pos[n],
                    xytext=(side * (radius_pt + 4), 0),
                    textcoords="offset points",
                    ha=align,
                    va="center",
                    fontsize=8,
                    zorder=4,
                )
    ax.margins(0.08)  # room for the self-loops, which are markers and not in the data limits
    ax.set_axis_off()
    return handles


def wiring_figure(
    wiring,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    title: str | None = None,
):
    """The wiring in columns (sensory, inter, command, motor), synapses by polarity, the neuron and
    synapse counts in the title, column headings and legend."""
    from matplotlib.lines import Line2D

    graph = wiring.get_graph()
    counts: dict[str, int] = {}
    for _, data in graph.nodes(data=True):
        counts[data["neuron_type"]] = counts.get(data["neuron_type"], 0) + 1
    polarity = {"excitatory": 0, "inhibitory": 0}
    for _, _, data in graph.edges(data=True):
        polarity[data["polarity"]] += 1
    tallest = max(counts.values())
    fig = new_figure(10.0, float(np.clip(0.34 * tallest + 2.4, 4.0, 14.0)))
    ax = fig.add_subplot()
    handles = draw_wiring(
        wiring, ax=ax, layout="layers", draw_labels=True, input_names=input_names, output_names=output_names
    )
    pos = layered_positions(graph)
    columns = sorted({(x, data["neuron_type"]) for node, data in graph.nodes(data=True) for x in [pos[node][0]]})
    top = (tallest - 1) / 2
    for x, kind in columns:
        ax.text(x, top + 0.9, f"{kind}\n({counts[kind]})", ha="center", va="bottom", fontsize=10, fontweight="bold")
    last = columns[-1][0]
    ax.set_xlim(-0.75 if input_names else -0.4, last + (0.75 if output_names else 0.4))
    ax.set_ylim(-top - 0.8, top + 2.0)

    for h in handles:
        kind = h.get_label().split()[0].lower()
        h.set_label(f"{h.get_label()} ({counts.get(kind, 0)})")
    handles += [
        Line2D([], [], color=SYNAPSE_COLOURS[k], lw=2, label=f"{k} synapses ({polarity[k]})")
        for k in ("excitatory", "inhibitory")
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9, frameon=False)
    internal = int(np.count_nonzero(wiring.adjacency_matrix))
    sensory = int(np.count_nonzero(wiring.sensory_adjacency_matrix))
    neurons = " -> ".join(f"{counts[k]} {k}" for _, k in columns)
    heading = title or f"{type(wiring).__name__} wiring"
    ax.set_title(
        f"{heading}: {neurons} neurons\n{sensory + internal} synapses: {sensory} from the sensory "
        f"inputs, {internal} between neurons",
        fontsize=11,
    )
    return fig


def write_wiring_png(path: str | Path, wiring, input_names=None, output_names=None, title: str | None = None):
    fig = wiring_figure(wiring, input_names, output_names, title)
    save_png(fig, path)
    return fig
