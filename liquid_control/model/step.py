"""A policy's running form without torch: held inputs, the fused core, the readout, and the
compiled pieces around them (staging an IMU or odometry sample into the network's normalised
inputs, the linear readout with its finite check). The torch policy (policy.PolicyStep) and the ONNX Runtime backend
(onnx_policy.OnnxStep) differ only in their camera encoder (`encode_frame`); both take the frame as
sensing.model_frame makes it, the conversion training uses too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from ..runtime.sensing import model_frame
from .specs import FIELDS, EncoderSpec

if TYPE_CHECKING:
    from ..nets.stream import FusedStep


@numba.njit(cache=True)
def _stage(values, index, mean, std, out):  # pragma: no cover - compiled
    for k in range(index.size):
        if not np.isfinite(values[index[k]]):
            return False
    for k in range(index.size):
        out[k] = (values[index[k]] - mean[k]) / std[k]
    return True


@numba.njit(cache=True)
def _readout(w, b, state, n, out):  # pragma: no cover - compiled
    """out = w @ state[:n] + b; True when the whole state and out are finite."""
    finite = True
    for i in range(state.size):
        if not np.isfinite(state[i]):
            finite = False
    for o in range(out.size):
        acc = b[o]
        for j in range(n):
            acc += w[o, j] * state[j]
        out[o] = acc
        if not np.isfinite(acc):
            finite = False
    return finite


class RunningStep:
    """A policy in its running form, batch 1: the core as a fused kernel, the readout and the
    normalisation of the IMU's and the odometry's fields as arrays, the inputs held in place. Subclasses give `encode_frame` (ONNX Runtime
    or torch's frozen encoder in policy.PolicyStep, ONNX Runtime in onnx_policy.OnnxStep)."""

    def __init__(
        self,
        spec: EncoderSpec,
        core: FusedStep,
        state_size: int,
        readout_w: np.ndarray,
        readout_b: np.ndarray,
        imu_mean: np.ndarray,
        imu_std: np.ndarray,
    ) -> None:
        self.image_width, self.image_height = spec.image_width, spec.image_height
        self.core = core
        self.readout_w = np.ascontiguousarray(readout_w, dtype=np.float64)
        self.readout_b = np.ascontiguousarray(readout_b, dtype=np.float64)
        self.imu_mean = np.ascontiguousarray(imu_mean, dtype=np.float64)
        self.imu_std = np.ascontiguousarray(imu_std, dtype=np.float64)
        self.camera_features = spec.camera_features
        self.inputs = np.zeros(spec.core_inputs, dtype=np.float64)
        self.state_size = state_size
        self.command = np.zeros(self.readout_b.size, dtype=np.float64)
        self.sensors = spec.sensors
        # Per sensor beside the camera: which values of its array it reads, where they go in the
        # inputs, their normalisation and a staging buffer.
        self._staging: dict[str, tuple[np.ndarray, slice, np.ndarray, np.ndarray, np.ndarray]] = {}
        start = self.camera_features
        for kind, fields in spec.fields.items():
            at = slice(start, start + len(fields))
            n = start - self.camera_features
            index = np.array([FIELDS[kind].index(f) for f in fields], dtype=np.intp)
            mean = np.ascontiguousarray(self.imu_mean[n : n + len(fields)])
            std = np.ascontiguousarray(self.imu_std[n : n + len(fields)])
            self._staging[kind] = (index, at, mean, std, np.zeros(len(fields), dtype=np.float64))
            start = at.stop

    def encode_image(self, rgb: np.ndarray) -> np.ndarray:
        """Camera features (float64) of one decoded (h, w, 3) RGB frame of any size: uint8 (the
        camera path: image_to_array/compressed_to_array with dtype=np.uint8), uint16, or float in
        [0, 1]; made the model's input by sensing.model_frame, as training makes its frames."""
        return self.encode_frame(model_frame(rgb, self.image_width, self.image_height))

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        """Camera features (float64) of one model_frame output: (image_height, image_width, 3)
        uint8 RGB, C-contiguous."""
        raise NotImplementedError

    def initial_state(self) -> np.ndarray:
        return self.core.initial_state()

    def check(self) -> None:
        """One dry run (a grey frame, a zero IMU sample, one step from rest) on scratch buffers:
        raises if this running form cannot take the inputs its model declares (a config that
        builds but does not run), leaves nothing held."""
        # A grey frame one pixel larger than the model's input: model_frame's resize kernel is
        # loaded (or compiled, without a numba cache) here, not at the first camera frame.
        grey = np.full((self.image_height + 1, self.image_width + 1, 3), 128, dtype=np.uint8)
        features = self.encode_image(grey)
        if features.shape != (self.camera_features,):
            raise ValueError(
                f"the camera encoder gives {features.shape[0]} features, the core takes {self.camera_features}"
            )
        held, command = self.inputs.copy(), self.command.copy()
        try:
            self.hold_camera(features)
            self.inputs[self.camera_features :] = 0.0
            state = self.initial_state()
            self.advance(state, 0.01)
        finally:
            self.inputs[:], self.command[:] = held, command

    # --- the running path: held inputs in place, a few compiled calls per event -------------
    def hold_camera(self, features: np.ndarray) -> None:
        """Hold camera features (encode_image's) as the core's camera inputs until the next frame."""
        self.inputs[: self.camera_features] = features

    def stage(self, sensor: str, values: np.ndarray) -> bool:
        """Normalise the model's fields of one sample of `sensor` ("imu": the 9 float64 values of
        sensing.IMU_FIELDS; "odom": the 3 of ODOM_FIELDS) into a staging buffer; False, and nothing
        staged, if any is NaN or Inf."""
        index, _, mean, std, staged = self._staging[sensor]
        return _stage(values, index, mean, std, staged)

    def hold_staged(self, sensor: str) -> None:
        """Hold the staged sample of `sensor` as the core's inputs of it until the next one."""
        _, at, _, _, staged = self._staging[sensor]
        self.inputs[at] = staged

    def advance(
        self, state: np.ndarray, dt: float, readout_w: np.ndarray | None = None, readout_b: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Step the state by dt on the held inputs; the raw command (before limits), or None when
        the state or the command is not finite. An adapted readout may replace the trained one."""
        self.core.step(self.inputs, state, dt)
        w = self.readout_w if readout_w is None else readout_w
        b = self.readout_b if readout_b is None else readout_b
        return self.command if _readout(w, b, state, self.state_size, self.command) else None

    def normalize_imu(self, values: np.ndarray) -> np.ndarray:
        """The held fields (IMU, then odometry: spec.held_fields), raw to the core's inputs."""
        return (values - self.imu_mean) / self.imu_std

    def step(
        self,
        camera: np.ndarray,
        imu: np.ndarray,
        state: np.ndarray,
        dt: float,
        readout_w: np.ndarray | None = None,
        readout_b: np.ndarray | None = None,
    ) -> np.ndarray:
        """Hold these camera features and normalised IMU and odometry values, advance the state by dt and
        return the raw command (before limits), finite or not. An adapted readout may be passed
        in place of the trained one."""
        self.hold_camera(camera)
        self.inputs[self.camera_features :] = imu
        self.advance(state, dt, readout_w, readout_b)
        return self.command
