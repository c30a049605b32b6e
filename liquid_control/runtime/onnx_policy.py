"""The ONNX Runtime backend: a policy exported by `liquid-control export` (model/export.py) run
without torch (numpy, numba and onnxruntime only). `load_onnx_policy(path)` gives an object that
LiquidController takes in place of a LiquidPolicy, so the controller's time rules, limits, watchdog,
e-stop and adaptation are the same code for both backends, and so is the running step around the
encoder (step.RunningStep).

ONNX Runtime runs the camera encoder for each camera frame (uint8, as sensing.model_frame makes it):
the encoder-only graph that export puts in the metadata, or for a file without one the whole graph,
keeping its `camera_features` (ONNX Runtime computes every output, the core's too: about 30 us more
per frame). The liquid state is stepped by the same fused numba kernel as in the torch runtime,
rebuilt from the arrays the export put in the file's metadata (a graph call costs more than a whole
liquid step).
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np

from ..model.specs import METADATA_KEY, EncoderSpec, ModelConfig, ModelFileError, model_file
from ..model.step import RunningStep
from ..nets.stream import STREAMED_KINDS, FusedStep

READOUT_KEY = f"{METADATA_KEY}.readout"
CORE_KEY = f"{METADATA_KEY}.core"
ENCODER_KEY = f"{METADATA_KEY}.encoder"  # base64 of the camera encoder alone as an ONNX graph


def open_session(model: Path | bytes):
    """An ONNX Runtime session for batch-1 streaming on the CPU, from a file or the bytes of a graph
    (the torch backend's camera encoder, policy.PolicyStep)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # batch 1 at sensor rate: threads cost more than they give
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class FrameEncoder:
    """A camera-encoder graph (one uint8 frame in, one feature vector out) run one frame at a time
    through an I/O binding: the input and output live in buffers bound once, so a call copies the
    frame in and the features out and builds no ONNX Runtime values around them. Measured a frame at a
    time 33 ms apart (30 Hz, the caches cold in between; alternating with session.run in one process,
    300 each, both cores busy): p50 402 us against 435 us for session.run({"frame": ...}). Thread-safe (one run at a time)."""

    def __init__(self, session) -> None:
        (frame,), (features,) = session.get_inputs(), session.get_outputs()
        if frame.type != "tensor(uint8)" or not all(isinstance(n, int) for n in [*frame.shape, *features.shape]):
            raise ValueError(f"not a fixed-size uint8 encoder graph: {frame.name} {frame.type} {frame.shape}")
        self.session = session
        self._input = np.zeros(frame.shape, np.uint8)
        self._output = np.zeros(features.shape, np.float32)
        self._binding = session.io_binding()
        self._binding.bind_cpu_input(frame.name, self._input)
        self._binding.bind_output(features.name, "cpu", 0, np.float32, list(features.shape), self._output.ctypes.data)
        self._lock = threading.Lock()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Features (float64) of an (h, w, 3) uint8 frame at the graph's size."""
        with self._lock:
            self._input[0] = frame
            self.session.run_with_iobinding(self._binding)
            return self._output[0].astype(np.float64)


class OnnxStep(RunningStep):
    """The running form of an exported policy, with PolicyStep's interface."""

    def __init__(self, policy: OnnxPolicy) -> None:
        super().__init__(
            policy.spec,
            FusedStep.from_arrays(policy.core_arrays),
            policy.state_size,
            policy.readout_w,
            policy.readout_b,
            policy.imu_mean,
            policy.imu_std,
        )
        self._encoder = FrameEncoder(policy.encoder) if policy.encoder is not None else None
        # Without an encoder-only graph: the whole graph's other inputs while it encodes a frame
        # (its core outputs are not used).
        self._session = policy.session
        self._feed = {
            "imu": np.zeros(len(policy.spec.held_fields)),
            "dt": np.full(1, 0.005),
            "state": np.zeros(self.core.state_len),
        }
        self._wanted = ["camera_features"]

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        if self._encoder is not None:
            return self._encoder(frame)
        return self._session.run(self._wanted, {"frame": frame[None], **self._feed})[0]


class OnnxPolicy:
    """An exported policy: its config, encoder spec, readout, sensor normalisation and fused core."""

    def __init__(
        self, path: Path, session, config: ModelConfig, readout: dict, core: dict, encoder_session=None
    ) -> None:
        self.path = path
        self.session = session  # one per file: ONNX Runtime sessions run concurrently, and building one costs
        self.encoder = encoder_session  # the encoder-only graph's, when the file has one
        self.config = config
        self.spec, mean, std = EncoderSpec.from_config(config)
        self.imu_mean = np.array(mean, dtype=np.float64)  # of the IMU's and the odometry's fields
        self.imu_std = np.array(std, dtype=np.float64)
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
        session = open_session(path)
        meta = session.get_modelmeta().custom_metadata_map
        frame_type = {i.name: i.type for i in session.get_inputs()}.get("frame")
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds for a bad file
        raise ModelFileError(path, f"not a readable ONNX file: {type(exc).__name__}: {exc}") from None
    if METADATA_KEY not in meta or READOUT_KEY not in meta:
        raise ModelFileError(path, "no liquid_control config in its metadata: not written by liquid-control export")
    if frame_type != "tensor(uint8)":
        raise ModelFileError(
            path,
            f"its frame input is {frame_type}, not the uint8 frame of this version's export "
            "(written by an older liquid_control): export the model again",
        )
    if CORE_KEY not in meta:
        raise ModelFileError(
            path,
            "its core's streaming kernel is not in the file (an LSTM or GRU core exported "
            "by an older liquid_control): export the model again",
        )
    kind = json.loads(meta[CORE_KEY]).get("kind")
    if kind not in STREAMED_KINDS:
        raise ModelFileError(
            path,
            f"its {kind} core has no torch-free streaming kernel in this liquid_control "
            f"(it streams {', '.join(STREAMED_KINDS)} cores): run the .safetensors model "
            "with backend torch, or a newer liquid_control",
        )
    try:
        config = ModelConfig.from_dict(json.loads(meta[METADATA_KEY]))
        encoder = open_session(base64.b64decode(meta[ENCODER_KEY])) if ENCODER_KEY in meta else None
        policy = OnnxPolicy(path, session, config, json.loads(meta[READOUT_KEY]), json.loads(meta[CORE_KEY]), encoder)
    except Exception as exc:  # noqa: BLE001 - any inconsistency of the file is the file's
        raise ModelFileError(path, f"cannot be used: {type(exc).__name__}: {exc}") from None
    return policy, config
