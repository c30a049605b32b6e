"""Tracks as data: a closed road described by a track file, and the geometry everything else asks
of it (cross-track error, progress, heading, curvature, the road texture).

A track file (YAML) holds the centreline control points of a closed curve (a centripetal
Catmull-Rom spline passes through them), the road width, the lane markings, the colours and the
lighting. The MuJoCo scene and the Gazebo world are both generated from the same file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..files import FileRefused, read_text
from ..paths import share_path


class TrackError(ValueError):
    """A track file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Markings:
    edge_width: float = 0.05  # m, solid lines at both road edges
    center_width: float = 0.04  # m, dashed centre line (0: none)
    dash_length: float = 0.5  # m
    gap_length: float = 0.5  # m


@dataclass(frozen=True)
class Look:
    road: tuple[float, float, float] = (0.25, 0.25, 0.27)
    ground: tuple[float, float, float] = (0.30, 0.45, 0.25)
    edge: tuple[float, float, float] = (0.95, 0.95, 0.95)
    center: tuple[float, float, float] = (0.95, 0.80, 0.10)
    light_diffuse: float = 0.8
    light_ambient: float = 0.3
    # Weather and ground patterns beyond the colours; the defaults leave the plain look unchanged.
    fog_start: float = 0.0  # m from the camera where fog begins
    fog_end: float = 0.0  # m from the camera where it hides everything (0: no fog)
    fog_color: tuple[float, float, float] = (0.75, 0.75, 0.78)
    checker: float = 0.0  # m, side of a checkerboard's squares on the ground beside the road (0: plain)
    checker_color: tuple[float, float, float] = (0.75, 0.70, 0.50)  # the board's other squares
    shadow: float = 0.0  # fraction of the light taken by shadows cast across the road (0: none)
    shadow_spacing: float = 2.0  # m along the road from one shadow to the next
    shadow_width: float = 0.7  # m along the road that each shadow covers
    shadow_slant: float = 0.6  # shift along the road per metre across it (tan of the shadows' angle)


@dataclass(frozen=True, eq=False)
class Track:
    name: str
    control_points: np.ndarray  # (k, 2) m, counter-clockwise or clockwise, closed
    road_width: float
    markings: Markings = field(default_factory=Markings)
    look: Look = field(default_factory=Look)
    spacing: float = 0.05  # m between centreline samples

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Track:
        path = Path(path)
        try:
            data = yaml.safe_load(read_text(path))
        except FileRefused as exc:
            problem = "no such file" if exc.problem == "no such file or directory" else exc.problem
            raise TrackError(f"track file {path}: {problem}") from None
        except yaml.YAMLError as exc:
            raise TrackError(f"track file {path}: not valid YAML: {exc}") from None
        try:
            return cls.from_dict(data, default_name=path.stem)
        except (TypeError, ValueError, KeyError) as exc:
            raise TrackError(f"track file {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "track") -> Track:
        if not isinstance(data, dict):
            raise ValueError("expected a mapping at the top level")
        unknown = set(data) - {"name", "centerline", "road_width", "markings", "look"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        if "centerline" not in data or "road_width" not in data:
            raise ValueError("needs 'centerline' (list of [x, y] in m) and 'road_width' (m)")
        points = np.asarray(data["centerline"], dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 4:
            raise ValueError(f"centerline must be at least 4 points [x, y], got shape {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError("centerline holds NaN or Inf")
        width = float(data["road_width"])
        if not 0.2 <= width <= 20.0:
            raise ValueError(f"road_width must be in [0.2, 20] m, got {width}")
        markings = Markings(**(data.get("markings") or {}))
        look_data = dict(data.get("look") or {})
        for key in ("road", "ground", "edge", "center", "fog_color", "checker_color"):
            if key in look_data:
                rgb = tuple(float(v) for v in look_data[key])
                if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
                    raise ValueError(f"look.{key} must be 3 values in [0, 1], got {look_data[key]}")
                look_data[key] = rgb
        track = cls(str(data.get("name", default_name)), points, width, markings, Look(**look_data))
        track._check_geometry()
        return track

    def _check_geometry(self) -> None:
        # The road must not overlap itself: points far apart along the loop stay a road apart.
        pts, s = self.samples, self.arclength
        step = max(1, len(pts) // 400)
        p, sp = pts[::step], s[::step]
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        along = np.abs(sp[:, None] - sp[None])
        along = np.minimum(along, self.length - along)
        close = (d < self.road_width * 1.05) & (along > self.road_width * 3.0)
        if close.any():
            i, j = np.argwhere(close)[0]
            raise ValueError(
                f"the road overlaps itself near ({p[i, 0]:.2f}, {p[i, 1]:.2f}) and ({p[j, 0]:.2f}, {p[j, 1]:.2f})"
            )

    # --- geometry --------------------------------------------------------------------------
    @property
    def samples(self) -> np.ndarray:
        return _sampled(self)[0]

    @property
    def arclength(self) -> np.ndarray:
        return _sampled(self)[1]

    @property
    def length(self) -> float:
        return float(_sampled(self)[2])

    def tangent(self) -> np.ndarray:
        pts = self.samples
        t = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
        return t / np.linalg.norm(t, axis=1, keepdims=True)

    def project(self, x: float, y: float) -> dict[str, float]:
        """Nearest centreline point: signed cross-track error (m, positive left of the driving
        direction), progress s along the loop (m), road heading (rad), curvature (1/m)."""
        pts = self.samples
        d2 = (pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2
        i = int(np.argmin(d2))
        # Refine on the two segments around the nearest sample.
        best = (math.inf, 0.0, i)
        for a, b in ((i - 1, i), (i, i + 1)):
            pa, pb = pts[a % len(pts)], pts[b % len(pts)]
            seg = pb - pa
            t = float(np.clip(np.dot([x, y] - pa, seg) / np.dot(seg, seg), 0.0, 1.0))
            q = pa + t * seg
            dist = float(np.hypot(x - q[0], y - q[1]))
            if dist < best[0]:
                best = (dist, t, a)
        dist, t, a = best
        pa, pb = pts[a % len(pts)], pts[(a + 1) % len(pts)]
        seg = pb - pa
        heading = math.atan2(seg[1], seg[0])
        cross = seg[0] * (y - pa[1]) - seg[1] * (x - pa[0])
        s = (self.arclength[a % len(pts)] + t * np.linalg.norm(seg)) % self.length
        return {
            "xte": math.copysign(dist, cross),
            "s": float(s),
            "heading": heading,
            "curvature": float(self.curvature()[a % len(pts)]),
        }

    def off_road(self, x: float, y: float, yaw: float, wheels) -> bool:
        """Whether a wheel of a robot at pose (x, y, yaw) is off the road, its wheels touching the
        ground at `wheels`, (forward, left) points in its frame (RobotSpec.wheel_contacts): the one
        definition of leaving the road for the simulator, the evaluation and the demos."""
        c, s = math.cos(yaw), math.sin(yaw)
        return any(
            abs(self.project(x + c * fwd - s * left, y + s * fwd + c * left)["xte"]) > self.road_width / 2
            for fwd, left in wheels
        )

    def curvature(self) -> np.ndarray:
        """Signed curvature at each sample (1/m, positive turning left)."""
        return _sampled(self)[3]

    def pose_at(self, s: float, offset: float = 0.0) -> tuple[float, float, float]:
        """(x, y, yaw) on the road at progress s, `offset` m to the left of the centreline."""
        s = s % self.length
        i = int(np.searchsorted(self.arclength, s, side="right") - 1)
        pts = self.samples
        pa, pb = pts[i], pts[(i + 1) % len(pts)]
        seg = pb - pa
        t = (s - self.arclength[i]) / np.linalg.norm(seg)
        yaw = math.atan2(seg[1], seg[0])
        p = pa + t * seg + offset * np.array([-math.sin(yaw), math.cos(yaw)])
        return float(p[0]), float(p[1]), yaw

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the road with a margin of one road width."""
        pts = self.samples
        m = 1.5 * self.road_width
        return (
            float(pts[:, 0].min() - m),
            float(pts[:, 1].min() - m),
            float(pts[:, 0].max() + m),
            float(pts[:, 1].max() + m),
        )

    # --- appearance ------------------------------------------------------------------------
    def texture(self, pixels_per_m: float = 50.0) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """An (h, w, 3) uint8 top-down image of ground, road and markings over `bounds`; row 0 is
        ymax (image convention). Returns the image and the bounds it covers."""
        xmin, ymin, xmax, ymax = self.bounds
        w = int(math.ceil((xmax - xmin) * pixels_per_m))
        h = int(math.ceil((ymax - ymin) * pixels_per_m))
        xs = xmin + (np.arange(w) + 0.5) / pixels_per_m
        ys = ymax - (np.arange(h) + 0.5) / pixels_per_m
        gx, gy = np.meshgrid(xs, ys)
        dist, s, nearest = _distance_field(self, gx.ravel(), gy.ravel())
        dist, s = dist.reshape(h, w), s.reshape(h, w)
        look, mk = self.look, self.markings
        img = np.empty((h, w, 3), dtype=np.float32)
        img[:] = look.ground
        if look.checker > 0:
            squares = (np.floor(gx / look.checker) + np.floor(gy / look.checker)) % 2 == 1
            img[squares] = look.checker_color
        half = self.road_width / 2
        img[dist <= half] = look.road
        edge = (dist <= half) & (dist >= half - mk.edge_width)
        img[edge] = look.edge
        if mk.center_width > 0:
            dashed = (s % (mk.dash_length + mk.gap_length)) < mk.dash_length
            img[(dist <= mk.center_width / 2) & dashed] = look.center
        if look.shadow > 0:
            # Bands across the road and the ground beside it, slanted, every shadow_spacing m of
            # progress: what a row of posts or trees casts in a low sun, painted on the ground.
            tangent = self.tangent()[nearest]
            rel = np.stack([gx.ravel(), gy.ravel()], axis=1) - self.samples[nearest]
            along = s + (tangent * rel).sum(axis=1).reshape(h, w)  # progress, between the samples too
            offset = (tangent[:, 0] * rel[:, 1] - tangent[:, 1] * rel[:, 0]).reshape(h, w)  # + left
            band = (along + look.shadow_slant * offset) % look.shadow_spacing < look.shadow_width
            img[band] *= 1.0 - look.shadow
        return (img * 255).round().astype(np.uint8), (xmin, ymin, xmax, ymax)


_CACHE: dict[int, tuple] = {}


def _sampled(track: Track) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Centreline samples about `spacing` apart, their arc length, the loop length, curvature."""
    key = id(track)
    if key in _CACHE and _CACHE[key][0] is track:
        return _CACHE[key][1]
    dense = _catmull_rom(track.control_points, per_segment=200)
    seg = np.linalg.norm(np.diff(np.vstack([dense, dense[:1]]), axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(cum[-1])
    n = max(int(round(length / track.spacing)), 16)
    s = np.linspace(0.0, length, n, endpoint=False)
    closed = np.vstack([dense, dense[:1]])
    pts = np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], axis=1)
    # Curvature: turn of the heading between neighbouring segments per metre (positive left).
    d = np.roll(pts, -1, axis=0) - pts
    heading = np.arctan2(d[:, 1], d[:, 0])
    turn = np.angle(np.exp(1j * (heading - np.roll(heading, 1))))
    ds = np.linalg.norm(d, axis=1)
    curvature = turn / ((ds + np.roll(ds, 1)) / 2)
    result = (pts, s, length, curvature)
    _CACHE[key] = (track, result)
    return result


def _catmull_rom(points: np.ndarray, per_segment: int) -> np.ndarray:
    """A closed centripetal Catmull-Rom spline through `points` (no cusps, no self-loops)."""
    out = []
    n = len(points)
    for i in range(n):
        p0, p1, p2, p3 = (points[(i + k) % n] for k in (-1, 0, 1, 2))
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5
        t = np.linspace(t1, t2, per_segment, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.vstack(out)


def _distance_field(track: Track, x: np.ndarray, y: np.ndarray, chunk: int = 20000):
    """Distance to the centreline, progress of the nearest sample and its index, for many query points."""
    pts, s = track.samples, track.arclength
    dist = np.empty(x.size)
    prog = np.empty(x.size)
    nearest = np.empty(x.size, dtype=np.int64)
    for start in range(0, x.size, chunk):
        qx, qy = x[start : start + chunk, None], y[start : start + chunk, None]
        d2 = (qx - pts[None, :, 0]) ** 2 + (qy - pts[None, :, 1]) ** 2
        i = np.argmin(d2, axis=1)
        dist[start : start + chunk] = np.sqrt(d2[np.arange(len(i)), i])
        prog[start : start + chunk] = s[i]
        nearest[start : start + chunk] = i
    return dist, prog, nearest


def track_path(name: str) -> Path:
    """A track by name (a shipped track in config/tracks) or by path to any track file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return share_path("config", "tracks", f"{name}.yaml")
