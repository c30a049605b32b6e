"""The controller node's parameters: names, types, ranges and descriptions in one table; default
values from config/controller.yaml (the same file launch files pass), so each lives in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from ..paramfile import config_path, read_params


@dataclass(frozen=True)
class Param:
    name: str
    type: int
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False


D, INT, B, S = (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER,
                ParameterType.PARAMETER_BOOL, ParameterType.PARAMETER_STRING)

PARAMETERS = (
    Param("model_path", S, "Policy model file (.safetensors). Set at runtime to hot-swap: the new model "
          "is loaded and checked, then switched in between two steps; on failure the old one runs on."),
    Param("tau_scale", D, "Multiplies every liquid time constant (2.0 = twice as slow), live.", (0.05, 20.0)),
    Param("max_linear_speed", D, "Largest |linear.x| commanded, m/s.", (0.0, 5.0)),
    Param("max_angular_speed", D, "Largest |angular.z| commanded, rad/s.", (0.0, 10.0)),
    Param("max_linear_accel", D, "Largest change of linear.x per second, m/s^2.", (0.0, 20.0)),
    Param("max_angular_accel", D, "Largest change of angular.z per second, rad/s^2.", (0.0, 50.0)),
    Param("sensor_timeout", D, "Seconds without camera or IMU data before zero commands and "
          "diagnostics ERROR.", (0.01, 10.0)),
    Param("max_dt", D, "Seconds; a larger gap between sensor stamps resets the liquid state.", (0.001, 10.0)),
    Param("max_publish_rate", D, "Cap on cmd_vel publishing, Hz; 0 publishes after every step.", (0.0, 1000.0)),
    Param("cmd_vel_stamped", B, "Publish geometry_msgs/TwistStamped (Jazzy diff_drive_controller) "
          "instead of Twist."),
    Param("teacher_stamped", B, "teacher/cmd_vel is TwistStamped instead of Twist.", read_only=True),
    Param("frame_id", S, "header.frame_id of stamped commands."),
    Param("sensor_thread", B, "Serve camera and IMU in a wait loop of their own thread (lower latency "
          "than the executor); false: on the executor that spins the node.", read_only=True),
    Param("num_threads", INT, "Torch threads for the camera encoder.", (1, 64)),
    Param("publish_state", B, "Publish the hidden state and time constants on ~/liquid_state."),
    Param("state_publish_rate", D, "Cap on ~/liquid_state, Hz; 0 publishes after every step.", (0.0, 1000.0)),
    Param("adaptation.enabled", B, "Adapt the command readout toward teacher/cmd_vel by recursive "
          "least squares."),
    Param("adaptation.forgetting", D, "RLS forgetting factor (1 = never forget).", (0.5, 1.0)),
    Param("adaptation.max_step", D, "Largest change of one readout weight per update.", (1e-6, 10.0)),
)


def default_config() -> dict[str, Any]:
    defaults = read_params(config_path())
    missing = {p.name for p in PARAMETERS} - set(defaults)
    if missing:
        raise ValueError(f"config/controller.yaml lacks defaults for {sorted(missing)}")
    return defaults


def descriptor(p: Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=p.name, type=p.type, description=p.description, read_only=p.read_only)
    if p.range is not None and p.type == D:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]))]
    elif p.range is not None and p.type == INT:
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    return d


def declare_all(node, defaults: dict[str, Any]) -> None:
    for p in PARAMETERS:
        value = defaults[p.name]
        if p.type == D:
            value = float(value)
        node.declare_parameter(p.name, value, descriptor(p))
