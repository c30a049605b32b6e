"""The controller's parameters, defined once: the name, type, default, range and description of each,
and which LiquidController Settings field it sets. Everything else comes from this table: the node's
ROS declarations (nodes/params.py adds the descriptors), the Settings defaults and their checks, and
config/controller.yaml and docs/parameters.md (both written from it:
`python -m liquid_control.runtime.parameters --write`).

ROS 2 parameters files are read here without ROS, merged as rcl merges them: every section keyed
for the node (`liquid_controller`, `/**/liquid_controller`, `/ns/liquid_controller`, `/**`, ...)
applies, in file order, a later value overriding an earlier one.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..files import FileRefused, read_text
from ..paths import DEFAULT_MODEL

NODE_NAME = "liquid_controller"
SECTION = f"/**/{NODE_NAME}"  # how our files key the node: it applies in any namespace


@dataclass(frozen=True)
class Parameter:
    """One parameter of the controller node. `range` is inclusive; `setting` names the Settings
    field it sets (None: the node's own, such as publishing rates)."""

    name: str
    default: bool | int | float | str
    summary: str
    unit: str = ""
    range: tuple[float, float] | None = None
    read_only: bool = False
    setting: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def description(self) -> str:
        """The ROS descriptor's text: the summary and its unit."""
        return f"{self.summary}, {self.unit}." if self.unit else f"{self.summary}."

    def check(self, value: Any) -> None:
        """ValueError with a reason a user can act on, as the node and offline tools report it."""
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{self.name} must be a {kind.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}")
        if self.range is not None:
            lo, hi = self.range
            if not (math.isfinite(value) and lo <= value <= hi):
                unit = f" {self.unit}" if self.unit else ""
                raise ValueError(f"{self.name} must be in [{lo:g}, {hi:g}]{unit}, got {value}")


P = Parameter
PARAMETERS = (
    P(
        "model_path",
        DEFAULT_MODEL,
        "Policy model file (.safetensors): a path, or package://<package>/<file> for an installed one; empty = "
        "none (zero commands, diagnostics ERROR). Set at runtime to hot-swap: the new model is loaded and "
        "checked in a thread of its own (the old one runs on meanwhile, and every safety decision goes on), then "
        "switched in between two steps; on failure the old one runs on and model_path returns to it",
    ),
    P(
        "adapted_model_dir",
        "",
        "Folder that ~/save_model writes adapted models to; empty = $ROS_HOME/liquid_control/"
        "adapted_models (~/.ros/...). Never the model's own folder: an installed model's share/ is not the user's",
    ),
    P(
        "max_saved_models",
        20,
        "Most adapted models ~/save_model keeps in adapted_model_dir; a call beyond it is "
        "refused with the reason (remove some, or raise this)",
        "",
        (1, 10_000),
    ),
    P(
        "tau_scale",
        1.0,
        "Multiplies every liquid time constant (2.0 = twice as slow), live",
        "",
        (0.05, 20.0),
        setting="tau_scale",
    ),
    P("max_linear_speed", 0.5, "Largest |linear.x| commanded", "m/s", (0.0, 5.0), setting="max_linear_speed"),
    P("max_angular_speed", 1.5, "Largest |angular.z| commanded", "rad/s", (0.0, 10.0), setting="max_angular_speed"),
    P(
        "max_linear_accel",
        1.0,
        "Largest change of linear.x per second",
        "m/s^2",
        (0.0, 20.0),
        setting="max_linear_accel",
    ),
    P(
        "max_angular_accel",
        4.0,
        "Largest change of angular.z per second",
        "rad/s^2",
        (0.0, 50.0),
        setting="max_angular_accel",
    ),
    P(
        "speed_limit_mode",
        "curvature",
        "How the speed and acceleration limits shape a command: curvature scales angular.z by the factor "
        "that max_linear_speed or max_linear_accel applies to linear.x (and both by the factor "
        "max_angular_speed needs), so the robot drives the path the policy chose, slower; independent "
        "clips each field on its own (slowing down then turns tighter)",
        setting="speed_limit_mode",
        choices=("curvature", "independent"),
    ),
    P(
        "sensor_timeout",
        0.5,
        "Time without accepted data of a sensor the model reads (camera, IMU, odometry) before zero "
        "commands and diagnostics ERROR (each sensor's own timeout, when set, replaces it)",
        "s",
        (0.01, 10.0),
        setting="sensor_timeout",
    ),
    P(
        "camera_timeout",
        0.0,
        "Time without an accepted camera frame (silent, or stamps frozen or going "
        "back) before zero commands and diagnostics ERROR naming the camera; 0 = sensor_timeout",
        "s",
        (0.0, 10.0),
        setting="camera_timeout",
    ),
    P(
        "imu_timeout",
        0.0,
        "Time without an accepted IMU sample before zero commands and diagnostics ERROR "
        "naming the IMU; 0 = sensor_timeout",
        "s",
        (0.0, 10.0),
        setting="imu_timeout",
    ),
    P(
        "odom_timeout",
        0.0,
        "Time without an accepted odometry message (for a model that reads odometry) before zero "
        "commands and diagnostics ERROR naming the odometry; 0 = sensor_timeout",
        "s",
        (0.0, 10.0),
        setting="odom_timeout",
    ),
    P(
        "max_image_pixels",
        2_073_600,
        "Larger camera frames (width x height) are rejected before any "
        "conversion, counted and logged (default: 1920 x 1080)",
        "pixels",
        (1, 100_000_000),
    ),
    P(
        "max_dt",
        0.5,
        "A larger gap between sensor stamps resets the liquid state",
        "s",
        (0.001, 10.0),
        setting="max_dt",
    ),
    P(
        "max_publish_rate",
        0.0,
        "Cap on everything published on cmd_vel, zero commands included (0 publishes after "
        "every step and every watchdog tick); the first zero after a stop, and an e-stop's, go out at once",
        "Hz",
        (0.0, 1000.0),
    ),
    P(
        "cmd_vel_stamped",
        False,
        "Publish geometry_msgs/TwistStamped (as Jazzy's diff_drive_controller takes) instead of Twist",
    ),
    P(
        "publish_cmd_vel",
        True,
        "false: shadow mode. Nothing is published on cmd_vel (no zeros either: someone else drives); the "
        "policy's commands go out on ~/proposed_cmd_vel alone, to try a policy beside a driver with "
        "nothing at stake. Set back to true, the policy commands, starting from rest",
    ),
    P("teacher_stamped", False, "teacher/cmd_vel is TwistStamped instead of Twist", read_only=True),
    P("frame_id", "base_link", "header.frame_id of stamped commands"),
    P(
        "backend",
        "torch",
        "What runs the network: torch (a .safetensors model file) or onnx (a file written by "
        "liquid-control export, run by ONNX Runtime without torch: smaller install, faster start)",
        read_only=True,
        choices=("torch", "onnx"),
    ),
    P(
        "camera_transport",
        "raw",
        "How the camera arrives, as image_transport names it: raw subscribes "
        "camera/image_raw (sensor_msgs/Image), compressed subscribes camera/image_raw/compressed "
        "(sensor_msgs/CompressedImage, JPEG or PNG)",
        read_only=True,
        choices=("raw", "compressed"),
    ),
    P(
        "sensor_thread",
        True,
        "Serve camera and IMU in a wait loop of their own thread (lower latency than "
        "the executor); false: on the executor that spins the node",
        read_only=True,
    ),
    P("num_threads", 1, "Torch threads for the camera encoder", "", (1, 64)),
    P("publish_state", True, "Publish the hidden state and time constants on ~/liquid_state"),
    P("state_publish_rate", 30.0, "Cap on ~/liquid_state (0 publishes after every step)", "Hz", (0.0, 1000.0)),
    P(
        "saliency_rate",
        5.0,
        "~/saliency: the camera frame at the model's input size with the encoder's "
        "VisualBackProp saliency over it (rgb8), computed off the command path, only while someone subscribes, "
        "backend torch only. Cap on it per second of camera stamps (0 = off)",
        "Hz",
        (0.0, 100.0),
    ),
    P(
        "teleop.timeout",
        0.5,
        "A takeover lasts while teleop/cmd_vel commands keep coming, each within this time of the last: the "
        "person's command goes out on cmd_vel through the same limits (the e-stop still zeroes it), the "
        "policy steps on and publishes its proposal on ~/proposed_cmd_vel, and ~/intervention says true",
        "s",
        (0.01, 10.0),
        setting="teleop_timeout",
    ),
    P(
        "teleop.require_enable",
        False,
        "A takeover also needs teleop/enable (std_msgs/Bool: a deadman button) true, its last message "
        "within teleop.timeout",
        setting="teleop_require_enable",
    ),
    P("teleop.stamped", False, "teleop/cmd_vel is TwistStamped instead of Twist", read_only=True),
    P(
        "adaptation.enabled",
        False,
        "Adapt the command readout toward teacher/cmd_vel by recursive least squares",
        setting="adaptation_enabled",
    ),
    P(
        "adaptation.forgetting",
        0.995,
        "RLS forgetting factor (1 = never forget)",
        "",
        (0.5, 1.0),
        setting="adaptation_forgetting",
    ),
    P(
        "adaptation.max_step",
        0.05,
        "Largest change of one readout weight per update",
        "",
        (1e-6, 10.0),
        setting="adaptation_max_step",
    ),
)

BY_NAME = {p.name: p for p in PARAMETERS}
BY_SETTING = {p.setting: p for p in PARAMETERS if p.setting}
DEFAULTS = {p.name: p.default for p in PARAMETERS}


def setting_default(field: str):
    """The default of a Settings field, from the table."""
    return BY_SETTING[field].default


def check_settings(values: dict[str, Any]) -> None:
    """Check Settings fields (field name -> value) against the table's types and ranges."""
    for field, value in values.items():
        BY_SETTING[field].check(value)


def render_config() -> str:
    """config/controller.yaml as this table defines it."""
    lines = [
        f"# Defaults of the liquid controller node (node name {NODE_NAME}), written from the parameter",
        "# table in liquid_control/runtime/parameters.py by `python -m liquid_control.runtime.parameters",
        "# --write`: edit the table, not this file. Launch files pass it as the params file. Units are",
        f"# SI (REP 103). Keyed {SECTION}: it applies to the node in any namespace.",
        f"{SECTION}:",
        "  ros__parameters:",
    ]
    group = None
    for p in PARAMETERS:
        head, _, leaf = p.name.rpartition(".")
        indent = "    " + ("  " if head else "")
        if head and head != group:
            lines.append(f"    {head}:")
        group = head or None
        comment = (
            p.description
            + (f" Range [{p.range[0]:g}, {p.range[1]:g}]." if p.range else "")
            + (f" One of: {', '.join(p.choices)}." if p.choices else "")
            + (" Read-only." if p.read_only else "")
        )
        lines += [f"{indent}# {line}" for line in textwrap.wrap(comment, 100 - len(indent) - 2)]
        lines.append(f"{indent}{leaf}: {yaml.safe_dump(p.default, default_style=None).splitlines()[0]}")
    return "\n".join(lines) + "\n"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ROS names them: {"adaptation": {"enabled": x}} -> {"adaptation.enabled": x}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _key_pattern(key: str) -> re.Pattern:
    """A parameters file's node key as rcl matches it against a fully qualified node name: `/**`
    any number of namespace tokens (also none), `*` one token; a key without a leading slash is
    relative to the root."""
    key = "/" + key.lstrip("/")
    out = ""
    for token in key.split("/")[1:]:
        out += "(/[^/]+)*" if token == "**" else "/[^/]+" if token == "*" else "/" + re.escape(token)
    return re.compile(out)


def applies(key: str, namespace: str | None = "/") -> bool:
    """Whether a file's section `key` applies to our node in `namespace` (None: in some namespace,
    as offline tools read a file without knowing where it was launched)."""
    pattern = _key_pattern(key)
    if namespace is not None:
        ns = "/" + namespace.strip("/")
        return bool(pattern.fullmatch(f"{ns.rstrip('/')}/{NODE_NAME}"))
    last = key.rstrip("/").rsplit("/", 1)[-1]
    return last in (NODE_NAME, "*", "**")


def read_params(path: str | Path, namespace: str | None = None) -> dict[str, Any]:
    """The controller's parameters in a parameters file, flattened, from every section that applies
    to the node (see `applies`), merged in file order as rcl does. ValueError, naming the file, when
    it cannot be read or has no such section."""
    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except FileRefused as exc:
        raise ValueError(f"parameters file {path}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"parameters file {path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"parameters file {path}: not a mapping of node names to sections")
    merged: dict[str, Any] = {}
    found = False
    for key, section in data.items():
        if not (isinstance(key, str) and applies(key, namespace)):
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ValueError(f"parameters file {path}: section {key} has no ros__parameters mapping")
        found = True
        merged.update(flatten(section["ros__parameters"]))
    if not found:
        raise ValueError(f"parameters file {path}: no section for {NODE_NAME} (such as {SECTION}: ros__parameters:)")
    return merged


def settings_fields(params: dict[str, Any]) -> dict[str, Any]:
    """The Settings fields (as keyword arguments) among flattened parameters."""
    return {BY_NAME[name].setting: value for name, value in params.items() if name in BY_NAME and BY_NAME[name].setting}


def render_reference() -> str:
    """docs/parameters.md: the reference table of every parameter, as this table defines it."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "# Parameters of controller_node",
        "",
        "<!-- Written from the parameter table in liquid_control/runtime/parameters.py by",
        "     `python -m liquid_control.runtime.parameters --write`: edit the table, not this file. -->",
        "",
        f"The node is named `{NODE_NAME}`. Every parameter can be set at start (`-p name:=value`, or a",
        f"parameters file keyed `{SECTION}`, such as `config/controller.yaml`, which holds these defaults)",
        "and, unless read-only, at runtime with `ros2 param set`; a value outside its range or of another",
        "type is refused with the reason. Units are SI (REP 103).",
        "",
        "| parameter | default | range | description |",
        "|---|---|---|---|",
    ]
    for p in PARAMETERS:
        default = (
            "`" + (yaml.safe_dump(p.default, default_style=None).splitlines()[0] if p.default != "" else '""') + "`"
        )
        limits = (
            f"[{p.range[0]:g}, {p.range[1]:g}]"
            if p.range
            else ", ".join(f"`{c}`" for c in p.choices)
            if p.choices
            else ""
        )
        text = p.description + (" Read-only: set at start." if p.read_only else "")
        lines.append(f"| `{p.name}` | {cell(default)} | {limits} | {cell(text)} |")
    return "\n".join(lines) + "\n"


# What --write writes, from the table, relative to the repository root.
GENERATED = {"config/controller.yaml": render_config, "docs/parameters.md": render_reference}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        root = Path(__file__).resolve().parents[2]
        for rel, render in GENERATED.items():
            (root / rel).write_text(render())
            print(f"wrote {root / rel}")
    elif argv == ["--check"]:
        root = Path(__file__).resolve().parents[2]
        stale = [rel for rel, render in GENERATED.items() if (root / rel).read_text() != render()]
        for rel in stale:
            print(f"{rel} differs from the parameter table: python -m liquid_control.runtime.parameters --write")
        return 1 if stale else 0
    elif not argv:
        sys.stdout.write(render_config())
    else:
        print("usage: python -m liquid_control.runtime.parameters [--write | --check]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
