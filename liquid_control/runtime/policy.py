"""LiquidPolicy: camera encoder + IMU inputs + liquid core + linear command readout.

As in the Neural Circuit Policies lane-keeping model, a small conv net turns a downscaled camera
frame into a few features; here the latest features of each sensor are held (zero-order hold) and
the liquid core is stepped on every sensor event with that event's elapsed time. The readout is
linear in the full liquid state, so that online adaptation (recursive least squares) can retune it
from the live state without touching the core.

Two paths with the same weights: `forward` over event sequences for training (BPTT), and
`PolicyStep` for running (conv only on camera events, fused core step, numpy readout).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from ..nets.base import LiquidRNN
from ..nets.recurrent import Recurrent
from .sensing import IMU_FIELDS, resize
from .specs import EncoderSpec, SensorSpec


class CameraEncoder(nn.Module):
    """(batch, H, W, 3) float RGB in [0, 1] -> (batch, camera_features) in [-1, 1]."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(spec.channels):
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=5 if i == 0 else 3, stride=2,
                                 padding=2 if i == 0 else 1), nn.ReLU()]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, spec.image_height, spec.image_width)).numel()
        self.features = nn.Linear(flat, spec.camera_features)
        # Without it, the pre-activations grow in the first Adam steps, the tanh saturates at
        # +-1 and the encoder goes blind for good (seen: constant features for any image).
        self.features_norm = nn.LayerNorm(spec.camera_features)
        self.mean, self.std = spec.image_mean, spec.image_std
        self.per_frame = spec.image_norm == "frame"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        if self.per_frame:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            spread = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / spread.clamp_min(1e-3)  # a uniform (black) frame gives zeros
        else:
            x = (x - self.mean) / self.std
        return torch.tanh(self.features_norm(self.features(self.convs(x).flatten(1))))


class LiquidPolicy(nn.Module):
    def __init__(self, spec: EncoderSpec, core: LiquidRNN | Recurrent, outputs: int,
                 imu_mean: tuple[float, ...] | None = None, imu_std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if core.input_size != spec.core_inputs:
            raise ValueError(
                f"the core takes {core.input_size} inputs but the encoders give {spec.core_inputs} "
                f"({spec.camera_features} camera features + {len(spec.imu_fields)} IMU fields)"
            )
        self.spec = spec
        self.camera = CameraEncoder(spec)
        self.core = core
        self.readout = nn.Linear(core.state_size, outputs)
        k = len(spec.imu_fields)
        imu_mean = (0.0,) * k if imu_mean is None else tuple(imu_mean)
        imu_std = (1.0,) * k if imu_std is None else tuple(imu_std)
        if len(imu_mean) != k or len(imu_std) != k or min(imu_std, default=1.0) <= 0:
            raise ValueError(f"imu_mean and imu_std need {k} entries (std > 0), one per IMU field")
        # Buffers: the normalisation is saved with the weights, so it can never be lost.
        self.register_buffer("imu_mean", torch.tensor(imu_mean, dtype=torch.float32))
        self.register_buffer("imu_std", torch.tensor(imu_std, dtype=torch.float32))

    @property
    def outputs(self) -> int:
        return self.readout.out_features

    def forward(self, frames: torch.Tensor, frame_index: torch.Tensor, imu: torch.Tensor,
                timespans: torch.Tensor) -> torch.Tensor:
        """Commands for every sensor event of a batch of sequences.

        frames (B, F, H, W, 3): the camera frames of each sequence; frame_index (B, T) long: the
        frame held at each event; imu (B, T, k) raw IMU fields held at each event; timespans (B, T)
        seconds since the previous event. Returns (B, T, outputs).
        """
        b, f = frames.shape[:2]
        features = self.camera(frames.reshape(b * f, *frames.shape[2:])).reshape(b, f, -1)
        held = torch.gather(features, 1, frame_index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        x = torch.cat([held, (imu - self.imu_mean) / self.imu_std], dim=-1)
        states = self.core.state_sequence(x, timespans)
        return self.readout(states)

    def sensor_spec(self, image_encoding: str = "rgb8"):
        """The SensorSpec of this policy's inputs (for its model file)."""
        n_cam = self.spec.camera_features
        return SensorSpec(
            features=tuple(f"camera_{i}" for i in range(n_cam)) + self.spec.imu_fields,
            mean=(0.0,) * n_cam + tuple(float(v) for v in self.imu_mean),
            std=(1.0,) * n_cam + tuple(float(v) for v in self.imu_std),
            image={"width": self.spec.image_width, "height": self.spec.image_height,
                   "encoding": image_encoding},
            imu_fields=self.spec.imu_fields,
        )

    def streamer(self) -> PolicyStep:
        return PolicyStep(self)


def _frozen(camera: CameraEncoder, spec: EncoderSpec):
    """The encoder traced and frozen for batch-1 inference (convolutions fused with their
    activations: about half the eager time per frame); the eager module if tracing fails."""
    example = torch.rand(1, spec.image_height, spec.image_width, 3)
    try:
        with torch.inference_mode(False), torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(camera.eval(), example, check_trace=False))
            if torch.allclose(frozen(example), camera(example), atol=1e-5):
                return frozen
    except Exception:  # noqa: BLE001 - any tracing failure falls back to the eager module
        pass
    return camera


class PolicyStep:
    """The running form of a LiquidPolicy: a snapshot of its weights for batch-1 streaming."""

    def __init__(self, policy: LiquidPolicy) -> None:
        policy = policy.eval()
        self._camera = _frozen(policy.camera, policy.spec)
        self._width, self._height = policy.spec.image_width, policy.spec.image_height
        self.core = policy.core.fused(refresh=True)
        self.readout_w = policy.readout.weight.detach().double().numpy().copy()
        self.readout_b = policy.readout.bias.detach().double().numpy().copy()
        self.imu_mean = policy.imu_mean.double().numpy()
        self.imu_std = policy.imu_std.double().numpy()
        self.camera_features = policy.spec.camera_features
        self.inputs = np.zeros(policy.spec.core_inputs, dtype=np.float64)
        self.state_size = policy.core.state_size
        self.command = np.zeros(policy.outputs, dtype=np.float64)
        self._imu_index = np.array([IMU_FIELDS.index(f) for f in policy.spec.imu_fields], dtype=np.intp)
        self._imu_staged = np.zeros(len(policy.spec.imu_fields), dtype=np.float64)

    def initial_state(self) -> np.ndarray:
        return self.core.initial_state()

    def check(self) -> None:
        """One dry run (a grey frame, a zero IMU sample, one step from rest) on scratch buffers:
        raises if this running form cannot take the inputs its model declares (a config that
        builds but does not run), leaves nothing held."""
        features = self.encode_image(np.full((self._height, self._width, 3), 0.5))
        if features.shape != (self.camera_features,):
            raise ValueError(f"the camera encoder gives {features.shape[0]} features, the core takes "
                             f"{self.camera_features}")
        held, command = self.inputs.copy(), self.command.copy()
        try:
            self.hold_camera(features)
            self.inputs[self.camera_features:] = 0.0
            state = self.initial_state()
            self.advance(state, 0.01)
        finally:
            self.inputs[:], self.command[:] = held, command

    def encode_image(self, rgb: np.ndarray) -> np.ndarray:
        """Camera features of one (h, w, 3) float RGB frame of any size, resized to the model's
        input as sensing.resize does for training."""
        frame = torch.from_numpy(np.ascontiguousarray(resize(rgb, self._width, self._height), dtype=np.float32))
        with torch.inference_mode():
            out = self._camera(frame[None])
        return out[0].double().numpy()

    # --- the running path: held inputs in place, a few compiled calls per event -------------
    def hold_camera(self, features: np.ndarray) -> None:
        """Hold camera features (encode_image's) as the core's camera inputs until the next frame."""
        self.inputs[: self.camera_features] = features

    def stage_imu(self, values: np.ndarray) -> bool:
        """Normalise the model's fields of one IMU sample (the 9 float64 values of
        sensing.IMU_FIELDS) into a staging buffer; False, and nothing staged, if any is NaN or Inf."""
        return _stage_imu(values, self._imu_index, self.imu_mean, self.imu_std, self._imu_staged)

    def hold_staged_imu(self) -> None:
        """Hold the staged IMU sample as the core's IMU inputs until the next one."""
        self.inputs[self.camera_features:] = self._imu_staged

    def advance(self, state: np.ndarray, dt: float, readout_w: np.ndarray | None = None,
                readout_b: np.ndarray | None = None) -> np.ndarray | None:
        """Step the state by dt on the held inputs; the raw command (before limits), or None when
        the state or the command is not finite. An adapted readout may replace the trained one."""
        self.core.step(self.inputs, state, dt)
        w = self.readout_w if readout_w is None else readout_w
        b = self.readout_b if readout_b is None else readout_b
        return self.command if _readout(w, b, state, self.state_size, self.command) else None

    def normalize_imu(self, values: np.ndarray) -> np.ndarray:
        return (values - self.imu_mean) / self.imu_std

    def step(self, camera: np.ndarray, imu: np.ndarray, state: np.ndarray, dt: float,
             readout_w: np.ndarray | None = None, readout_b: np.ndarray | None = None) -> np.ndarray:
        """Hold these camera features and normalised IMU values, advance the state by dt and
        return the raw command (before limits), finite or not. An adapted readout may be passed
        in place of the trained one."""
        self.hold_camera(camera)
        self.inputs[self.camera_features:] = imu
        self.advance(state, dt, readout_w, readout_b)
        return self.command


@numba.njit(cache=True)
def _stage_imu(values, index, mean, std, out):  # pragma: no cover - compiled
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
