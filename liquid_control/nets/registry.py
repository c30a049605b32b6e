"""Every network type the package knows, declared once (torch-free): the name a model file's config
gives it (`network.cell`), the options that config may carry, whether it takes a wiring, and where its
torch module and its streaming step live. The model file's spec (model/specs.py), the fused
streaming step's `from_arrays` (the ONNX backend) and the export read this table instead of testing
classes one by one; a new network type is one entry here and a folder beside the others.

Nothing is imported until asked for: `module_class` imports torch, `stream_class` only numpy and
numba (a board without torch streams an exported model's core).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class NetType:
    cell: str  # the model file's network.cell
    module: str  # "folder.module:Class", the torch module
    stream: str  # "folder.stream:Class", the streaming step (to_arrays' "kind" is `cell`)
    options: frozenset[str]  # what network.options may hold
    wired: bool  # takes a wiring (else units only)


_CFC_OPTIONS = {
    "proj_size",
    "mixed_memory",
    "mode",
    "activation",
    "backbone_units",
    "backbone_layers",
    "backbone_dropout",
}
_LTC_OPTIONS = {
    "mixed_memory",
    "input_mapping",
    "output_mapping",
    "ode_unfolds",
    "epsilon",
    "implicit_param_constraints",
}

TYPES: dict[str, NetType] = {
    t.cell: t
    for t in (
        NetType("cfc", "cfc.module:CfC", "cfc.stream:FusedCfC", frozenset(_CFC_OPTIONS), True),
        NetType("ltc", "ltc.module:LTC", "ltc.stream:FusedLTC", frozenset(_LTC_OPTIONS), True),
        NetType(
            "lstm",
            "recurrent.module:Recurrent",
            "recurrent.stream:FusedRecurrent",
            frozenset({"time_input"}),
            False,
        ),
        NetType(
            "gru",
            "recurrent.module:Recurrent",
            "recurrent.stream:FusedRecurrent",
            frozenset({"time_input"}),
            False,
        ),
        # units are its output features; init and rate_range only initialise.
        NetType(
            "liquid_s4",
            "liquid_s4.module:LiquidS4",
            "liquid_s4.stream:FusedLiquidS4",
            frozenset({"channels", "modes", "liquid"}),
            False,
        ),
        # the memoryless baseline: units are its output features.
        NetType(
            "mlp",
            "feedforward.module:Feedforward",
            "feedforward.stream:FusedFeedforward",
            frozenset({"hidden", "activation", "time_input"}),
            False,
        ),
    )
}

CELLS = tuple(TYPES)
# The kinds `FusedStep.from_arrays` rebuilds without torch: what the ONNX backend streams.
STREAMED_KINDS = CELLS


def _load(where: str):
    module, name = where.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def net_type(cell: str) -> NetType:
    if cell not in TYPES:
        raise ValueError(f"network.cell must be one of {CELLS}, got {cell!r}")
    return TYPES[cell]


def module_class(cell: str):
    """The torch module class of `cell` (imports torch)."""
    return _load(net_type(cell).module)


def stream_class(cell: str):
    """The streaming step class of `cell` (numpy and numba only)."""
    return _load(net_type(cell).stream)
