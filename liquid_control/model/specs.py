"""What a model file says about its model, as data: the network, the camera encoder, the sensor
inputs and their normalisation, the outputs and their units. The model file (modelfile.py) reads and
writes these; the policy (policy.py) is built from them. No torch module is built here except by
NetworkSpec.build.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..nets.registry import CELLS, net_type  # noqa: F401 - CELLS: the network types, each declared there

if TYPE_CHECKING:  # the networks (torch) only when one is built: the ONNX backend reads configs without torch
    from ..nets.base import StreamingModule

# The values a model may read of each sensor beside its camera, in the order of the arrays
# sensing.imu_to_array and odometry_to_array make of a message.
IMU_FIELDS = (
    "angular_velocity.x",
    "angular_velocity.y",
    "angular_velocity.z",
    "linear_acceleration.x",
    "linear_acceleration.y",
    "linear_acceleration.z",
    "orientation.roll",
    "orientation.pitch",
    "orientation.yaw",
)

# nav_msgs/Odometry's twist: the measured velocity of the base in its own frame (child_frame_id,
# REP 105), what every ROS base's odometry publishes (m/s, rad/s).
ODOM_FIELDS = ("twist.linear.x", "twist.linear.y", "twist.angular.z")

# The model's inputs take them in this order of sensors.
FIELDS = {"imu": IMU_FIELDS, "odom": ODOM_FIELDS}

FORMAT_VERSION = 1
METADATA_KEY = "liquid_control"

# What a model's config may ask for, checked before anything is built (check_sizes): sizes that
# cost memory are bounded by the weights the file holds, the rest by these constants.
MAX_MODEL_IMAGE_PIXELS = 1920 * 1080  # the encoder's input frame (its activations per frame)
MAX_ODE_UNFOLDS = 64  # LTC solver steps per network step (time per step)
MAX_LAYERS = 64  # backbone layers, hidden layers, encoder convolutions
# A wiring is built synapse by synapse (numpy matrices of units x (units + inputs)); every wired
# cell keeps masks or weights of about that size, so a real file holds at least a quarter of it.
WIRING_ENTRIES_PER_WEIGHT = 4


def _wiring_units(wiring: dict[str, Any]) -> Any:
    if "units" in wiring:
        return wiring["units"]
    return sum(
        _count(wiring.get(k, 0), f"wiring {k}", 0) for k in ("inter_neurons", "command_neurons", "motor_neurons")
    )


def _count(value: Any, what: str, low: int = 1, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} is {value}, outside [{low}, {high:g}]")
    return value


def check_sizes(config: ModelConfig, weights: int) -> None:
    """ValueError when the config asks for more than a file holding `weights` tensor elements can
    describe: every width (units, inputs, channels, hidden sizes) at most `weights`, a wiring's
    matrices at most WIRING_ENTRIES_PER_WEIGHT x `weights`, and the counts that cost time or
    memory per step (image size, ODE unfolds, layers) within the constants above. A real model
    passes by far; a small file that asks for a huge network is refused before anything is built."""
    net = config.network
    held = f"(the file holds {weights} weights)"
    inputs = _count(net.input_size, "network.input_size")
    widths = {"network.units": net.units} if net.units is not None else {}
    options = net.options
    for key in ("proj_size", "backbone_units", "channels", "modes"):
        if options.get(key) is not None:
            widths[f"network.options.{key}"] = options[key]
    hidden = options.get("hidden")
    if hidden is not None:
        if not isinstance(hidden, (list, tuple)) or len(hidden) > MAX_LAYERS:
            raise ValueError(f"network.options.hidden must be a list of at most {MAX_LAYERS} sizes")
        widths.update({f"network.options.hidden[{i}]": h for i, h in enumerate(hidden)})
    if options.get("backbone_layers") is not None:
        _count(options["backbone_layers"], "network.options.backbone_layers", 0, MAX_LAYERS)
    if options.get("ode_unfolds") is not None:
        _count(options["ode_unfolds"], "network.options.ode_unfolds", 1, MAX_ODE_UNFOLDS)
    if net.wiring is not None:
        if not isinstance(net.wiring, dict):
            raise ValueError("network.wiring must be a mapping")
        units = _count(_wiring_units(net.wiring), "the wiring's units")
        if units * (units + inputs) > WIRING_ENTRIES_PER_WEIGHT * weights:
            raise ValueError(
                f"its wiring of {units} units and {inputs} inputs needs {units * (units + inputs)} "
                f"synapse entries, far more than its weights describe {held}: not built"
            )
    encoder = config.encoder
    if encoder is not None:
        if not isinstance(encoder, dict):
            raise ValueError("encoder must be a mapping")
        width = _count(encoder.get("image_width", 1), "encoder.image_width")
        height = _count(encoder.get("image_height", 1), "encoder.image_height")
        if width * height > MAX_MODEL_IMAGE_PIXELS:
            raise ValueError(
                f"its camera encoder takes {width}x{height} frames, more than {MAX_MODEL_IMAGE_PIXELS} pixels"
            )
        channels = encoder.get("channels", ())
        if not isinstance(channels, (list, tuple)) or len(channels) > MAX_LAYERS:
            raise ValueError(f"encoder.channels must be a list of at most {MAX_LAYERS} sizes")
        widths.update({f"encoder.channels[{i}]": c for i, c in enumerate(channels)})
        if "camera_features" in encoder:
            widths["encoder.camera_features"] = encoder["camera_features"]
    widths["network.input_size"] = inputs
    for what, value in widths.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > weights:
            raise ValueError(f"{what} is {value}, more than its weights can describe {held}: not built")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"model file {path}: {problem}")
        self.path = str(path)
        self.problem = problem


def model_file(model: str | Path) -> Path:
    """A model path as users write it (a file, or package://<package>/<file>) as the file it
    names; ModelFileError for an empty path or a package or file that is not there."""
    from ..paths import resolve_model_path

    if not str(model).strip():
        raise ModelFileError(repr(str(model)), "the path is empty")
    try:
        path = resolve_model_path(model)
    except FileNotFoundError as exc:
        raise ModelFileError(model, str(exc)) from None
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if not path.is_file():
        raise ModelFileError(path, "not a regular file")
    return path


@dataclass(frozen=True)
class NetworkSpec:
    """The liquid core: cell type, input width, and either `units` (fully connected) or a wiring."""

    cell: str
    input_size: int
    units: int | None = None
    wiring: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"network.cell must be one of {CELLS}, got {self.cell!r}")
        if (self.units is None) == (self.wiring is None):
            raise ValueError("network needs exactly one of units (fully connected) or wiring")
        kind = net_type(self.cell)
        allowed = kind.options
        if not kind.wired and self.wiring is not None:
            raise ValueError(f"a {self.cell} core is fully connected: give units, not a wiring")
        unknown = set(self.options) - allowed
        if unknown:
            raise ValueError(f"unknown {self.cell} options {sorted(unknown)}; allowed: {sorted(allowed)}")

    def build(self) -> StreamingModule:
        from ..nets.registry import module_class

        return module_class(self.cell).from_config(
            self.input_size, self.cell, units=self.units, wiring=self.wiring, options=dict(self.options)
        )

    @classmethod
    def of(cls, model: StreamingModule) -> NetworkSpec:
        """The spec that rebuilds `model` (its wiring from constructor args and seed)."""
        return cls(input_size=model.input_size, **model.config())


def _strings(values: Any, what: str) -> None:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{what} must be a list of names, got {values!r}")


def _numbers(values: Any, what: str) -> None:
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{what} must be a list of numbers, got {values!r}")


@dataclass(frozen=True)
class SensorSpec:
    """What the network's inputs are and how raw sensor values are normalised into them.

    `features` names each input of the liquid core in order; `mean`/`std` normalise them
    ((raw - mean) / std). `image` (width, height, encoding) is set for camera models.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image: dict[str, Any] | None = None
    imu_fields: tuple[str, ...] = ()
    odom_fields: tuple[str, ...] = ()  # files from before odometry inputs have none

    def __post_init__(self) -> None:
        _strings(self.features, "sensors.features")
        _strings(self.imu_fields, "sensors.imu_fields")
        _strings(self.odom_fields, "sensors.odom_fields")
        _numbers(self.mean, "sensors.mean")
        _numbers(self.std, "sensors.std")
        n = len(self.features)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"sensors: mean and std need {n} entries (one per feature)")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError("sensors: every std must be finite and positive")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError("sensors: every mean must be finite")


@dataclass(frozen=True)
class OutputSpec:
    """What each network output means: command field, unit, and the limits it is clipped to."""

    fields: tuple[str, ...]
    units: tuple[str, ...]
    limits: tuple[tuple[float, float], ...]
    scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _strings(self.fields, "outputs.fields")
        _strings(self.units, "outputs.units")
        _numbers(self.scale, "outputs.scale")
        for limit in self.limits:
            if not isinstance(limit, (list, tuple)) or len(limit) != 2:
                raise ValueError(f"outputs.limits must be [min, max] pairs, got {limit!r}")
            _numbers(limit, "outputs.limits")
        n = len(self.fields)
        if len(self.units) != n or len(self.limits) != n or (self.scale and len(self.scale) != n):
            raise ValueError(f"outputs: units, limits (and scale) need {n} entries (one per field)")
        for name, (lo, hi) in zip(self.fields, self.limits, strict=True):
            if not lo <= hi:
                raise ValueError(f"outputs: limits of {name} must have min <= max, got [{lo}, {hi}]")


@dataclass(frozen=True)
class ModelConfig:
    network: NetworkSpec
    sensors: SensorSpec
    outputs: OutputSpec
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Set for a LiquidPolicy (camera encoder + core + readout); None for a bare liquid core.
    encoder: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            net, sen, out = data["network"], data["sensors"], data["outputs"]
            return cls(
                network=NetworkSpec(**net),
                sensors=SensorSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in sen.items()}),
                outputs=OutputSpec(
                    fields=tuple(out["fields"]),
                    units=tuple(out["units"]),
                    limits=tuple(tuple(x) for x in out["limits"]),
                    scale=tuple(out.get("scale", ())),
                ),
                provenance=dict(data.get("provenance", {})),
                format_version=int(data["format_version"]),
                encoder=data.get("encoder"),
            )
        except KeyError as exc:
            raise ValueError(f"config lacks the field {exc.args[0]!r}") from None
        except (TypeError, AttributeError) as exc:  # a section of another shape: a number, a list
            raise ValueError(f"config has a malformed section: {exc}") from None


@dataclass(frozen=True)
class EncoderSpec:
    """Camera encoder shape, and which other sensors' fields feed the core: IMU fields (names from
    sensing.IMU_FIELDS) and odometry fields (sensing.ODOM_FIELDS). The camera is always read; a
    model with neither is camera-only. The core's inputs are the camera features, then the IMU
    fields, then the odometry fields."""

    image_width: int = 64
    image_height: int = 48
    channels: tuple[int, ...] = (12, 16, 24)
    camera_features: int = 12
    imu_fields: tuple[str, ...] = ("angular_velocity.z", "linear_acceleration.x", "linear_acceleration.y")
    image_mean: float = 0.5
    image_std: float = 0.25
    # "frame": each frame is normalised by its own mean and spread (blind to global brightness and
    # contrast, as under other lighting); "fixed": by image_mean/image_std (the only form before
    # image_norm existed; model files without the key load as "fixed").
    image_norm: str = "frame"
    odom_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_norm not in ("fixed", "frame"):
            raise ValueError(f"image_norm must be 'fixed' or 'frame', got {self.image_norm!r}")
        for kind, fields in self.fields.items():
            unknown = [f for f in fields if f not in FIELDS[kind]]
            if unknown or len(set(fields)) != len(fields):
                raise ValueError(
                    f"{kind}_fields {list(fields)}: each once, from {list(FIELDS[kind])}"
                    + (f" ({unknown} unknown)" if unknown else "")
                )

    @classmethod
    def from_config(cls, config: ModelConfig) -> tuple[EncoderSpec, tuple[float, ...], tuple[float, ...]]:
        """The spec a model file's config holds (config.encoder; files from before image_norm are
        "fixed"), and the mean and std of its held fields (the last of config.sensors')."""
        data = {"image_norm": "fixed", **(config.encoder or {})}
        spec = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        n = len(spec.held_fields)
        return spec, tuple(config.sensors.mean[-n:]) if n else (), tuple(config.sensors.std[-n:]) if n else ()

    @property
    def fields(self) -> dict[str, tuple[str, ...]]:
        """The fields read of each sensor beside the camera, in input order ("imu", "odom")."""
        return {"imu": tuple(self.imu_fields), "odom": tuple(self.odom_fields)}

    @property
    def sensors(self) -> tuple[str, ...]:
        """The sensors this model reads: "camera", then "imu" and "odom" where it reads fields of them."""
        return ("camera",) + tuple(kind for kind, fields in self.fields.items() if fields)

    @property
    def held_fields(self) -> tuple[str, ...]:
        """Every field beside the camera's features, in the core's input order."""
        return tuple(self.imu_fields) + tuple(self.odom_fields)

    @property
    def core_inputs(self) -> int:
        return self.camera_features + len(self.held_fields)
