"""Wirings: which neuron talks to which, as data.

Same classes, constructor arguments, random sequences and adjacency matrices as `ncps.wirings`
(ncps 1.0.1), so a wiring built here with the same seed is the same circuit, and a model trained with
ncps loads unchanged. Polarity +1 is excitatory, -1 inhibitory, 0 no synapse.

ncps's graph API is here too: `get_graph()` (a networkx DiGraph with ncps's node and edge
attributes), `draw_graph()` (matplotlib, drawn by `liquid_control.draw.wiring`) and
`from_config()`, which takes what ncps's `get_config()` returns (see `Wiring.from_config`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Wiring:
    """A set of neurons with a (units x units) adjacency and an (inputs x units) sensory adjacency."""

    def __init__(self, units: int) -> None:
        if units < 1:
            raise ValueError(f"a wiring needs at least one neuron, got units={units}")
        self.units = int(units)
        self.adjacency_matrix = np.zeros([units, units], dtype=np.int32)
        self.sensory_adjacency_matrix: np.ndarray | None = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None

    # --- structure -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return 1

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        return list(range(self.units))

    def get_type_of_neuron(self, neuron_id: int) -> str:
        return "motor" if neuron_id < self.output_dim else "inter"

    def is_built(self) -> bool:
        return self.input_dim is not None

    def build(self, input_dim: int) -> None:
        if self.input_dim is not None and self.input_dim != input_dim:
            raise ValueError(
                f"conflicting input dimensions: the wiring was built for {self.input_dim} inputs, "
                f"now asked for {input_dim}"
            )
        if self.input_dim is None:
            self.set_input_dim(input_dim)

    def set_input_dim(self, input_dim: int) -> None:
        self.input_dim = int(input_dim)
        self.sensory_adjacency_matrix = np.zeros([input_dim, self.units], dtype=np.int32)

    def set_output_dim(self, output_dim: int) -> None:
        self.output_dim = int(output_dim)

    def erev_initializer(self, shape: Any = None, dtype: Any = None) -> np.ndarray:
        return np.copy(self.adjacency_matrix)

    def sensory_erev_initializer(self, shape: Any = None, dtype: Any = None) -> np.ndarray:
        return np.copy(self.sensory_adjacency_matrix)

    # --- synapses --------------------------------------------------------------------------
    def add_synapse(self, src: int, dest: int, polarity: int) -> None:
        if not 0 <= src < self.units:
            raise ValueError(f"synapse source {src} outside the {self.units} neurons")
        if not 0 <= dest < self.units:
            raise ValueError(f"synapse target {dest} outside the {self.units} neurons")
        if polarity not in (-1, 1):
            raise ValueError(f"synapse polarity must be -1 or +1, got {polarity}")
        self.adjacency_matrix[src, dest] = polarity

    def add_sensory_synapse(self, src: int, dest: int, polarity: int) -> None:
        if self.input_dim is None:
            raise ValueError("cannot add sensory synapses before build(input_dim)")
        if not 0 <= src < self.input_dim:
            raise ValueError(f"sensory synapse source {src} outside the {self.input_dim} inputs")
        if not 0 <= dest < self.units:
            raise ValueError(f"sensory synapse target {dest} outside the {self.units} neurons")
        if polarity not in (-1, 1):
            raise ValueError(f"synapse polarity must be -1 or +1, got {polarity}")
        self.sensory_adjacency_matrix[src, dest] = polarity

    @property
    def synapse_count(self) -> int:
        """Synapses between the wiring's own neurons."""
        return int(np.sum(np.abs(self.adjacency_matrix)))

    @property
    def sensory_synapse_count(self) -> int:
        """Synapses from the inputs (sensory neurons) to the wiring's neurons."""
        return int(np.sum(np.abs(self.sensory_adjacency_matrix)))

    # --- description -----------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return ["all"]

    def summary(self) -> dict[str, Any]:
        """Neurons per layer and synapse counts, for `liquid-control info`."""
        layers = {name: len(self.get_neurons_of_layer(i)) for i, name in enumerate(self.layer_names())}
        return {
            "type": type(self).__name__,
            "units": self.units,
            "inputs": self.input_dim,
            "outputs": self.output_dim,
            "neurons_per_layer": layers,
            "synapses": self.synapse_count if self.is_built() else None,
            "sensory_synapses": self.sensory_synapse_count if self.is_built() else None,
        }

    # --- configs (ncps's formats) -----------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """A plain wiring's config is its matrices (as ncps's Wiring.get_config); subclasses give
        their constructor arguments instead, which rebuild them under their seed."""
        return {
            "units": self.units,
            "adjacency_matrix": self.adjacency_matrix.tolist(),
            "sensory_adjacency_matrix": (
                None if self.sensory_adjacency_matrix is None else self.sensory_adjacency_matrix.tolist()
            ),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Wiring:
        """The wiring a config describes: ncps's `get_config()` of any ncps 1.0.1 wiring, or ours.

        On a subclass (`NCP.from_config(...)`) the config holds that class's constructor arguments,
        as in ncps. On `Wiring` the kind is told by a "type" key (our model files'
        `wiring_to_config` form) or else by the config's keys, so `Wiring.from_config` takes any
        ncps config; a config with "adjacency_matrix" gives a plain Wiring with those matrices.
        Constructor configs describe an unbuilt wiring: call `build(input_dim)` for its sensory
        synapses, as after ncps's own `from_config`."""
        if not isinstance(config, dict):
            raise ValueError(f"a wiring config is a dict, got {type(config).__name__}")
        if cls is Wiring:
            if "type" in config:
                return wiring_from_config(config)
            kind = _kind_of_config(config)
            if kind != "Wiring":
                return WIRINGS[kind].from_config(config)
            return cls._from_matrices(config)
        args = cls._constructor_args(dict(config))
        try:
            return cls(**args)
        except TypeError as exc:
            raise ValueError(f"bad arguments for wiring {cls.__name__}: {exc}") from None

    @classmethod
    def _constructor_args(cls, config: dict[str, Any]) -> dict[str, Any]:
        config.pop("type", None)
        return config

    @classmethod
    def _from_matrices(cls, config: dict[str, Any]) -> Wiring:
        missing = {"units", "adjacency_matrix"} - set(config)
        if missing:
            raise ValueError(f"a plain wiring config needs {sorted(missing)}")
        wiring = Wiring(int(config["units"]))
        adjacency = np.asarray(config["adjacency_matrix"], dtype=np.int32)
        if adjacency.shape != (wiring.units, wiring.units):
            raise ValueError(f"adjacency_matrix is {adjacency.shape}, expected {(wiring.units, wiring.units)}")
        wiring.adjacency_matrix = adjacency
        if config.get("sensory_adjacency_matrix") is not None:
            sensory = np.asarray(config["sensory_adjacency_matrix"], dtype=np.int32)
            if sensory.ndim != 2 or sensory.shape[1] != wiring.units:
                raise ValueError(f"sensory_adjacency_matrix is {sensory.shape}, expected (inputs, {wiring.units})")
            input_dim = config.get("input_dim")
            if input_dim is not None and int(input_dim) != sensory.shape[0]:
                raise ValueError(f"input_dim {input_dim} but the sensory matrix has {sensory.shape[0]} rows")
            wiring.set_input_dim(sensory.shape[0])
            wiring.sensory_adjacency_matrix = sensory
        elif config.get("input_dim") is not None:
            wiring.set_input_dim(int(config["input_dim"]))
        if config.get("output_dim") is not None:
            wiring.set_output_dim(int(config["output_dim"]))
        return wiring

    # --- graph (ncps's API) ----------------------------------------------------------------
    def get_graph(self, include_sensory_neurons: bool = True):
        """The wiring as a networkx DiGraph, as ncps builds it: nodes "neuron_<i>" and
        "sensory_<i>" with attribute neuron_type ("sensory", "inter", "command", "motor"), one
        edge per synapse with attribute polarity ("excitatory" or "inhibitory")."""
        if not self.is_built():
            raise ValueError(
                "the wiring is not built yet (its number of inputs is unknown): call "
                "wiring.build(input_dim), or build the model that uses it"
            )
        import networkx as nx

        graph = nx.DiGraph()
        for i in range(self.units):
            graph.add_node(f"neuron_{i}", neuron_type=self.get_type_of_neuron(i))
        if include_sensory_neurons:
            for i in range(self.input_dim):
                graph.add_node(f"sensory_{i}", neuron_type="sensory")
            for src, dest in zip(*np.nonzero(self.sensory_adjacency_matrix), strict=True):
                polarity = "excitatory" if self.sensory_adjacency_matrix[src, dest] >= 0 else "inhibitory"
                graph.add_edge(f"sensory_{src}", f"neuron_{dest}", polarity=polarity)
        for src, dest in zip(*np.nonzero(self.adjacency_matrix), strict=True):
            polarity = "excitatory" if self.adjacency_matrix[src, dest] >= 0 else "inhibitory"
            graph.add_edge(f"neuron_{src}", f"neuron_{dest}", polarity=polarity)
        return graph

    def draw_graph(
        self,
        layout: str = "shell",
        neuron_colors: dict[str, str] | None = None,
        synapse_colors: str | dict[str, str] | None = None,
        draw_labels: bool = False,
        ax=None,
    ) -> list:
        """Draw the wiring with matplotlib, as ncps's draw_graph: returns the legend handles (one
        patch per neuron type), for `ax.legend(handles=...)`.

        `layout`: ncps's networkx layouts ("shell", "spring", "circular", "kamada", "random",
        "spectral", "spiral") or "layers" (sensory, inter, command, motor in columns). `ax`: the
        axes to draw on; without it, pyplot's current axes if the caller has imported pyplot (what
        ncps does), else a new Figure's (`liquid_control.draw.wiring.wiring_figure` returns one)."""
        from ..draw.wiring import draw_wiring

        return draw_wiring(
            self,
            ax=ax,
            layout=layout,
            neuron_colors=neuron_colors,
            synapse_colors=synapse_colors,
            draw_labels=draw_labels,
        )


class FullyConnected(Wiring):
    """Every neuron connects to every neuron (and every input to every neuron)."""

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        erev_init_seed: int = 1111,
        self_connections: bool = True,
    ) -> None:
        super().__init__(units)
        output_dim = units if output_dim is None else output_dim
        if not 1 <= output_dim <= units:
            raise ValueError(f"output_dim must be in [1, {units}], got {output_dim}")
        self.self_connections = self_connections
        self.set_output_dim(output_dim)
        self._erev_init_seed = erev_init_seed
        self._rng = np.random.default_rng(erev_init_seed)
        for src in range(self.units):
            for dest in range(self.units):
                if src == dest and not self_connections:
                    continue
                self.add_synapse(src, dest, self._rng.choice([-1, 1, 1]))

    def build(self, input_dim: int) -> None:
        was_built = self.is_built()
        super().build(input_dim)
        if was_built:
            return
        for src in range(self.input_dim):
            for dest in range(self.units):
                self.add_sensory_synapse(src, dest, self._rng.choice([-1, 1, 1]))

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "erev_init_seed": self._erev_init_seed,
            "self_connections": self.self_connections,
        }


class Random(Wiring):
    """Randomly placed synapses at a sparsity level (as ncps's Random: the same seed gives the same
    adjacency, sensory synapses included)."""

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        sparsity_level: float = 0.0,
        random_seed: int = 1111,
    ) -> None:
        super().__init__(units)
        output_dim = units if output_dim is None else output_dim
        if not 1 <= output_dim <= units:
            raise ValueError(f"output_dim must be in [1, {units}], got {output_dim}")
        if not 0.0 <= sparsity_level < 1.0:
            raise ValueError(f"sparsity_level must be in [0, 1), got {sparsity_level}")
        self.set_output_dim(output_dim)
        self.sparsity_level = sparsity_level
        self._random_seed = random_seed
        self._rng = np.random.default_rng(random_seed)
        count = int(np.round(units * units * (1 - sparsity_level)))
        pairs = [(src, dest) for src in range(self.units) for dest in range(self.units)]
        for src, dest in self._rng.choice(pairs, size=count, replace=False):
            self.add_synapse(int(src), int(dest), self._rng.choice([-1, 1, 1]))

    def build(self, input_dim: int) -> None:
        was_built = self.is_built()
        super().build(input_dim)
        if was_built:
            return
        count = int(np.round(self.input_dim * self.units * (1 - self.sparsity_level)))
        pairs = [(src, dest) for src in range(self.input_dim) for dest in range(self.units)]
        for src, dest in self._rng.choice(pairs, size=count, replace=False):
            # ncps draws two polarities per sensory synapse and keeps the second; so do we.
            self.add_sensory_synapse(int(src), int(dest), self._rng.choice([-1, 1, 1]))
            self.add_sensory_synapse(int(src), int(dest), self._rng.choice([-1, 1, 1]))

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "sparsity_level": self.sparsity_level,
            "random_seed": self._random_seed,
        }


class NCP(Wiring):
    """Neural Circuit Policy: sensory -> inter -> command (recurrent) -> motor.

    Neuron ids are ordered motor, command, inter (as in ncps), so the first `motor_neurons` state
    entries are the outputs.
    """

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ) -> None:
        super().__init__(inter_neurons + command_neurons + motor_neurons)
        for name, value in (
            ("inter_neurons", inter_neurons),
            ("command_neurons", command_neurons),
            ("motor_neurons", motor_neurons),
        ):
            if value < 1:
                raise ValueError(f"NCP needs {name} >= 1, got {value}")
        if motor_fanin > command_neurons:
            raise ValueError(f"motor_fanin is {motor_fanin} but there are only {command_neurons} command neurons")
        if sensory_fanout > inter_neurons:
            raise ValueError(f"sensory_fanout is {sensory_fanout} but there are only {inter_neurons} inter neurons")
        if inter_fanout > command_neurons:
            raise ValueError(f"inter_fanout is {inter_fanout} but there are only {command_neurons} command neurons")
        self.set_output_dim(motor_neurons)
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._num_inter_neurons = inter_neurons
        self._num_command_neurons = command_neurons
        self._num_motor_neurons = motor_neurons
        self._sensory_fanout = sensory_fanout
        self._inter_fanout = inter_fanout
        self._recurrent_command_synapses = recurrent_command_synapses
        self._motor_fanin = motor_fanin
        self._motor_neurons = list(range(0, motor_neurons))
        self._command_neurons = list(range(motor_neurons, motor_neurons + command_neurons))
        self._inter_neurons = list(range(motor_neurons + command_neurons, self.units))

    @property
    def num_layers(self) -> int:
        return 3

    def layer_names(self) -> list[str]:
        return ["inter", "command", "motor"]

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        layers = (self._inter_neurons, self._command_neurons, self._motor_neurons)
        if not 0 <= layer_id < 3:
            raise ValueError(f"an NCP has layers 0..2, got {layer_id}")
        return layers[layer_id]

    def get_type_of_neuron(self, neuron_id: int) -> str:
        if neuron_id < self._num_motor_neurons:
            return "motor"
        if neuron_id < self._num_motor_neurons + self._num_command_neurons:
            return "command"
        return "inter"

    def build(self, input_dim: int) -> None:
        was_built = self.is_built()
        super().build(input_dim)
        if was_built:
            return
        self._sensory_neurons = list(range(self.input_dim))
        # The order of these random draws is ncps's; changing it changes every seeded wiring.
        self._connect_layer(
            self._sensory_neurons,
            self._inter_neurons,
            self._sensory_fanout,
            self.add_sensory_synapse,
            fanin_cap=len(self._sensory_neurons),
        )
        # ncps caps this fan-in by the number of command (not inter) neurons; kept for equality.
        self._connect_layer(
            self._inter_neurons,
            self._command_neurons,
            self._inter_fanout,
            self.add_synapse,
            fanin_cap=self._num_command_neurons,
        )
        for _ in range(self._recurrent_command_synapses):
            src = self._rng.choice(self._command_neurons)
            dest = self._rng.choice(self._command_neurons)
            self.add_synapse(src, dest, self._rng.choice([-1, 1]))
        self._connect_motor_layer()

    def _connect_layer(self, sources: list[int], targets: list[int], fanout: int, add, fanin_cap: int) -> None:
        """Each source reaches `fanout` random targets; targets left unreached get a mean fan-in."""
        unreached = list(targets)
        for src in sources:
            for dest in self._rng.choice(targets, size=fanout, replace=False):
                if dest in unreached:
                    unreached.remove(dest)
                add(src, dest, self._rng.choice([-1, 1]))
        fanin = int(np.clip(int(len(sources) * fanout / len(targets)), 1, fanin_cap))
        for dest in unreached:
            for src in self._rng.choice(sources, size=fanin, replace=False):
                add(src, dest, self._rng.choice([-1, 1]))

    def _connect_motor_layer(self) -> None:
        """Each motor neuron gets `motor_fanin` command inputs; silent command neurons get outputs."""
        unreached = list(self._command_neurons)
        for dest in self._motor_neurons:
            for src in self._rng.choice(self._command_neurons, size=self._motor_fanin, replace=False):
                if src in unreached:
                    unreached.remove(src)
                self.add_synapse(src, dest, self._rng.choice([-1, 1]))
        fanout = int(
            np.clip(
                int(self._num_motor_neurons * self._motor_fanin / self._num_command_neurons),
                1,
                self._num_motor_neurons,
            )
        )
        for src in unreached:
            for dest in self._rng.choice(self._motor_neurons, size=fanout, replace=False):
                self.add_synapse(src, dest, self._rng.choice([-1, 1]))

    @classmethod
    def _constructor_args(cls, config: dict[str, Any]) -> dict[str, Any]:
        """ncps 1.0.1's NCP.get_config gives the layers as lists of neuron ids and, for the seed,
        `RandomState.seed()`, which is always None (and reseeds its generator): take the lists'
        lengths, and refuse a missing seed rather than build a different circuit."""
        config = super()._constructor_args(config)
        if cls is not NCP:
            return config
        for key in ("inter_neurons", "command_neurons", "motor_neurons"):
            if isinstance(config.get(key), list | tuple | np.ndarray):
                config[key] = len(config[key])
        if "seed" in config and config["seed"] is None:
            raise ValueError(
                "this NCP config has no seed (ncps 1.0.1's NCP.get_config() always gives seed None), "
                "so it cannot rebuild the same synapses: set config['seed'] to the seed the wiring was "
                "made with, or pass ncps.wirings.Wiring.get_config(wiring) (its matrices) to "
                "Wiring.from_config"
            )
        return config

    def get_config(self) -> dict[str, Any]:
        return {
            "inter_neurons": self._num_inter_neurons,
            "command_neurons": self._num_command_neurons,
            "motor_neurons": self._num_motor_neurons,
            "sensory_fanout": self._sensory_fanout,
            "inter_fanout": self._inter_fanout,
            "recurrent_command_synapses": self._recurrent_command_synapses,
            "motor_fanin": self._motor_fanin,
            "seed": self._seed,
        }


class AutoNCP(NCP):
    """An NCP sized from a neuron count, an output count and a sparsity level (as ncps's AutoNCP)."""

    def __init__(
        self,
        units: int,
        output_size: int,
        sparsity_level: float = 0.5,
        seed: int = 22222,
    ) -> None:
        if output_size >= units - 2:
            raise ValueError(f"output_size must be below units - 2 (got {units} units, {output_size} outputs)")
        if not 0.1 <= sparsity_level <= 1.0:
            raise ValueError(f"sparsity_level must be in [0.1, 1.0], got {sparsity_level}")
        self._output_size = output_size
        self._sparsity_level = sparsity_level
        density = 1.0 - sparsity_level
        inter_and_command = units - output_size
        command = max(int(0.4 * inter_and_command), 1)
        inter = inter_and_command - command
        super().__init__(
            inter,
            command,
            output_size,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_size": self._output_size,
            "sparsity_level": self._sparsity_level,
            "seed": self._seed,
        }


WIRINGS = {cls.__name__: cls for cls in (Wiring, FullyConnected, Random, NCP, AutoNCP)}

# Each ncps 1.0.1 get_config() format, told apart by its keys.
_CONFIG_KEYS = {
    "Wiring": {"units", "adjacency_matrix", "sensory_adjacency_matrix", "input_dim", "output_dim"},
    "FullyConnected": {"units", "output_dim", "erev_init_seed", "self_connections"},
    "Random": {"units", "output_dim", "sparsity_level", "random_seed"},
    "NCP": {
        "inter_neurons",
        "command_neurons",
        "motor_neurons",
        "sensory_fanout",
        "inter_fanout",
        "recurrent_command_synapses",
        "motor_fanin",
        "seed",
    },
    "AutoNCP": {"units", "output_size", "sparsity_level", "seed"},
}
_REQUIRED_KEYS = {
    "Wiring": {"units", "adjacency_matrix"},
    "FullyConnected": {"units", "erev_init_seed"},
    "Random": {"units", "random_seed"},
    "NCP": _CONFIG_KEYS["NCP"] - {"seed"},
    "AutoNCP": {"units", "output_size"},
}


def _kind_of_config(config: dict[str, Any]) -> str:
    keys = set(config)
    kinds = [k for k in _CONFIG_KEYS if _REQUIRED_KEYS[k] <= keys <= _CONFIG_KEYS[k]]
    if len(kinds) != 1:
        raise ValueError(
            f"cannot tell which wiring the config with keys {sorted(keys)} describes; give it a "
            f"'type' ({', '.join(WIRINGS)}) or call that class's from_config"
        )
    return kinds[0]


def wiring_to_config(wiring: Wiring) -> dict[str, Any]:
    """{"type": ..., **constructor args}: enough to rebuild the same wiring."""
    return {"type": type(wiring).__name__, **wiring.get_config()}


def wiring_from_config(config: dict[str, Any]) -> Wiring:
    """The wiring of a `wiring_to_config` dict (how model files store wirings)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in WIRINGS:
        raise ValueError(f"unknown wiring type {kind!r}; expected one of {sorted(WIRINGS)}")
    if kind == "Wiring":
        return Wiring._from_matrices(config)
    return WIRINGS[kind].from_config(config)
