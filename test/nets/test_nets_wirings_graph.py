"""ncps's wiring API on our wirings: get_graph, draw_graph, the Random wiring and from_config of
ncps's get_config(), checked against ncps 1.0.1 itself; and the wiring picture of `info --graph`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from liquid_control.model.modelfile import load_model
from liquid_control.nets import wirings
from liquid_control.paths import DEFAULT_MODEL, resolve_model_path

ncps_wirings = pytest.importorskip("ncps.wirings")
pytest.importorskip("networkx")
pytest.importorskip("matplotlib")

SEEDS = (0, 1, 7, 22222)


@pytest.fixture(scope="module")
def shipped():
    model, config = load_model(resolve_model_path(DEFAULT_MODEL))
    return model.core.wiring, config


def _same(a, b):
    assert np.array_equal(a.adjacency_matrix, b.adjacency_matrix)
    assert np.array_equal(a.sensory_adjacency_matrix, b.sensory_adjacency_matrix)
    assert (a.input_dim, a.output_dim, a.units) == (b.input_dim, b.output_dim, b.units)


# --- get_graph ---------------------------------------------------------------------------------
def test_graph_of_the_shipped_model_has_its_neurons_and_synapses(shipped):
    wiring, config = shipped
    graph = wiring.get_graph()
    types = [data["neuron_type"] for _, data in graph.nodes(data=True)]
    assert graph.number_of_nodes() == wiring.units + wiring.input_dim
    assert types.count("sensory") == wiring.input_dim == len(config.sensors.features)
    for layer, name in enumerate(wiring.layer_names()):
        assert types.count(name) == len(wiring.get_neurons_of_layer(layer)), name
    assert graph.number_of_edges() == wiring.synapse_count + wiring.sensory_synapse_count
    sensory_edges = [e for e in graph.edges if e[0].startswith("sensory_")]
    assert len(sensory_edges) == wiring.sensory_synapse_count
    polarities = [d["polarity"] for *_, d in graph.edges(data=True)]
    negative = int((wiring.adjacency_matrix < 0).sum() + (wiring.sensory_adjacency_matrix < 0).sum())
    assert polarities.count("inhibitory") == negative
    assert polarities.count("excitatory") == len(polarities) - negative


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.AutoNCP(19, 2, seed=3),
        lambda m: m.NCP(8, 6, 3, 4, 3, 5, 4, seed=5),
        lambda m: m.FullyConnected(6, 2),
        lambda m: m.Random(9, 3, 0.5, 4),
    ],
    ids=["autoncp", "ncp", "fc", "random"],
)
def test_graph_is_ncps_graph(make):
    ref, ours = make(ncps_wirings), make(wirings)
    ref.build(5)
    ours.build(5)
    a, b = ref.get_graph(), ours.get_graph()
    assert list(a.nodes(data=True)) == list(b.nodes(data=True))
    assert sorted(a.edges(data=True)) == sorted(b.edges(data=True))


def test_graph_without_sensory_neurons_and_before_build():
    wiring = wirings.AutoNCP(10, 2, seed=1)
    with pytest.raises(ValueError, match="not built"):
        wiring.get_graph()
    wiring.build(3)
    graph = wiring.get_graph(include_sensory_neurons=False)
    assert graph.number_of_nodes() == 10 and graph.number_of_edges() == wiring.synapse_count


# --- draw_graph and the info picture -----------------------------------------------------------
@pytest.mark.parametrize("layout", ["shell", "layers", "spring", "circular", "spiral", "random"])
def test_draw_graph_draws_every_neuron_and_synapse_on_the_given_axes(layout):
    from liquid_control.draw.plot import new_figure

    wiring = wirings.NCP(5, 4, 2, 3, 2, 3, 2, seed=2)
    wiring.build(3)
    ax = new_figure().add_subplot()
    handles = wiring.draw_graph(layout=layout, draw_labels=True, ax=ax)
    assert [h.get_label() for h in handles] == ["Sensory neurons", "Inter neurons", "Command neurons", "Motor neurons"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == wiring.units + wiring.input_dim
    loops = int(np.count_nonzero(np.diag(wiring.adjacency_matrix)))
    arrows = len(ax.patches)
    assert arrows + loops == wiring.synapse_count + wiring.sensory_synapse_count
    assert len([t for t in ax.texts]) == wiring.units + wiring.input_dim  # the labels


def test_draw_graph_takes_ncps_colour_arguments_and_rejects_unknown_layouts():
    from liquid_control.draw.plot import new_figure

    wiring = wirings.FullyConnected(4, 2)
    wiring.build(2)
    ax = new_figure().add_subplot()
    colours = {"inter": "black"}
    handles = wiring.draw_graph(neuron_colors=colours, synapse_colors="grey", ax=ax)
    assert colours == {"inter": "black"}  # not changed
    inter = next(h for h in handles if h.get_label() == "Inter neurons")
    assert inter.get_facecolor()[:3] == (0.0, 0.0, 0.0)
    assert {p.get_edgecolor()[:3] for p in ax.patches} == {(0.5019607843137255,) * 3}
    with pytest.raises(ValueError, match="unknown layout"):
        wiring.draw_graph(layout="tree", ax=new_figure().add_subplot())


def test_draw_graph_without_axes_uses_no_pyplot_unless_the_caller_does():
    code = (
        "import sys\n"
        "from liquid_control.nets.wirings import AutoNCP\n"
        "w = AutoNCP(8, 2, seed=1); w.build(3)\n"
        "handles = w.draw_graph()\n"
        "assert 'matplotlib.pyplot' not in sys.modules and len(handles) == 4\n"
        "import matplotlib.pyplot as plt\n"
        "plt.figure(); w.draw_graph(layout='layers')\n"
        "assert len(plt.gca().collections) == 4, plt.gca().collections\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr


def test_wiring_figure_titles_and_legends_the_counts(shipped):
    from liquid_control.draw.wiring import wiring_figure

    wiring, config = shipped
    fig = wiring_figure(wiring, config.sensors.features, config.outputs.fields)
    ax = fig.axes[0]
    title = ax.get_title()
    layers = wiring.summary()["neurons_per_layer"]
    assert (
        f"{wiring.input_dim} sensory -> {layers['inter']} inter -> {layers['command']} command -> "
        f"{layers['motor']} motor neurons"
    ) in title
    total = wiring.synapse_count + wiring.sensory_synapse_count
    assert (
        f"{total} synapses: {wiring.sensory_synapse_count} from the sensory inputs, "
        f"{wiring.synapse_count} between neurons" in title
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    negative = int((wiring.adjacency_matrix < 0).sum() + (wiring.sensory_adjacency_matrix < 0).sum())
    assert f"Inter neurons ({layers['inter']})" in legend and f"Motor neurons ({layers['motor']})" in legend
    assert f"inhibitory synapses ({negative})" in legend
    assert f"excitatory synapses ({total - negative})" in legend
    texts = [t.get_text() for t in ax.texts]
    assert "angular_velocity.z" in texts and "angular.z" in texts  # sensory and motor names
    assert f"command\n({layers['command']})" in texts  # column headings


@pytest.mark.slow
def test_info_graph_from_the_command_line_on_the_shipped_model(shipped, tmp_path):
    from PIL import Image

    wiring, _ = shipped
    out = tmp_path / "wiring.png"
    model = str(resolve_model_path(DEFAULT_MODEL))
    result = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "info", model, "--graph", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["graph"] == str(out) and report["wiring"]["synapses"] == wiring.synapse_count
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] == 1000 and image.size[1] >= 400
        assert len(image.convert("RGB").getcolors(1 << 16)) > 20  # drawn, not blank

    result = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "info", DEFAULT_MODEL, "--graph", str(tmp_path / "again.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr  # package:// works as the node takes it
    assert f"graph      {tmp_path / 'again.png'}" in result.stdout


def test_info_graph_of_a_model_without_a_wiring_is_a_clear_error(tmp_path):
    import torch

    from liquid_control import nets
    from liquid_control.model.modelfile import OutputSpec, SensorSpec, save_model

    torch.manual_seed(0)
    path = tmp_path / "dense.safetensors"
    save_model(
        path,
        nets.CfC(2, 6, proj_size=1),
        SensorSpec(("a", "b"), (0.0,) * 2, (1.0,) * 2),
        OutputSpec(("linear.x",), ("m/s",), ((0.0, 1.0),)),
        {},
    )
    result = subprocess.run(
        [sys.executable, "-m", "liquid_control.cli", "info", str(path), "--graph", str(tmp_path / "g.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "no wiring to draw" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "g.png").exists()


# --- Random --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("units,output_dim,sparsity", [(10, 3, 0.0), (10, None, 0.3), (12, 2, 0.75), (5, 1, 0.9)])
def test_random_is_ncps_random(seed, units, output_dim, sparsity):
    ref = ncps_wirings.Random(units, output_dim, sparsity, seed)
    ours = wirings.Random(units, output_dim, sparsity, seed)
    assert np.array_equal(ref.adjacency_matrix, ours.adjacency_matrix)
    ref.build(4)
    ours.build(4)
    _same(ref, ours)
    assert ours.synapse_count == int(np.round(units * units * (1 - sparsity)))
    assert ours.get_config() == ref.get_config()


def test_random_rejects_what_ncps_rejects():
    with pytest.raises(ValueError, match="sparsity_level"):
        wirings.Random(5, 2, 1.0)
    with pytest.raises(ValueError, match="sparsity_level"):
        wirings.Random(5, 2, -0.1)


# --- from_config of ncps's get_config ------------------------------------------------------------
def _ncps_cases(seed):
    return [
        ("AutoNCP", lambda m: m.AutoNCP(19, 2, sparsity_level=0.6, seed=seed)),
        ("FullyConnected", lambda m: m.FullyConnected(7, 3, erev_init_seed=seed, self_connections=seed % 2 == 0)),
        ("Random", lambda m: m.Random(9, 2, 0.4, random_seed=seed)),
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_ncps_configs_round_trip_to_the_same_matrices(seed):
    for name, make in _ncps_cases(seed):
        ref = make(ncps_wirings)
        ref.build(6)
        config = ref.get_config()
        for ours in (
            wirings.Wiring.from_config(config),
            getattr(wirings, name).from_config(config),
            wirings.wiring_from_config({"type": name, **config}),
        ):
            assert type(ours).__name__ == name
            ours.build(6)
            _same(ref, ours)
        # and back: ncps rebuilds ours
        again = getattr(ncps_wirings, name).from_config(ours.get_config())
        again.build(6)
        _same(again, ours)


@pytest.mark.parametrize("seed", SEEDS)
def test_ncps_ncp_config_round_trips_once_its_lost_seed_is_given(seed):
    args = (8, 6, 3, 4, 3, 5, 4)
    ref = ncps_wirings.NCP(*args, seed=seed)
    ref.build(5)
    config = ref.get_config()
    assert config["seed"] is None and config["inter_neurons"] == list(range(9, 17))  # ncps 1.0.1's format
    with pytest.raises(ValueError, match="no seed"):
        wirings.Wiring.from_config(config)
    with pytest.raises(ValueError, match="no seed"):
        wirings.NCP.from_config(config)
    ours = wirings.Wiring.from_config({**config, "seed": seed})
    assert type(ours) is wirings.NCP and ours.get_config() == {
        "inter_neurons": 8,
        "command_neurons": 6,
        "motor_neurons": 3,
        "sensory_fanout": 4,
        "inter_fanout": 3,
        "recurrent_command_synapses": 5,
        "motor_fanin": 4,
        "seed": seed,
    }
    ours.build(5)
    _same(ref, ours)
    # ncps cannot read its own NCP config, but it reads ours
    again = ncps_wirings.NCP.from_config(ours.get_config())
    again.build(5)
    _same(again, ours)


@pytest.mark.parametrize("seed", SEEDS)
def test_ncps_plain_wiring_config_keeps_the_matrices(seed):
    ref = ncps_wirings.AutoNCP(12, 3, seed=seed)
    ref.build(4)
    config = ncps_wirings.Wiring.get_config(ref)  # the matrices, whatever the class
    ours = wirings.Wiring.from_config(config)
    assert type(ours) is wirings.Wiring and ours.is_built()
    _same(ref, ours)
    assert ours.get_config() == config
    assert ours.get_type_of_neuron(0) == "motor" and ours.get_type_of_neuron(5) == "inter"
    stored = wirings.wiring_from_config(json.loads(json.dumps(wirings.wiring_to_config(ours))))
    _same(stored, ours)


def test_model_file_configs_still_round_trip():
    for wiring in (
        wirings.AutoNCP(19, 2, seed=4),
        wirings.NCP(5, 4, 2, 3, 2, 3, 2, seed=9),
        wirings.FullyConnected(5, 2, erev_init_seed=3),
        wirings.Random(6, 2, 0.5, 8),
    ):
        config = wirings.wiring_to_config(wiring)
        assert config["type"] == type(wiring).__name__
        again = wirings.wiring_from_config(json.loads(json.dumps(config)))
        wiring.build(3)
        again.build(3)
        _same(wiring, again)
    with pytest.raises(ValueError, match="unknown wiring type"):
        wirings.wiring_from_config({"type": "Tree", "units": 3})
    with pytest.raises(ValueError, match="cannot tell which wiring"):
        wirings.Wiring.from_config({"units": 3, "colour": "blue"})
    with pytest.raises(ValueError, match="bad arguments"):
        wirings.AutoNCP.from_config({"units": 19, "outputs": 2})
