"""Model files: one `.safetensors` file holds the weights and, in its metadata, a JSON config
(format version, architecture, sensor spec, output spec, provenance), so a model always travels with
its preprocessing and units. Loading never unpickles: safetensors stores raw tensors only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .nets import LTC, CfC, wiring_from_config, wiring_to_config
from .nets.base import LiquidRNN
from .nets.recurrent import CELLS as RECURRENT_CELLS
from .nets.recurrent import Recurrent
from .policy import EncoderSpec, LiquidPolicy

FORMAT_VERSION = 1
METADATA_KEY = "liquid_control"
CELLS = ("cfc", "ltc", "lstm", "gru")
CFC_OPTIONS = {"proj_size", "mixed_memory", "mode", "activation", "backbone_units",
               "backbone_layers", "backbone_dropout"}
LTC_OPTIONS = {"mixed_memory", "input_mapping", "output_mapping", "ode_unfolds", "epsilon",
               "implicit_param_constraints"}
RECURRENT_OPTIONS = {"time_input"}


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"model file {path}: {problem}")
        self.path = str(path)
        self.problem = problem


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
        allowed = {"cfc": CFC_OPTIONS, "ltc": LTC_OPTIONS}.get(self.cell, RECURRENT_OPTIONS)
        if self.cell in RECURRENT_CELLS and self.wiring is not None:
            raise ValueError(f"a {self.cell} core is fully connected: give units, not a wiring")
        unknown = set(self.options) - allowed
        if unknown:
            raise ValueError(f"unknown {self.cell} options {sorted(unknown)}; allowed: {sorted(allowed)}")

    def build(self) -> LiquidRNN | Recurrent:
        if self.cell in RECURRENT_CELLS:
            return Recurrent(self.input_size, self.units, cell=self.cell, **self.options)
        units = wiring_from_config(self.wiring) if self.wiring is not None else self.units
        cls = CfC if self.cell == "cfc" else LTC
        return cls(self.input_size, units, **self.options)

    @classmethod
    def of(cls, model: LiquidRNN | Recurrent) -> NetworkSpec:
        """The spec that rebuilds `model` (its wiring from constructor args and seed)."""
        if isinstance(model, Recurrent):
            return cls(model.cell, model.input_size, units=model.state_size,
                       options={"time_input": model.time_input})
        cell = "cfc" if isinstance(model, CfC) else "ltc"
        if cell == "cfc":
            options = {"mode": model.mode, "mixed_memory": model.use_mixed}
            if model.proj_size is not None:
                options["proj_size"] = model.proj_size
            if not model.wired:
                options.update(activation=model.activation, backbone_units=model.backbone_units,
                               backbone_layers=model.backbone_layers,
                               backbone_dropout=model.backbone_dropout)
        else:
            c = model.rnn_cell
            options = {"mixed_memory": model.use_mixed, "input_mapping": c._input_mapping,
                       "output_mapping": c._output_mapping, "ode_unfolds": c._ode_unfolds,
                       "epsilon": c._epsilon,
                       "implicit_param_constraints": c._implicit_param_constraints}
        if model.wired:
            return cls(cell, model.input_size, wiring=wiring_to_config(model.wiring), options=options)
        return cls(cell, model.input_size, units=model.state_size, options=options)


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

    def __post_init__(self) -> None:
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
                    fields=tuple(out["fields"]), units=tuple(out["units"]),
                    limits=tuple(tuple(x) for x in out["limits"]), scale=tuple(out.get("scale", ())),
                ),
                provenance=dict(data.get("provenance", {})),
                format_version=int(data["format_version"]),
                encoder=data.get("encoder"),
            )
        except KeyError as exc:
            raise ValueError(f"config lacks the field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"config has a malformed section: {exc}") from None


def save_model(
    path: str | Path,
    model: LiquidRNN | LiquidPolicy,
    sensors: SensorSpec,
    outputs: OutputSpec,
    provenance: dict[str, Any] | None = None,
) -> ModelConfig:
    """Write a liquid core or a LiquidPolicy, with its config (derived from the model), to `path`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model files end in .safetensors, got {path}")
    if isinstance(model, LiquidPolicy):
        core, n_inputs, n_outputs = model.core, model.spec.core_inputs, model.outputs
        encoder = json.loads(json.dumps(dataclasses.asdict(model.spec)))
        derived = model.sensor_spec(image_encoding=(sensors.image or {}).get("encoding", "rgb8"))
        if sensors != derived:
            raise ValueError("a policy's sensors must be policy.sensor_spec(): its normalisation lives in its weights")
    else:
        core, encoder, n_inputs, n_outputs = model, None, model.input_size, model.out_features
    config = ModelConfig(NetworkSpec.of(core), sensors, outputs, dict(provenance or {}), encoder=encoder)
    if n_inputs != len(sensors.features):
        raise ValueError(
            f"the network takes {n_inputs} inputs but sensors.features names {len(sensors.features)}"
        )
    if n_outputs != len(outputs.fields):
        raise ValueError(
            f"the network has {n_outputs} outputs but outputs.fields names {len(outputs.fields)}"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: config.to_json()})
    tmp.replace(path)  # never leave a half-written model where a node could load it
    return config


def read_config(path: str | Path) -> ModelConfig:
    """The config of a model file, without building the network."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if not path.is_file():
        raise ModelFileError(path, "not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if METADATA_KEY not in metadata:
        raise ModelFileError(path, f"no '{METADATA_KEY}' config in its metadata: not a liquid_control model")
    try:
        data = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, f"config is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFileError(path, "config is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {version!r} is not supported (this liquid_control reads {FORMAT_VERSION})"
        )
    try:
        return ModelConfig.from_dict(data)
    except ValueError as exc:
        raise ModelFileError(path, f"invalid config: {exc}") from None


def load_model(path: str | Path) -> tuple[LiquidRNN | LiquidPolicy, ModelConfig]:
    """Build what the config describes (a LiquidPolicy when it has an encoder, else a bare liquid
    core) and load its weights; eval mode."""
    path = Path(path)
    config = read_config(path)
    try:
        model = config.network.build()
        if config.encoder is not None:
            encoder = {"image_norm": "fixed", **config.encoder}  # files from before image_norm
            spec = EncoderSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in encoder.items()})
            n_imu = len(spec.imu_fields)
            model = LiquidPolicy(spec, model, outputs=len(config.outputs.fields),
                                 imu_mean=config.sensors.mean[-n_imu:] if n_imu else (),
                                 imu_std=config.sensors.std[-n_imu:] if n_imu else ())
    except (ValueError, TypeError) as exc:
        raise ModelFileError(path, f"cannot build the network its config describes: {exc}") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"cannot read its weights (truncated or corrupt?): {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(
            path, f"weights do not match the config's network: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for key, ref in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise ModelFileError(
                path, f"weight {key} has shape {tuple(got.shape)}, the config's network needs {tuple(ref.shape)}"
            )
        if not torch.isfinite(got).all():
            raise ModelFileError(path, f"weight {key} holds NaN or Inf")
        if key.endswith("sparsity_mask") and not torch.equal(got.to(ref.dtype), ref):
            raise ModelFileError(path, f"{key} differs from the wiring in the config (wrong seed or wiring?)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.eval(), config


def parameter_counts(model: LiquidRNN | LiquidPolicy) -> dict[str, int]:
    """Trainable parameters, and how many of them are live synapses (weights a sparsity mask
    zeroes never act, so a wired network is smaller than its dense tensors). For a policy, also
    the parts: camera encoder, liquid core, readout."""
    if isinstance(model, LiquidPolicy):
        parts = {name: sum(p.numel() for p in getattr(model, name).parameters() if p.requires_grad)
                 for name in ("camera", "core", "readout")}
        core = parameter_counts(model.core)
        total = sum(parts.values())
        return {"trainable": total, "effective": total - (core["trainable"] - core["effective"]),
                "camera_encoder": parts["camera"], "liquid_core": parts["core"],
                "liquid_core_effective": core["effective"], "readout": parts["readout"]}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    masked_out = 0
    for name, mask in model.state_dict().items():
        if not name.endswith("sparsity_mask"):
            continue
        zeros = int((mask == 0).sum())
        # CfC masks its value heads (ff1, and ff2 unless pure); LTC masks w, mu, sigma and erev.
        if isinstance(model, CfC):
            masked_out += zeros * (1 if model.mode == "pure" else 2)
        else:
            masked_out += zeros * 4
    return {"trainable": trainable, "effective": trainable - masked_out}
