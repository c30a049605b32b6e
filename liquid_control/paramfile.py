"""The controller's ROS 2 parameters files, read without ROS: which section of a file applies to
the node, its parameters flattened to their ROS names ("adaptation.enabled"), and which of them are
LiquidController Settings. The node (nodes/params.py) and offline replay read files through this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .paths import share_path

NODE_NAME = "liquid_controller"

# Parameter name -> LiquidController Settings field.
SETTINGS_OF = {
    "tau_scale": "tau_scale",
    "max_linear_speed": "max_linear_speed",
    "max_angular_speed": "max_angular_speed",
    "max_linear_accel": "max_linear_accel",
    "max_angular_accel": "max_angular_accel",
    "sensor_timeout": "sensor_timeout",
    "max_dt": "max_dt",
    "adaptation.enabled": "adaptation_enabled",
    "adaptation.forgetting": "adaptation_forgetting",
    "adaptation.max_step": "adaptation_max_step",
}


def config_path() -> Path:
    """config/controller.yaml, installed or beside the sources: the node's defaults."""
    return share_path("config", "controller.yaml")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ROS names them: {"adaptation": {"enabled": x}} -> {"adaptation.enabled": x}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_params(path: str | Path) -> dict[str, Any]:
    """The controller's parameters in a parameters file, flattened: the first section keyed for
    the node (`liquid_controller`, `/**/liquid_controller`, `/ns/liquid_controller`) or for every
    node (`/**`). ValueError, naming the file, when it cannot be read or has no such section."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"parameters file {path}: cannot be read ({exc})") from None
    sections = [v for k, v in data.items() if isinstance(v, dict) and (k.endswith(NODE_NAME) or k == "/**")]
    if not sections or not isinstance(sections[0].get("ros__parameters"), dict):
        raise ValueError(f"parameters file {path}: no {NODE_NAME}: ros__parameters: section")
    return flatten(sections[0]["ros__parameters"])


def settings_fields(params: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields (as keyword arguments) among flattened parameters."""
    return {SETTINGS_OF[name]: value for name, value in params.items() if name in SETTINGS_OF}
