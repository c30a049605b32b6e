"""LiquidPolicy: camera encoder + IMU inputs + liquid core + linear command readout.

As in the Neural Circuit Policies lane-keeping model, a small conv net turns a downscaled camera
frame into a few features; here the latest features of each sensor are held (zero-order hold) and
the liquid core is stepped on every sensor event with that event's elapsed time. The readout is
linear in the full liquid state, so that online adaptation (recursive least squares) can retune it
from the live state without touching the core.

Two paths with the same weights: `forward` over event sequences for training (BPTT), and
`PolicyStep` for running (conv only on camera events, fused core step, numpy readout). Both take the
camera frames as sensing.model_frame makes them (uint8 RGB at the model's input size); the encoder
itself turns them into [0, 1] (CameraEncoder.forward, the one place), so the ONNX graphs exported
from it do the same.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..nets.base import StreamingModule
from .specs import EncoderSpec, SensorSpec
from .step import RunningStep


class CameraEncoder(nn.Module):
    """(batch, H, W, 3) RGB -> (batch, camera_features) in [-1, 1]. The frames are uint8 (as
    sensing.model_frame makes them, for training and running alike) or float in [0, 1]."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(spec.channels):
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=5 if i == 0 else 3, stride=2, padding=2 if i == 0 else 1),
                nn.ReLU(),
            ]
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
        if x.dtype == torch.uint8:  # the one place where 8-bit levels become [0, 1]
            x = x.float() / 255.0
        if self.per_frame:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            spread = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / spread.clamp_min(1e-3)  # a uniform (black) frame gives zeros
        else:
            x = (x - self.mean) / self.std
        return torch.tanh(self.features_norm(self.features(self.convs(x).flatten(1))))


class LiquidPolicy(nn.Module):
    def __init__(
        self,
        spec: EncoderSpec,
        core: StreamingModule,
        outputs: int,
        imu_mean: tuple[float, ...] | None = None,
        imu_std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        if core.input_size != spec.core_inputs:
            raise ValueError(
                f"the core takes {core.input_size} inputs but the encoders give {spec.core_inputs} "
                f"({spec.camera_features} camera features + {len(spec.imu_fields)} IMU fields + "
                f"{len(spec.odom_fields)} odometry fields)"
            )
        self.spec = spec
        self.camera = CameraEncoder(spec)
        self.core = core
        self.readout = nn.Linear(core.state_size, outputs)
        # The normalisation of every field beside the camera (IMU, then odometry: spec.held_fields),
        # named imu_* since model files began with the IMU alone.
        k = len(spec.held_fields)
        imu_mean = (0.0,) * k if imu_mean is None else tuple(imu_mean)
        imu_std = (1.0,) * k if imu_std is None else tuple(imu_std)
        if len(imu_mean) != k or len(imu_std) != k or min(imu_std, default=1.0) <= 0:
            raise ValueError(f"imu_mean and imu_std need {k} entries (std > 0), one per IMU and odometry field")
        # Buffers: the normalisation is saved with the weights, so it can never be lost.
        self.register_buffer("imu_mean", torch.tensor(imu_mean, dtype=torch.float32))
        self.register_buffer("imu_std", torch.tensor(imu_std, dtype=torch.float32))

    @property
    def outputs(self) -> int:
        return self.readout.out_features

    def forward(
        self, frames: torch.Tensor, frame_index: torch.Tensor, imu: torch.Tensor, timespans: torch.Tensor
    ) -> torch.Tensor:
        """Commands for every sensor event of a batch of sequences.

        frames (B, F, H, W, 3): the camera frames of each sequence (uint8 from sensing.model_frame,
        or float in [0, 1]); frame_index (B, T) long: the frame held at each event; imu (B, T, k)
        the raw IMU and odometry fields (spec.held_fields) held at each event; timespans (B, T) seconds since the previous event.
        Returns (B, T, outputs).
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
            features=tuple(f"camera_{i}" for i in range(n_cam)) + self.spec.held_fields,
            mean=(0.0,) * n_cam + tuple(float(v) for v in self.imu_mean),
            std=(1.0,) * n_cam + tuple(float(v) for v in self.imu_std),
            image={"width": self.spec.image_width, "height": self.spec.image_height, "encoding": image_encoding},
            imu_fields=self.spec.imu_fields,
            odom_fields=self.spec.odom_fields,
        )

    def streamer(self, encoder: str = "auto") -> PolicyStep:
        return PolicyStep(self, encoder)


ENCODERS = ("auto", "onnxruntime", "torch")
OPSET = 17  # of every ONNX graph the package writes (export.py's too)


def example_frame(spec: EncoderSpec) -> torch.Tensor:
    """A fixed random uint8 model frame (1, H, W, 3), to trace, export and check encoders with."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, spec.image_height, spec.image_width, 3), dtype=torch.uint8, generator=generator)


def _frozen(camera: CameraEncoder, example: torch.Tensor):
    """The encoder traced and frozen for batch-1 inference (convolutions fused with their
    activations: about half the eager time per frame); the eager module if tracing fails."""
    try:
        with torch.inference_mode(False), torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(camera.eval(), example, check_trace=False))
            if torch.allclose(frozen(example), camera(example), atol=1e-5):
                return frozen
    except Exception:  # noqa: BLE001 - any tracing failure falls back to the eager module
        pass
    return camera


def encoder_graph(camera: CameraEncoder, example: torch.Tensor) -> bytes:
    """The camera encoder alone as an ONNX graph (OPSET): input `frame` uint8 (1, H, W, 3),
    output `features` float32 (1, camera_features). Needs the onnx package (torch's exporter)."""
    graph = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            camera.eval(),
            (example,),
            graph,
            input_names=["frame"],
            output_names=["features"],
            opset_version=OPSET,
            dynamo=False,
        )
    return graph.getvalue()


def _encoder_bytes(camera: CameraEncoder, example: torch.Tensor, refresh: bool = False) -> bytes:
    """encoder_graph's bytes, kept under paths.cache_root()/encoders by a hash of everything the graph
    depends on (weights, layers, input shape, opset, torch and package versions): exporting needs the onnx package,
    whose import alone costs about 0.8 s of a node's start, so it is paid once per model. A cache
    that cannot be written (a read-only home) only means the export runs every time. `refresh`:
    export and keep it again, whatever is there."""
    import hashlib
    from importlib.metadata import version

    from ..paths import cache_root

    key = hashlib.sha256(
        repr((OPSET, tuple(example.shape), torch.__version__, version("liquid_control"), camera)).encode()
    )  # the module's repr: its layers and their shapes
    for name, tensor in sorted(camera.state_dict().items()):
        key.update(name.encode())
        key.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_root() / "encoders" / f"{key.hexdigest()[:32]}.onnx"
    if not refresh:
        try:
            return path.read_bytes()
        except OSError:
            pass
    graph = encoder_graph(camera, example)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(graph)
        partial.replace(path)
    except OSError:
        pass
    return graph


def _onnx_encoder(camera: CameraEncoder, example: torch.Tensor):
    """The encoder as an ONNX graph in an ONNX Runtime session (about a fifth of the frozen torch
    encoder's time per frame), checked against the eager module on `example`; a kept graph that
    does not load or does not match (a damaged file) is exported again."""
    from ..runtime.onnx_policy import FrameEncoder, open_session

    with torch.no_grad():
        expected = camera(example).numpy()[0]
    for fresh in (False, True):
        graph = _encoder_bytes(camera, example, refresh=fresh)
        try:
            encoder = FrameEncoder(open_session(graph))
        except Exception:  # noqa: BLE001 - onnxruntime's own error kinds for a bad graph
            if fresh:
                raise
            continue
        if np.allclose(encoder(example.numpy()[0]), expected, rtol=0, atol=1e-5):
            return encoder
    raise ValueError("the ONNX Runtime encoder differs from the torch one")


class PolicyStep(RunningStep):
    """The running form of a LiquidPolicy: a snapshot of its weights for batch-1 streaming. The
    camera encoder runs in ONNX Runtime when onnxruntime is installed (`encoder="auto"`), else
    traced and frozen in torch; `encoder` ("onnxruntime", "torch") asks for one. `self.encoder`
    says which one runs: "onnxruntime", "torch (frozen)" or "torch (eager)"."""

    def __init__(self, policy: LiquidPolicy, encoder: str = "auto") -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {encoder!r}")
        policy = policy.eval()
        example = example_frame(policy.spec)
        self._encoder = self._camera = None
        if encoder != "torch":
            try:
                self._encoder = _onnx_encoder(policy.camera, example)
            except Exception:  # noqa: BLE001 - no onnxruntime (or an unexportable encoder): torch runs it
                if encoder == "onnxruntime":
                    raise
        if self._encoder is None:
            self._camera = _frozen(policy.camera, example)
        self.encoder = (
            "onnxruntime"
            if self._encoder is not None
            else "torch (eager)"
            if self._camera is policy.camera
            else "torch (frozen)"
        )
        super().__init__(
            policy.spec,
            policy.core.fused(refresh=True),
            policy.core.state_size,
            policy.readout.weight.detach().double().numpy().copy(),
            policy.readout.bias.detach().double().numpy().copy(),
            policy.imu_mean.double().numpy(),
            policy.imu_std.double().numpy(),
        )

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        if self._encoder is not None:
            return self._encoder(frame)
        with torch.inference_mode():
            out = self._camera(torch.from_numpy(frame)[None])
        return out[0].double().numpy()
