"""Where the camera encoder looks: VisualBackProp (Bojarski et al., "VisualBackProp: efficient
visualization of CNNs for autonomous driving", ICRA 2018) of a LiquidPolicy's CameraEncoder.

For each convolution of `policy.camera.convs`, its activations (after the ReLU that follows it)
are averaged over channels. From the deepest layer up, the averaged map is scaled up to the size of
the layer before with a transposed convolution of unit weights (the layer's own kernel size, stride
and padding: a pixel spreads to every input pixel its filter reads), multiplied pointwise with that
layer's averaged map, and so on; the last product, scaled up through the first convolution, has
the encoder's input resolution. Normalised to [0, 1], it is the saliency map: 1 where the
activations that survive to the deepest layer come from.

Runs on the torch policy only (the ONNX backend's graph gives no intermediate feature maps). The
encoder runs its own forward (its normalisation included) on a copy of it taken when the
VisualBackProp is made; the feature maps are taken with forward hooks on that copy, so nothing in
CameraEncoder is changed, and the running policy (its own traced encoder, or this module when
tracing failed) is never touched from the thread that makes the maps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from .sensing import model_frame


class SaliencyUnavailable(ValueError):
    """The policy has no torch camera encoder to look into (the ONNX backend, or no convolutions)."""


@dataclass(frozen=True)
class _Layer:
    conv: nn.Conv2d
    output: nn.Module  # the module whose output is this layer's feature map (the activation after conv)


def _camera(policy) -> nn.Module:
    camera = getattr(policy, "camera", None)
    if not isinstance(getattr(camera, "convs", None), nn.Sequential):
        raise SaliencyUnavailable(
            f"saliency needs the torch camera encoder (backend torch); {type(policy).__name__} has none"
        )
    return camera


def _layers(camera: nn.Module) -> list[_Layer]:
    modules = list(camera.convs)
    layers = []
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        output = module
        for after in modules[i + 1 :]:  # the activation(s) up to the next convolution
            if isinstance(after, nn.Conv2d):
                break
            output = after
        layers.append(_Layer(module, output))
    if not layers:
        raise SaliencyUnavailable("the camera encoder has no convolution layers")
    return layers


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class VisualBackProp:
    """Saliency maps of one policy's camera encoder: `vbp(rgb)` for an (h, w, 3) RGB frame of any
    size (float in [0, 1], or uint8), resized to the model's input, gives an (image_height,
    image_width) float32 map in [0, 1]."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.camera = copy.deepcopy(_camera(policy)).eval()
        self.layers = _layers(self.camera)
        self.width, self.height = policy.spec.image_width, policy.spec.image_height

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """The frame as the encoder sees it (sensing.model_frame's uint8 levels) as float32 RGB in
        [0, 1]: exactly the pixels the running encoder scales the same frame to."""
        return model_frame(np.asarray(rgb), self.width, self.height).astype(np.float32) * np.float32(1.0 / 255.0)

    def feature_maps(self, frame: np.ndarray) -> list[torch.Tensor]:
        """Each layer's activations averaged over channels, (H_k, W_k), shallowest first, for one
        frame at the model's input size."""
        maps: list[torch.Tensor] = [None] * len(self.layers)  # type: ignore[list-item]
        hooks = []
        for k, layer in enumerate(self.layers):

            def keep(_module, _inputs, output, k=k):
                maps[k] = output[0].mean(dim=0)

            hooks.append(layer.output.register_forward_hook(keep))
        try:
            with torch.no_grad():
                self.camera(torch.from_numpy(frame)[None])
        finally:
            for hook in hooks:
                hook.remove()
        return maps

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.from_frame(self.frame(rgb))

    def from_frame(self, frame: np.ndarray) -> np.ndarray:
        """The saliency map of a frame already at the model's input size (VBP.frame's)."""
        maps = self.feature_maps(frame)
        with torch.no_grad():
            mask = maps[-1]
            for k in range(len(self.layers) - 1, -1, -1):
                size = maps[k - 1].shape if k > 0 else frame.shape[:2]
                mask = self._up(mask, self.layers[k].conv, size)
                if k > 0:
                    mask = mask * maps[k - 1]
            out = mask.double().numpy()
        lo, hi = float(out.min()), float(out.max())
        if not hi > lo:  # a flat map (a black frame, nothing active): nothing stands out
            return np.zeros(out.shape, dtype=np.float32)
        return ((out - lo) / (hi - lo)).astype(np.float32)

    @staticmethod
    def _up(mask: torch.Tensor, conv: nn.Conv2d, size) -> torch.Tensor:
        """`mask` (h, w) to the size of `conv`'s input: a transposed convolution with a kernel of
        ones of conv's size, stride and padding (output padding to land on the exact size)."""
        (kh, kw), (sh, sw), (ph, pw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding)
        h, w = mask.shape
        extra = (size[0] - ((h - 1) * sh - 2 * ph + kh), size[1] - ((w - 1) * sw - 2 * pw + kw))
        ones = torch.ones(1, 1, kh, kw, dtype=mask.dtype)
        up = functional.conv_transpose2d(
            mask[None, None], ones, stride=(sh, sw), padding=(ph, pw), output_padding=extra
        )
        return up[0, 0]


def heat(saliency: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as (h, w, 3) float RGB, black - red - yellow - white ("hot")."""
    s = np.clip(np.asarray(saliency, dtype=np.float32), 0.0, 1.0)[..., None]
    return np.clip(3.0 * s - np.array([0.0, 1.0, 2.0], dtype=np.float32), 0.0, 1.0)


def overlay(frame: np.ndarray, saliency: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """The frame ((h, w, 3) float RGB in [0, 1]) with the saliency map ((h, w) in [0, 1]) over it
    as (h, w, 3) uint8 RGB: the frame, darkened to half, shows through where the map is low; where
    it is high the "hot" colour of the map covers it (alpha = strength x saliency)."""
    s = np.clip(np.asarray(saliency, dtype=np.float32), 0.0, 1.0)[..., None]
    alpha = strength * s
    base = 0.5 * np.clip(np.asarray(frame, dtype=np.float32), 0.0, 1.0)
    out = base * (1.0 - alpha) + heat(s[..., 0]) * alpha
    return (out * 255.0 + 0.5).astype(np.uint8)
