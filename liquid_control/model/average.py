"""`liquid-control average A B ... --output OUT`: several fine-tunes of one model averaged weight by
weight into one model file (a "model soup": Wortsman et al. 2022, "Model soups: averaging weights
of multiple fine-tuned models improves accuracy without increasing inference time").

Fine-tunes that start from the same model and see the same data usually stay in one basin of the
loss, where the mean of their weights is a model of its own that keeps what each learned. The
shipped lane-keeping policy is such a mean: two fine-tunes with different augmentation, each
robust to shifts the other is not (models/README.md).

Only models that differ in their weights alone can be averaged: the same network, wiring, camera
encoder, inputs, normalisation and outputs, and the same robot. Floating-point tensors are
averaged (in float64, then stored in their own type); any other tensor must be equal in all of
them. Nothing is unpickled: the files are safetensors, read as load_model reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ..paths import resolve_model_path
from .modelfile import load_model, save_model
from .specs import ModelFileError

SHARED = ("architecture", "robot", "labels", "window")  # kept where every input says the same


def _what_must_match(config) -> dict:
    data = json.loads(config.to_json())
    data.pop("provenance")
    data["robot"] = config.provenance.get("robot")
    return data


def average_models(models: list[str], output: str | Path) -> dict:
    """Write the mean of `models`' weights to `output`; its summary. ModelFileError (naming the
    file and what differs) when they cannot be averaged; FileExistsError for an output that is
    one of the inputs."""
    if len(models) < 2:
        raise ValueError("average needs two models or more")
    paths = [resolve_model_path(m) for m in models]
    output = Path(output)
    if any(output.resolve() == p.resolve() for p in paths if p.exists()):
        raise FileExistsError(f"{output}: the output is one of the models averaged; write another file")
    loaded = [load_model(p) for p in paths]
    first, config = loaded[0]
    want = _what_must_match(config)
    for path, (_, other) in zip(paths[1:], loaded[1:], strict=True):
        got = _what_must_match(other)
        if got != want:
            differs = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            raise ModelFileError(
                path,
                f"cannot be averaged with {paths[0]}: its {', '.join(differs)} differ "
                "(average fine-tunes of one model: the same network, inputs, normalisation, outputs and robot)",
            )
    states = [model.state_dict() for model, _ in loaded]
    mean, spread = {}, 0.0
    for name, tensor in states[0].items():
        values = [s[name] for s in states]
        if any(v.shape != tensor.shape or v.dtype != tensor.dtype for v in values):
            raise ModelFileError(paths[0], f"cannot average: tensor {name} differs in shape or type between the models")
        if tensor.is_floating_point():
            stacked = torch.stack([v.to(torch.float64) for v in values])
            mean[name] = stacked.mean(dim=0).to(tensor.dtype)
            spread = max(
                spread, float((stacked.amax(dim=0) - stacked.amin(dim=0)).abs().max()) if tensor.numel() else 0.0
            )
        elif all(torch.equal(v, tensor) for v in values):
            mean[name] = tensor
        else:
            raise ModelFileError(
                paths[0], f"cannot average: tensor {name} ({tensor.dtype}) is not the same in every model"
            )
    first.load_state_dict(mean)
    inputs = [
        {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "provenance": other.provenance}
        for path, (_, other) in zip(paths, loaded, strict=True)
    ]
    # What every input's provenance says alike about the model itself (not about its run) stays.
    shared = {
        key: config.provenance[key]
        for key in SHARED
        if key in config.provenance and all(other.provenance.get(key) == config.provenance[key] for _, other in loaded)
    }
    provenance = {"trainer": "liquid-control average", **shared, "averaged": inputs}
    saved = save_model(output, first, config.sensors, config.outputs, provenance)
    assert dataclasses.replace(saved, provenance={}) == dataclasses.replace(config, provenance={})
    return {
        "model": str(output),
        "averaged": [str(p) for p in paths],
        "tensors": len(mean),
        "largest_difference": spread,
    }
