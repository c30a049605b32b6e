"""Liquid neural networks: CfC and LTC cells, NCP wirings, fused streaming kernels (no ROS here)."""

from .cfc import CfC, CfCCell, WiredCfCCell
from .ltc import LTC, LTCCell
from .wirings import NCP, AutoNCP, FullyConnected, Wiring, wiring_from_config, wiring_to_config

__all__ = [
    "CfC", "CfCCell", "WiredCfCCell", "LTC", "LTCCell",
    "Wiring", "FullyConnected", "NCP", "AutoNCP", "wiring_from_config", "wiring_to_config",
]
