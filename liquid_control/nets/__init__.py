"""Liquid neural networks: CfC and LTC cells, Liquid-S4, NCP wirings, fused streaming kernels (no ROS here);
the memoryless Feedforward baseline core.

The names below load on first use (PEP 562), so that `liquid_control.nets.fused` and
`liquid_control.nets.wirings` can be imported without torch: the ONNX backend runs the fused
kernels from an exported model on a board that has no torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "CfC": "cfc",
    "CfCCell": "cfc",
    "WiredCfCCell": "cfc",
    "LTC": "ltc",
    "LTCCell": "ltc",
    "LiquidS4": "liquid_s4",
    "Feedforward": "feedforward",
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
