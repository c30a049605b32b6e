"""The ONNX Runtime backend: a policy exported by `liquid-control export` (runtime/export.py) run
without torch (numpy, numba and onnxruntime only). `load_onnx_policy(path)` gives an object that
LiquidController takes in place of a LiquidPolicy, so the controller's time rules, limits, watchdog,
e-stop and adaptation are the same code for both backends, and so is the running step around the
encoder (step.RunningStep).

ONNX Runtime runs the exported graph for each camera frame and keeps its `camera_features`; the
liquid state is stepped by the same fused numba kernel as in the torch runtime, rebuilt from the
arrays the export put in the file's metadata (a graph call costs more than a whole liquid step).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..nets.fused import FusedStep
from .sensing import resize
from .specs import METADATA_KEY, EncoderSpec, ModelConfig, ModelFileError, model_file
from .step import RunningStep

READOUT_KEY = f"{METADATA_KEY}.readout"
CORE_KEY = f"{METADATA_KEY}.core"


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # batch 1 at sensor rate: threads cost more than they give
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxStep(RunningStep):
    """The running form of an exported policy, with PolicyStep's interface."""

    def __init__(self, policy: OnnxPolicy) -> None:
        super().__init__(policy.spec, FusedStep.from_arrays(policy.core_arrays), policy.state_size,
                         policy.readout_w, policy.readout_b, policy.imu_mean, policy.imu_std)
        self._session = policy.session
        # The graph's other inputs while it encodes a frame (its core outputs are not used).
        self._feed = {"imu": np.zeros(len(policy.spec.imu_fields)), "dt": np.full(1, 0.005),
                      "state": np.zeros(self.core.state_len)}
        self._wanted = ["camera_features"]

    def encode_image(self, rgb: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(resize(rgb, self.image_width, self.image_height), dtype=np.float32)[None]
        return self._session.run(self._wanted, {"frame": frame, **self._feed})[0]


class OnnxPolicy:
    """An exported policy: its config, encoder spec, readout, IMU normalisation and fused core."""

    def __init__(self, path: Path, session, config: ModelConfig, readout: dict, core: dict) -> None:
        self.path = path
        self.session = session  # one per file: ONNX Runtime sessions run concurrently, and building one costs
        self.config = config
        encoder = {"image_norm": "fixed", **(config.encoder or {})}
        self.spec = EncoderSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in encoder.items()})
        n_imu = len(self.spec.imu_fields)
        self.imu_mean = np.array(config.sensors.mean[-n_imu:] if n_imu else [], dtype=np.float64)
        self.imu_std = np.array(config.sensors.std[-n_imu:] if n_imu else [], dtype=np.float64)
        self.readout_w = np.array(readout["weight"], dtype=np.float64)
        self.readout_b = np.array(readout["bias"], dtype=np.float64)
        self.outputs = self.readout_b.size
        self.state_size = self.readout_w.shape[1]
        self.core_arrays = core

    def streamer(self) -> OnnxStep:
        return OnnxStep(self)


def load_onnx_policy(path: str | Path) -> tuple[OnnxPolicy, ModelConfig]:
    """(policy, config) of a file written by `liquid-control export`; ModelFileError naming the file
    for anything else (not ONNX, no liquid_control config, a core without a fused kernel)."""
    path = model_file(path)
    try:
        session = _session(path)
        meta = session.get_modelmeta().custom_metadata_map
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds for a bad file
        raise ModelFileError(path, f"not a readable ONNX file: {type(exc).__name__}: {exc}") from None
    if METADATA_KEY not in meta or READOUT_KEY not in meta:
        raise ModelFileError(path, "no liquid_control config in its metadata: not written by liquid-control export")
    if CORE_KEY not in meta:
        raise ModelFileError(path, "its core has no fused kernel for the onnx backend (LSTM and GRU cores: "
                                   "run the .safetensors model with backend torch)")
    try:
        config = ModelConfig.from_dict(json.loads(meta[METADATA_KEY]))
        policy = OnnxPolicy(path, session, config, json.loads(meta[READOUT_KEY]), json.loads(meta[CORE_KEY]))
    except Exception as exc:  # noqa: BLE001 - any inconsistency of the file is the file's
        raise ModelFileError(path, f"cannot be used: {type(exc).__name__}: {exc}") from None
    return policy, config
