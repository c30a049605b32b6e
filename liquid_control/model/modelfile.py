"""Model files: one `.safetensors` file holds the weights and, in its metadata, a JSON config
(format version, architecture, sensor spec, output spec, provenance), so a model always travels with
its preprocessing and units. Loading never unpickles: safetensors stores raw tensors only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..nets.base import StreamingModule
from .policy import LiquidPolicy
from .specs import (
    FORMAT_VERSION,
    METADATA_KEY,
    EncoderSpec,
    ModelConfig,
    ModelFileError,
    NetworkSpec,
    OutputSpec,
    SensorSpec,
    check_sizes,
    model_file,
)


def save_model(
    path: str | Path,
    model: StreamingModule | LiquidPolicy,
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
        raise ValueError(f"the network takes {n_inputs} inputs but sensors.features names {len(sensors.features)}")
    if n_outputs != len(outputs.fields):
        raise ValueError(f"the network has {n_outputs} outputs but outputs.fields names {len(outputs.fields)}")
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


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape as the file's header lists it, reading no weights (safetensors checks
    that every tensor's bytes lie inside the file, so these shapes are backed by the file's size)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None


def check_model_file(model: str | Path) -> ModelConfig:
    """The config of a model file, checked as far as the header allows without building anything:
    the path (a regular file), the config, and the network's size against the weights the file
    holds (specs.check_sizes). Costs what the header costs; ModelFileError naming the file."""
    path = model_file(model)
    config = read_config(path)
    shapes = tensor_shapes(path)
    try:
        check_sizes(config, sum(math.prod(s) for s in shapes.values()))
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from None
    return config


def _build(config: ModelConfig) -> StreamingModule | LiquidPolicy:
    model = config.network.build()
    if config.encoder is not None:
        spec, mean, std = EncoderSpec.from_config(config)
        model = LiquidPolicy(spec, model, outputs=len(config.outputs.fields), imu_mean=mean, imu_std=std)
    return model


def _check_weights_fit(path: Path, expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise ModelFileError(
            path, f"weights do not match the config's network: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for key, ref in expected.items():
        if shapes[key] != ref:
            raise ModelFileError(path, f"weight {key} has shape {shapes[key]}, the config's network needs {ref}")


def load_model(path: str | Path) -> tuple[StreamingModule | LiquidPolicy, ModelConfig]:
    """Build what the config describes (a LiquidPolicy when it has an encoder, else a bare liquid
    core) and load its weights; eval mode. What it costs follows the file's size, never a number
    written in it: the sizes are checked against the header first (check_model_file), then the
    network is built on torch's meta device (shapes, no memory) and its tensors compared with the
    file's before the real one is built."""
    path = Path(path)
    config = check_model_file(path)
    try:
        with torch.device("meta"):
            skeleton = _build(config)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError (and more) on impossible shapes
        raise ModelFileError(
            path, f"cannot build the network its config describes: {type(exc).__name__}: {exc}"
        ) from None
    _check_weights_fit(path, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, tensor_shapes(path))
    del skeleton
    try:
        model = _build(config)
    except Exception as exc:  # noqa: BLE001 - as above
        raise ModelFileError(
            path, f"cannot build the network its config describes: {type(exc).__name__}: {exc}"
        ) from None
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"cannot read its weights (truncated or corrupt?): {exc}") from None
    expected = model.state_dict()
    _check_weights_fit(
        path, {k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in tensors.items()}
    )
    for key, ref in expected.items():
        got = tensors[key]
        if not torch.isfinite(got).all():
            raise ModelFileError(path, f"weight {key} holds NaN or Inf")
        if key.endswith("sparsity_mask") and not torch.equal(got.to(ref.dtype), ref):
            raise ModelFileError(path, f"{key} differs from the wiring in the config (wrong seed or wiring?)")
    try:
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    except Exception as exc:  # noqa: BLE001 - whatever torch refuses, the file is at fault
        raise ModelFileError(path, f"cannot load its weights into the network: {exc}") from None
    return model.eval(), config


def parameter_counts(model: StreamingModule | LiquidPolicy) -> dict[str, int]:
    """Trainable parameters, and how many of them are live synapses (weights a sparsity mask
    zeroes never act, so a wired network is smaller than its dense tensors). For a policy, also
    the parts: camera encoder, liquid core, readout."""
    if isinstance(model, LiquidPolicy):
        parts = {
            name: sum(p.numel() for p in getattr(model, name).parameters() if p.requires_grad)
            for name in ("camera", "core", "readout")
        }
        core = parameter_counts(model.core)
        total = sum(parts.values())
        return {
            "trainable": total,
            "effective": total - (core["trainable"] - core["effective"]),
            "camera_encoder": parts["camera"],
            "liquid_core": parts["core"],
            "liquid_core_effective": core["effective"],
            "readout": parts["readout"],
        }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    masked_out = model.masked_weights()
    return {"trainable": trainable, "effective": trainable - masked_out}


def load_policy(model: str | Path) -> tuple[LiquidPolicy, ModelConfig]:
    """The (policy, config) that the node, replay and evaluation run, from a model path as users
    write it (a file, or package://<package>/<file>). ModelFileError for an empty path, a file not
    found, one that cannot be loaded, or a bare liquid core (it has no camera encoder to run)."""
    path = model_file(model)
    policy, config = load_model(path)
    if not isinstance(policy, LiquidPolicy):
        raise ModelFileError(path, "holds a bare liquid core; running needs a policy with a camera encoder")
    return policy, config
