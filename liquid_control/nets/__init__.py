"""Liquid neural networks: CfC and LTC cells, Liquid-S4, NCP wirings, fused streaming kernels (no ROS here);
the memoryless Feedforward baseline core.

The names below load on first use (PEP 562), so that the streaming steps (`nets.stream`, `nets.<type>.stream`)
and `liquid_control.nets.wirings` can be imported without torch: the ONNX backend runs them from an
exported model on a board that has no torch.

One folder per network type (cfc/, ltc/, liquid_s4/, feedforward/, recurrent/: its torch module,
streaming step and, where it has one, training kernel and weight layout), what they share beside them
(kernels.py: the numba arithmetic; stream.py: the streaming base; sequence.py: running a training
kernel; base.py: the torch base classes; registry.py: every type, declared once).
"""

from __future__ import annotations

import importlib

_WHERE = {
    "CfC": "cfc.module",
    "CfCCell": "cfc.module",
    "WiredCfCCell": "cfc.module",
    "LTC": "ltc.module",
    "LTCCell": "ltc.module",
    "LiquidS4": "liquid_s4.module",
    "Feedforward": "feedforward.module",
    "Recurrent": "recurrent.module",
    "NCP": "wirings",
    "AutoNCP": "wirings",
    "FullyConnected": "wirings",
    "Random": "wirings",
    "Wiring": "wirings",
    "wiring_from_config": "wirings",
    "wiring_to_config": "wirings",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
