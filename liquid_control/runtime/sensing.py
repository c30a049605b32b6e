"""Sensor messages to arrays: camera images (any common encoding, row padding, byte order), IMU
samples and wheel odometry. Works on any object with the message's fields, so rclpy messages and messages read from a
bag (where `data` is a numpy array) take the same path. No ROS import here.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from transforms3d.euler import quat2euler

from ..model.specs import FIELDS, IMU_FIELDS, ODOM_FIELDS  # noqa: F401 - the arrays below give these values

# encoding -> (channels, bytes per channel, channel order for RGB output)
ENCODINGS: dict[str, tuple[int, int, tuple[int, ...] | None]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, None),
    "mono16": (1, 2, None),
}


class SensorError(ValueError):
    """A sensor message that cannot be used; the message says what is wrong with it."""


def _bytes_of(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise SensorError(f"{width}x{height} = {width * height} pixels is over max_image_pixels {max_pixels}")


def _output_dtype(dtype: Any) -> np.dtype:
    out = np.dtype(dtype)
    if out not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise ValueError(f"dtype must be numpy.uint8 or numpy.float32, not {out}")
    return out


def image_to_array(msg: Any, max_pixels: int | None = None, *, dtype: Any = np.float32) -> np.ndarray:
    """A sensor_msgs/Image as an (height, width, 3) RGB array: float32 in [0, 1] (the default), or
    with dtype=np.uint8 the 8-bit values themselves, without a float conversion.

    uint8 output is a read-only view of the message's bytes (no copy) for every 8-bit encoding: the
    channel order, the alpha channel, row padding and mono's three equal channels are strides of
    the view, which model_frame reads as they are. mono16 is scaled to 8 bits (round(v * 255 /
    65535)); as float32 it is scaled by 1/65535. Mono images are repeated over the three channels.
    Row padding (`step` > width * pixel size) is dropped; `is_bigendian` is honoured for 16-bit data.
    An image of more than `max_pixels` is refused before its data is touched.
    """
    out = _output_dtype(dtype)
    _check_pixels(int(msg.width), int(msg.height), max_pixels)
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise SensorError(f"unsupported image encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}")
    channels, depth, order = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise SensorError(f"image has no pixels ({width}x{height})")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise SensorError(f"image step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    data = _bytes_of(msg.data)
    if data.size != step * height:
        raise SensorError(f"image data has {data.size} bytes, expected step {step} x height {height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    if depth == 1:
        pixels = rows.reshape(height, width, channels)  # a view: rows keep their padding as stride
        if order is None:
            rgb = np.broadcast_to(pixels, (height, width, 3))
        elif order == (0, 1, 2):
            rgb = pixels[:, :, :3]
        else:
            rgb = pixels[:, :, 2::-1]
        if out == np.uint8:
            rgb = rgb.view()
            rgb.flags.writeable = False
            return rgb
        # One pass from the bytes into a C-ordered float array (a fancy-indexed channel reorder
        # would leave the channels planes apart, and every later pass would pay for it).
        return np.multiply(rgb, np.float32(1.0 / 255.0), dtype=np.float32, order="C")
    values = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").reshape(height, width, 1)
    if out == np.uint8:
        scaled = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    else:
        scaled = values.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.repeat(scaled, 3, axis=2)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compressed_size(msg: Any) -> tuple[str, int, int]:
    """(kind "jpeg" or "png", width, height) of a sensor_msgs/CompressedImage from its header bytes
    alone, so a size limit is checked before anything is decoded. SensorError if it is neither."""
    return _compressed_size(_bytes_of(msg.data), msg.format)


def _compressed_size(data: np.ndarray, fmt: Any) -> tuple[str, int, int]:
    head = data[:32].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise SensorError("compressed image: truncated PNG header")
        return "png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        import simplejpeg

        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise SensorError(f"compressed image: not a readable JPEG ({exc})") from None
        return "jpeg", int(width), int(height)
    raise SensorError(f"compressed image: neither JPEG nor PNG data (format {str(fmt)!r})")


def compressed_to_array(
    msg: Any, min_width: int = 0, min_height: int = 0, max_pixels: int | None = None, *, dtype: Any = np.float32
) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's compressed plugin writes
    it) as an (h, w, 3) RGB array, float32 in [0, 1] or (dtype=np.uint8) the decoded 8-bit values.
    A JPEG is decoded by libjpeg-turbo (simplejpeg) at the smallest DCT scale (1/2, 1/4, 1/8) that
    still gives at least min_width x min_height (0: full size), a fraction of a full decode; then
    model_frame makes it the model's size as for raw images. `max_pixels` is checked on the
    header, before decoding. A corrupt or truncated image is a SensorError."""
    out = _output_dtype(dtype)
    data = _bytes_of(msg.data)
    kind, width, height = _compressed_size(data, msg.format)
    if width <= 0 or height <= 0:
        raise SensorError(f"compressed image has no pixels ({width}x{height})")
    _check_pixels(width, height, max_pixels)
    if kind == "jpeg":
        import simplejpeg

        try:
            rgb = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_width=min_width, min_height=min_height, strict=True
            )
        except ValueError as exc:
            raise SensorError(f"compressed image: corrupt or truncated JPEG ({exc})") from None
    else:
        try:
            import cv2
        except ImportError:
            raise SensorError("compressed image: PNG frames need OpenCV (pip install 'liquid_control[png]')") from None
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if decoded is None:
            raise SensorError("compressed image: corrupt or truncated PNG")
        rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if out == np.uint8:
        return rgb
    return rgb.astype(np.float32) * np.float32(1.0 / 255.0)


def model_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A decoded camera frame as the model's input: (height, width, 3) uint8 RGB, C-contiguous, a
    new array. The one conversion that training (the frame cache) and the running encoders share,
    so both see the same pixels.

    `image` is (h, w, 3) RGB of any size and any strides (image_to_array's uint8 views are read
    where they lie) in one of:
      uint8            the pixel values;
      uint16           16-bit values, scaled to 8 bits: round(v * 255 / 65535);
      float (16/32/64) values in [0, 1] (image_to_array's float32 output, the simulator's frames),
                       scaled to 8 bits: round(v * 255) (half to even) after clipping to [0, 1];
                       NaN counts as 0.
    Non-uint8 input is brought to uint8 first, so a frame and its float32 copy (v / 255) give the
    same model frame. The resize is then resample_matrix's per axis (area average when shrinking,
    OpenCV's INTER_AREA; bilinear when enlarging, INTER_LINEAR), computed in float32 from the 8-bit
    values and rounded to the nearest level once (so within 0.5/255, plus float32 rounding, of
    `resize` on the float frame). 96x64 -> 64x48 takes about 24 us, against 30 us for OpenCV's uint8
    INTER_AREA on a C-ordered frame (bench/camera_path.py), and any 8-bit encoding's view is read
    without a copy.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"model_frame takes an (h, w, 3) RGB frame, not shape {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0 or width <= 0 or height <= 0:
        raise ValueError(f"model_frame: no pixels to resize ({w}x{h} to {width}x{height})")
    if image.dtype != np.uint8:
        image = _to_levels(image)
    if (h, w) == (height, width) and image.flags.c_contiguous:
        return image.copy()
    # The frame's bytes as one flat read-only buffer from its lowest-addressed byte: pixel (y, x)
    # channel c is buf[y * s0 + x * s1 + offset[c]] (a BGR view has s2 = -1, a mono one s2 = 0).
    s0, s1, s2 = image.strides
    if s0 < 0 or s1 < 0 or 2 * abs(s2) >= max(s1, 1):  # flipped, or channels not within a pixel
        image = np.ascontiguousarray(image)
        s0, s1, s2 = image.strides
    first = 2 if s2 < 0 else 0
    offsets = [(c - first) * s2 for c in range(3)]
    row_length = (w - 1) * s1 + max(offsets) + 1
    buf = np.lib.stride_tricks.as_strided(
        image[0, 0, first:], shape=((h - 1) * s0 + row_length,), strides=(1,), writeable=False
    )
    out = np.empty((height, width, 3), dtype=np.uint8)
    _resample_levels(
        buf, s0, s1, row_length, offsets[0], offsets[1], offsets[2], *_taps(h, height), *_taps(w, width), out
    )
    return out


def _to_levels(image: np.ndarray) -> np.ndarray:
    """model_frame's scaling of a uint16 or float frame to uint8 levels (C-contiguous)."""
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"model_frame takes uint8, uint16 or float [0, 1] frames, not {image.dtype}")
    out = np.empty(image.shape, dtype=np.uint8)
    _float_levels(image, out)
    return out


@numba.njit(cache=True)
def _float_levels(image, out):  # pragma: no cover - compiled
    """round(v * 255) of float values in [0, 1], clipped; NaN is 0. One pass, any strides."""
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            for c in range(image.shape[2]):
                v = np.float32(image[i, j, c]) * np.float32(255.0)
                if v >= np.float32(255.0):
                    out[i, j, c] = 255
                elif v > np.float32(0.0):
                    out[i, j, c] = np.uint8(np.rint(v))
                else:  # also NaN
                    out[i, j, c] = 0


@numba.njit(cache=True)
def _resample_levels(
    buf, row_stride, pixel_stride, row_length, o0, o1, o2, row_index, row_weight, col_index, col_weight, out
):  # pragma: no cover - compiled
    """resize's gathered taps on 8-bit data read in place: rows first over the frame's contiguous
    bytes (all its channels, in any order: vectorised), then columns picking R, G, B through a
    gather table; float32 sums, rounded to the nearest level (the weights are >= 0 and sum to 1:
    nothing to clip below). Unsigned indices and row slices: no wraparound checks, so the row pass
    vectorises (indexing buf[start + x] directly made it ten times slower on 640x480)."""
    height, width, _ = out.shape
    taps = col_index.shape[1]
    gather = np.empty((width * 3, taps), dtype=np.uintp)
    weight = np.empty((width * 3, taps), dtype=np.float32)
    for j in range(width):
        for b in range(taps):
            base = col_index[j, b] * pixel_stride
            gather[3 * j, b], gather[3 * j + 1, b], gather[3 * j + 2, b] = base + o0, base + o1, base + o2
            weight[3 * j, b] = weight[3 * j + 1, b] = weight[3 * j + 2, b] = col_weight[j, b]
    flat = out.reshape(height, width * 3)
    row = np.empty(row_length, dtype=np.float32)
    n = np.uintp(row_length)
    for i in range(height):
        start, wr = row_index[i, 0] * row_stride, row_weight[i, 0]
        src = buf[start : start + row_length]
        for x in range(n):
            row[x] = wr * np.float32(src[x])
        for a in range(1, row_index.shape[1]):
            start, wr = row_index[i, a] * row_stride, row_weight[i, a]
            src = buf[start : start + row_length]
            for x in range(n):
                row[x] += wr * np.float32(src[x])
        for q in range(width * 3):
            acc = np.float32(0.5)
            for b in range(taps):
                acc += weight[q, b] * row[gather[q, b]]
            flat[i, q] = np.uint8(min(acc, np.float32(255.0)))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (h, w, c) float image by area averaging (downscale) or bilinear sampling
    (upscale), in float32 (a uint8 image is read as its values / 255, like image_to_array's float
    output). The model's input is model_frame's (uint8, the same maps); this is the float form.

    Both are linear maps per axis (resample_matrix) in which each output pixel reads only a few
    neighbouring input pixels, so the resize gathers those taps (cached per size pair) in one
    compiled loop: a 96x64 -> 64x48 frame takes about 22 microseconds, against about 75 for dense
    numpy matrix products. No BLAS call, so no BLAS thread pool beside the controller. A frame that
    is not C-ordered is copied first (one with its channels planes apart costs more than the resize)."""
    if image.dtype == np.uint8:
        image = np.multiply(image, np.float32(1.0 / 255.0), dtype=np.float32, order="C")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    image = np.ascontiguousarray(image, dtype=np.float32)
    out = np.empty((height, width, image.shape[2]), dtype=np.float32)
    _resample(image, *_taps(h, height), *_taps(w, width), out)
    return out


@numba.njit(cache=True)
def _resample(image, row_index, row_weight, col_index, col_weight, out):  # pragma: no cover - compiled
    height, width, channels = out.shape
    flat = image.reshape(image.shape[0], image.shape[1] * channels)
    row = np.empty(flat.shape[1], dtype=np.float32)
    for i in range(height):
        # The output row's input rows, weighted (contiguous: vectorised).
        r, wr = row_index[i, 0], row_weight[i, 0]
        for x in range(row.size):
            row[x] = wr * flat[r, x]
        for a in range(1, row_index.shape[1]):
            r, wr = row_index[i, a], row_weight[i, a]
            for x in range(row.size):
                row[x] += wr * flat[r, x]
        for j in range(width):
            for ch in range(channels):
                acc = np.float32(0.0)
                for b in range(col_index.shape[1]):
                    acc += col_weight[j, b] * row[col_index[j, b] * channels + ch]
                out[i, j, ch] = acc


@functools.lru_cache(maxsize=32)
def _taps(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """resample_matrix(n, size) as (size, k) input indices and weights, k = the most non-zero
    weights of any output pixel (unused taps: index 0, weight 0)."""
    m = resample_matrix(n, size)
    k = int((m != 0).sum(axis=1).max())
    index = np.zeros((size, k), dtype=np.intp)
    weight = np.zeros((size, k), dtype=np.float32)
    for i in range(size):
        nonzero = np.flatnonzero(m[i])
        index[i, : nonzero.size] = nonzero
        weight[i, : nonzero.size] = m[i, nonzero]
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


@functools.lru_cache(maxsize=32)
def resample_matrix(n: int, size: int) -> np.ndarray:
    """(size, n) weights: output pixel i as a weighted sum of input pixels along one axis."""
    m = np.zeros((size, n), dtype=np.float32)
    if size < n:
        # Area average: each output pixel covers [i n/size, (i+1) n/size) of the input; input
        # pixels partly inside count with the overlapping fraction.
        edges = np.linspace(0.0, n, size + 1)
        for i in range(size):
            lo, hi = edges[i], edges[i + 1]
            for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n)):
                m[i, j] = (min(hi, j + 1) - max(lo, j)) / (hi - lo)
        return m
    # Enlarging: bilinear with pixel centres aligned, edges clamped (OpenCV INTER_LINEAR; shrinking is
    # an area average, INTER_AREA: test_sensing checks both against OpenCV).
    centers = (np.arange(size) + 0.5) * n / size - 0.5
    for i, c in enumerate(centers):
        lo = int(np.clip(np.floor(c), 0, n - 1))
        hi = min(lo + 1, n - 1)
        frac = float(np.clip(c - lo, 0.0, 1.0))
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time (sec, nanosec) as float seconds."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float) -> tuple[int, int]:
    """Float seconds as builtin_interfaces/Time's (sec, nanosec), rounded to the nanosecond."""
    sec = math.floor(seconds)
    return int(sec), min(int(round((seconds - sec) * 1e9)), 999_999_999)


def imu_to_array(msg: Any) -> np.ndarray:
    """A sensor_msgs/Imu as the 9 values of IMU_FIELDS (rad/s, m/s^2, rad).

    Orientation is used only when the message says it is valid (REP 145:
    orientation_covariance[0] == -1 means no orientation); otherwise those three entries are NaN
    so a consumer must decide what to do rather than read a silent zero.
    """
    av, la = msg.angular_velocity, msg.linear_acceleration
    values = [av.x, av.y, av.z, la.x, la.y, la.z]
    if not all(math.isfinite(v) for v in values):
        raise SensorError(f"IMU message holds NaN or Inf: angular_velocity/linear_acceleration = {values}")
    covariance = msg.orientation_covariance
    if covariance[0] == -1.0:
        euler = [math.nan] * 3
    else:
        q = msg.orientation
        quat = [q.w, q.x, q.y, q.z]
        if not all(math.isfinite(v) for v in quat):
            raise SensorError(f"IMU orientation holds NaN or Inf: {quat}")
        norm = math.sqrt(sum(v * v for v in quat))
        if not 0.9 < norm < 1.1:
            raise SensorError(f"IMU orientation is not a unit quaternion (norm {norm:.3f})")
        euler = list(quat2euler([v / norm for v in quat], axes="sxyz"))
    return np.array(values + euler, dtype=np.float64)


def odometry_to_array(msg: Any) -> np.ndarray:
    """A nav_msgs/Odometry as the 3 values of ODOM_FIELDS (its twist: m/s, m/s, rad/s)."""
    twist = msg.twist.twist
    values = [twist.linear.x, twist.linear.y, twist.angular.z]
    if not all(math.isfinite(v) for v in values):
        raise SensorError(f"odometry message holds NaN or Inf: twist = {values}")
    return np.array(values, dtype=np.float64)
