"""Augmentation of training windows, on the uint8 frames the cache holds: changes of the scene
(shadow bands across the picture, distance haze), photometric changes of the picture (brightness,
contrast, colour gains, palette, noise, blur) and one geometric change whose label is exact, the mirror image (left and right swapped: the commanded yaw rate and the
sensor fields that change sign in a mirror world change sign with it).

Each kind is applied to a whole window (every frame of it, as a change of light or of camera holds
for seconds) with its declared probability, its strength drawn from RANGES; noise is drawn per
pixel. Draws come from the training run's random generator, so a resumed run augments as the
uninterrupted one. Validation windows are never augmented. The model file's provenance records the
probabilities and the ranges.

The mirror assumes a camera on the robot's centre line (the simulator's robots have theirs there);
on a robot whose camera sits off to one side, leave `flip` out.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model.specs import IMU_FIELDS, ODOM_FIELDS

# The strength of each kind, drawn uniformly per window (documented in docs/training.md).
RANGES = {
    "brightness": (0.5, 1.5),  # every pixel times this
    "contrast": (0.6, 1.4),  # distance from the frame's mean grey times this
    "colour": (0.8, 1.2),  # each of R, G, B times its own gain
    "palette": (0.0, 1.0),  # hue turned by up to this many half-turns either way; saturation times U(0.3, 1.5)
    "noise": (0.01, 0.08),  # std of Gaussian pixel noise, in [0, 1] levels
    "blur": (0.4, 1.0),  # share of a 3x3 box blur mixed in
    "flip": (1.0, 1.0),  # the mirror image (no strength)
    # Drawn after the kinds above, so that runs which use only those draw as before they existed.
    "shadow": (0.3, 0.8),  # pixels under the shadow bands times this (the bands: SHADOW)
    "haze": (0.3, 0.9),  # share of the haze grey at the picture's top row, falling to 0 down it (HAZE)
}
KINDS = tuple(RANGES)
STANDARD = {
    "brightness": 0.5,
    "contrast": 0.5,
    "colour": 0.5,
    "palette": 0.3,
    "noise": 0.3,
    "blur": 0.2,
    "flip": 0.5,
}
SATURATION = (0.3, 1.5)
_FIRST = KINDS[: KINDS.index("flip") + 1]  # drawn first, in this order (as before shadow and haze)
# Shadow bands (as of trees or posts across the road; albumentations' RandomShadow is the like):
# parallel straight bands at `angle` degrees from the horizontal, `width` wide and repeating every
# `period` (both in picture heights), drifting down the picture by up to `drift` picture heights
# per frame as the ground moves toward the camera.
SHADOW = {"angle": (-60.0, 60.0), "width": (0.1, 0.4), "period": (0.5, 1.5), "drift": (0.0, 0.05)}
# Distance haze (fog, mist, smoke; albumentations' RandomFog is the like): each pixel mixed with
# one grey, `grey` of full scale give or take `tint` per channel, by the kind's strength at the
# top row, falling linearly to nothing at `depth` picture heights down (past the bottom row
# when over 1, so the near ground is hazed too).
HAZE = {"grey": (0.55, 0.95), "tint": 0.03, "depth": (0.4, 1.3)}

# Mirrored left to right (y -> -y): angular velocity is a pseudovector (x and z turn, y stays),
# acceleration and velocity a vector (y turns), roll and yaw turn, pitch stays.
MIRROR_SIGNS = {
    "imu": {
        "angular_velocity.x": -1.0,
        "angular_velocity.y": 1.0,
        "angular_velocity.z": -1.0,
        "linear_acceleration.x": 1.0,
        "linear_acceleration.y": -1.0,
        "linear_acceleration.z": 1.0,
        "orientation.roll": -1.0,
        "orientation.pitch": 1.0,
        "orientation.yaw": -1.0,
    },
    "odom": {"twist.linear.x": 1.0, "twist.linear.y": -1.0, "twist.angular.z": -1.0},
}
assert set(MIRROR_SIGNS["imu"]) == set(IMU_FIELDS) and set(MIRROR_SIGNS["odom"]) == set(ODOM_FIELDS)

# RGB <-> YIQ: turning (I, Q) turns the hue and leaves the luma Y as it is.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_RGB = np.linalg.inv(_YIQ)


def parse(items: tuple[str, ...] | list[str]) -> dict[str, float]:
    """`--augment` values: KIND=P (P a probability), KIND alone (P 0.5), or `standard` (STANDARD);
    ValueError naming what is wrong."""
    out: dict[str, float] = {}
    for item in items:
        if item == "standard":
            out.update(STANDARD)
            continue
        kind, sep, value = item.partition("=")
        if kind not in RANGES:
            raise ValueError(f"--augment {item}: unknown kind {kind!r}; choose from {', '.join(KINDS)}, or standard")
        try:
            p = float(value) if sep else 0.5
        except ValueError:
            raise ValueError(f"--augment {item}: {value!r} is not a probability") from None
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"--augment {item}: the probability must be in [0, 1]")
        out[kind] = p
    return {k: p for k, p in out.items() if p > 0.0}


def record(probabilities: dict[str, float]) -> dict:
    """What the model's provenance keeps: each kind's probability and the range of its strength."""
    return {k: {"p": p, "range": list(RANGES[k])} for k, p in sorted(probabilities.items())}


def mirror_signs(imu_fields: tuple[str, ...], odom_fields: tuple[str, ...]) -> np.ndarray:
    """The sign of each field a model reads (the IMU's, then the odometry's) in the mirror image."""
    return np.array(
        [MIRROR_SIGNS["imu"][f] for f in imu_fields] + [MIRROR_SIGNS["odom"][f] for f in odom_fields], np.float32
    )


class Augmenter:
    """Augments a batch of windows (the training loop's `_batch` tensors) in place of the originals."""

    def __init__(self, probabilities: dict[str, float], signs: np.ndarray) -> None:
        unknown = set(probabilities) - set(RANGES)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; choose from {', '.join(KINDS)}")
        self.p = dict(probabilities)
        self.signs = torch.from_numpy(np.asarray(signs, np.float32))

    def __bool__(self) -> bool:
        return bool(self.p)

    def __call__(
        self, frames: torch.Tensor, fields: torch.Tensor, target: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames (B, F, H, W, 3) uint8, fields (B, T, k), target (B, T, 2): the augmented ones
        (frames uint8 again, as a camera gives them). Draws from `rng` in a fixed order."""
        b = frames.shape[0]
        draw = lambda k: (rng.random(b) < self.p.get(k, 0.0), rng.uniform(*RANGES[k], size=b))  # noqa: E731
        draws = {k: draw(k) for k in _FIRST}
        saturation = rng.uniform(*SATURATION, size=b)
        turn_sign = rng.choice([-1.0, 1.0], size=b)
        noise_seed = int(rng.integers(1 << 62))
        later = [k for k in KINDS if k not in _FIRST and self.p.get(k, 0.0) > 0.0]
        for k in later:  # only the kinds in use draw, so adding a kind changes no run without it
            draws[k] = draw(k)
        if not any(on.any() for on, _ in draws.values()):
            return frames, fields, target
        x = frames.float() / 255.0
        per_window = lambda v: torch.from_numpy(v.astype(np.float32)).view(b, 1, 1, 1, 1)  # noqa: E731
        # The scene first (shadows on the ground, haze in the air), then the light and the camera.
        if "shadow" in draws and draws["shadow"][0].any():
            x = x * _shadow_gain(x.shape, *draws["shadow"], rng)
        if "haze" in draws and draws["haze"][0].any():
            weight, grey = _haze(x.shape, *draws["haze"], rng)
            x = torch.lerp(x, grey, weight)
        on, s = draws["brightness"]
        x = x * per_window(np.where(on, s, 1.0))
        on, s = draws["contrast"]
        if on.any():
            mean = x.mean(dim=(2, 3, 4), keepdim=True)
            x = (x - mean) * per_window(np.where(on, s, 1.0)) + mean
        on, _ = draws["colour"]
        if on.any():
            gains = np.where(on[:, None], rng.uniform(*RANGES["colour"], size=(b, 3)), 1.0).astype(np.float32)
            x = x * torch.from_numpy(gains).view(b, 1, 1, 1, 3)
        on, s = draws["palette"]
        if on.any():
            matrices = np.repeat(np.eye(3)[None], b, axis=0)
            for i in np.flatnonzero(on):
                angle = turn_sign[i] * s[i] * math.pi
                c, n = math.cos(angle) * saturation[i], math.sin(angle) * saturation[i]
                turn = np.array([[1.0, 0.0, 0.0], [0.0, c, -n], [0.0, n, c]])
                matrices[i] = _RGB @ turn @ _YIQ
            x = torch.einsum("bfhwc,bdc->bfhwd", x, torch.from_numpy(matrices.astype(np.float32)))
        on, s = draws["blur"]
        if on.any():
            bf, h, w = x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
            flat = x.reshape(bf, h, w, 3).permute(0, 3, 1, 2)
            blurred = torch.nn.functional.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False)
            blurred = blurred.permute(0, 2, 3, 1).reshape(x.shape)
            x = torch.lerp(x, blurred, per_window(np.where(on, s, 0.0)))
        on, s = draws["noise"]
        if on.any():
            generator = torch.Generator().manual_seed(noise_seed)
            x = x + torch.randn(x.shape, generator=generator) * per_window(np.where(on, s, 0.0))
        on, _ = draws["flip"]
        if on.any():
            flip = torch.from_numpy(on)
            x = torch.where(flip.view(b, 1, 1, 1, 1), x.flip(3), x)
            sign = torch.where(flip.view(b, 1, 1), self.signs.view(1, 1, -1), torch.ones(1))
            fields = fields * sign if fields.shape[-1] else fields
            target = target.clone()
            target[flip, :, 1] = -target[flip, :, 1]  # the yaw rate; the speed stays
        frames = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return frames, fields, target


def _rows_and_columns(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in picture heights: rows 0 (top) to 1 (bottom), columns centred on 0."""
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    u = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2) / h
    return y.view(1, 1, h, 1), u.view(1, 1, 1, w)


def _shadow_gain(shape, on: np.ndarray, strength: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """(B, F, H, W, 1) factors: `strength` under the bands of the windows that are on, else 1."""
    b, f, h, w = shape[:4]
    as_tensor = lambda v: torch.from_numpy(np.asarray(v, np.float32)).view(b, 1, 1, 1)  # noqa: E731
    angle = np.radians(rng.uniform(*SHADOW["angle"], size=b))
    width, period = rng.uniform(*SHADOW["width"], size=b), rng.uniform(*SHADOW["period"], size=b)
    drift, phase = rng.uniform(*SHADOW["drift"], size=b), rng.uniform(0.0, 1.0, size=b)
    y, u = _rows_and_columns(h, w)
    frame = torch.arange(f, dtype=torch.float32).view(1, f, 1, 1)
    across = (y - as_tensor(drift) * frame) * as_tensor(np.cos(angle)) - u * as_tensor(np.sin(angle))
    in_band = torch.remainder(across / as_tensor(period) + as_tensor(phase), 1.0) < as_tensor(width / period)
    gain = torch.where(in_band & torch.from_numpy(on).view(b, 1, 1, 1), as_tensor(strength), torch.ones(1))
    return gain.unsqueeze(-1)


def _haze(shape, on: np.ndarray, strength: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The haze's weight per pixel (B, 1, H, 1, 1), 0 where a window is off, and its colour (B, 1, 1, 1, 3)."""
    b, _, h, w = shape[:4]
    depth = rng.uniform(*HAZE["depth"], size=b)
    grey = rng.uniform(*HAZE["grey"], size=(b, 1)) + rng.uniform(-HAZE["tint"], HAZE["tint"], size=(b, 3))
    y, _ = _rows_and_columns(h, w)
    top = torch.from_numpy(np.where(on, strength, 0.0).astype(np.float32)).view(b, 1, 1, 1)
    d = torch.from_numpy(depth.astype(np.float32)).view(b, 1, 1, 1)
    weight = top * (1.0 - (y - y[0, 0, 0, 0]) / d).clamp(min=0.0)
    return weight.unsqueeze(-1), torch.from_numpy(grey.clip(0.0, 1.0).astype(np.float32)).view(b, 1, 1, 1, 3)
