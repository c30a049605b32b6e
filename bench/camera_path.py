"""A camera frame's way through the controller, stage by stage, one thread, batch 1, the shipped
policy: message to array (raw 96x64 rgb8 and bgr8; a 640x480 JPEG decoded at the DCT scale the
controller uses), model_frame (the uint8 resize to the model's input), the camera encoder (ONNX
Runtime, as the torch backend runs it when onnxruntime is installed, and the frozen torch encoder),
and the liquid step. Baselines measured in the same run: the float path this replaced
(image_to_array float32 + resize), OpenCV's uint8 INTER_AREA resize of the same frame, and OpenCV's
full JPEG decode + INTER_AREA. Beside the 640x480 JPEG, the frames other robots send: 160x120 (a
hobby car's camera, DonkeyCar's default) and 1280x720 (a USB or CSI camera at 720p).

    .venv/bin/python bench/camera_path.py [--repeats 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import types

import cv2
import numpy as np
import torch
from step_latency import measure

from liquid_control.model.modelfile import load_policy
from liquid_control.paths import DEFAULT_MODEL
from liquid_control.runtime.sensing import compressed_to_array, image_to_array, model_frame, resize


def _scene(width: int, height: int) -> np.ndarray:
    """A camera-like frame: smooth shading, a road band with edge lines, and sensor noise (a pure
    noise frame would make JPEG far larger and slower than a real camera's)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([90 + 60 * y / height, 110 + 40 * x / width, 80 + 30 * (x + y) / (width + height)], -1)
    road = np.abs(x - width / 2 - (y - height) * 0.3) < width * (0.1 + 0.3 * y / height)
    rgb[road] = 60
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _raw(rgb: np.ndarray, encoding: str) -> types.SimpleNamespace:
    h, w = rgb.shape[:2]
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    return types.SimpleNamespace(
        encoding=encoding, height=h, width=w, step=w * 3, is_bigendian=0, data=np.ascontiguousarray(pixels).tobytes()
    )


def _float_before(msg) -> np.ndarray:
    """image_to_array's float32 output as it was before the uint8 path (rgb8): the channel order
    applied by fancy indexing, which leaves the channels in planes of their own (strides (384, 4,
    24576) for 96x64), so resize first had to copy it into pixel order: the resize measured 79 us
    instead of 27-30 us in the last session."""
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
    pixels = rows.reshape(msg.height, msg.width, 3).astype(np.float32) * (1.0 / 255.0)
    return pixels[:, :, [0, 1, 2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    policy, _ = load_policy(DEFAULT_MODEL)
    run = policy.streamer()  # the encoder in ONNX Runtime when onnxruntime is installed
    frozen = policy.streamer(encoder="torch")
    w, h = run.image_width, run.image_height
    n = args.repeats

    small = _scene(96, 64)
    rgb8, bgr8 = _raw(small, "rgb8"), _raw(small, "bgr8")
    big = _scene(640, 480)
    jpeg_bytes = cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
    jpeg = types.SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=jpeg_bytes.tobytes())
    view_rgb, view_bgr = image_to_array(rgb8, dtype=np.uint8), image_to_array(bgr8, dtype=np.uint8)
    float_small = image_to_array(rgb8)
    float_before = _float_before(rgb8)
    assert not float_before.flags.c_contiguous and np.array_equal(float_before, float_small)
    scaled = compressed_to_array(jpeg, w, h, dtype=np.uint8)
    frame = model_frame(view_rgb, w, h)
    contiguous = np.ascontiguousarray(view_rgb)
    state = run.initial_state()
    raw, jpg, model = "raw 96x64", "JPEG 640x480", "model"
    rows = [
        (raw, "convert rgb8 (image_to_array uint8: a view)", measure(lambda: image_to_array(rgb8, dtype=np.uint8), n)),
        (raw, "convert bgr8 (image_to_array uint8: a view)", measure(lambda: image_to_array(bgr8, dtype=np.uint8), n)),
        (raw, f"model_frame rgb8 -> {w}x{h} uint8", measure(lambda: model_frame(view_rgb, w, h), n)),
        (raw, f"model_frame bgr8 -> {w}x{h} uint8", measure(lambda: model_frame(view_bgr, w, h), n)),
        (
            raw,
            "OpenCV uint8 INTER_AREA, C-ordered RGB (baseline)",
            measure(lambda: cv2.resize(contiguous, (w, h), interpolation=cv2.INTER_AREA), n),
        ),
        (raw, "convert rgb8 to float32 (the path before)", measure(lambda: _float_before(rgb8), n)),
        (raw, f"resize float32 -> {w}x{h} (the path before)", measure(lambda: resize(float_before, w, h), n)),
        (raw, "convert rgb8 to float32 (image_to_array now: C-ordered)", measure(lambda: image_to_array(rgb8), n)),
        (raw, f"resize float32 -> {w}x{h} (of that)", measure(lambda: resize(float_small, w, h), n)),
        (
            jpg,
            f"decode uint8 at DCT scale ({scaled.shape[1]}x{scaled.shape[0]})",
            measure(lambda: compressed_to_array(jpeg, w, h, dtype=np.uint8), n // 4),
        ),
        (
            jpg,
            f"model_frame {scaled.shape[1]}x{scaled.shape[0]} -> {w}x{h}",
            measure(lambda: model_frame(scaled, w, h), n),
        ),
        (
            jpg,
            f"OpenCV full decode + INTER_AREA to {w}x{h} (baseline)",
            measure(
                lambda: cv2.resize(cv2.imdecode(jpeg_bytes, cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_AREA),
                n // 4,
            ),
        ),
        (model, f"camera encoder ({run.encoder})", measure(lambda: run.encode_frame(frame), n)),
        (model, f"camera encoder ({frozen.encoder}, the fallback)", measure(lambda: frozen.encode_frame(frame), n)),
        (model, "liquid step + readout", measure(lambda: run.advance(state, 0.005), n)),
    ]
    other_sizes = ((160, 120), (1280, 720))
    for size in other_sizes:
        rows += _jpeg_rows(_scene(*size), w, h, n)
    load = os.getloadavg()[0]
    print(f"Camera path, shipped policy ({w}x{h} input), 1 thread, load average {load:.1f}")
    print(f"{'input':<14}{'stage':<56}{'p50 us':>9}{'p99 us':>9}")
    for what, stage, stats in rows:
        print(f"{what:<14}{stage:<56}{stats['p50_us']:>9.1f}{stats['p99_us']:>9.1f}")
    p = [stats["p50_us"] for _, _, stats in rows]
    convert, resized, encode, step = p[0], p[2], p[12], p[14]
    jpeg_ours, jpeg_base = p[9] + p[10], p[11]
    print(
        f"per raw 96x64 frame: convert {convert:.0f} + resize {resized:.0f} + encode {encode:.0f} + step {step:.0f} "
        f"= {convert + resized + encode + step:.0f} us (before: convert {p[5]:.0f} + resize {p[6]:.0f} + "
        f"{frozen.encoder} {p[13]:.0f} + step {step:.0f} = {p[5] + p[6] + p[13] + step:.0f} us)"
    )
    print(
        f"model_frame vs OpenCV's uint8 INTER_AREA: {p[4] / p[2]:.2f}x (>1: model_frame faster); "
        f"ONNX Runtime encoder vs frozen torch: {p[13] / p[12]:.1f}x faster; the float resize of a C-ordered "
        f"frame vs the planar one before: {p[6] / p[8]:.1f}x faster"
    )
    print(
        f"per JPEG 640x480 frame: decode + resize {jpeg_ours:.0f} us = {jpeg_base / jpeg_ours:.1f}x faster than OpenCV's "
        f"full decode + resize ({jpeg_base:.0f} us); with encode + step {jpeg_ours + encode + step:.0f} us"
    )
    for k, (sw, sh) in enumerate(other_sizes):
        ours, base = p[15 + 3 * k] + p[16 + 3 * k], p[17 + 3 * k]
        print(
            f"per JPEG {sw}x{sh} frame: decode + resize {ours:.0f} us = {base / ours:.1f}x faster than OpenCV's "
            f"full decode + resize ({base:.0f} us); with encode + step {ours + encode + step:.0f} us"
        )
    if args.json:
        print(json.dumps([{"input": a, "stage": b, **s} for a, b, s in rows]))


def _jpeg_rows(rgb: np.ndarray, w: int, h: int, n: int) -> list:
    """A JPEG (quality 80) of `rgb`: our decode at the DCT scale that covers w x h and model_frame,
    and OpenCV's full decode + INTER_AREA, as three rows."""
    data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
    msg = types.SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=data.tobytes())
    scaled = compressed_to_array(msg, w, h, dtype=np.uint8)
    what = f"JPEG {rgb.shape[1]}x{rgb.shape[0]}"
    repeats = max(n // 4 if rgb.shape[1] <= 640 else n // 20, 20)
    return [
        (
            what,
            f"decode uint8 at DCT scale ({scaled.shape[1]}x{scaled.shape[0]})",
            measure(lambda: compressed_to_array(msg, w, h, dtype=np.uint8), repeats),
        ),
        (
            what,
            f"model_frame {scaled.shape[1]}x{scaled.shape[0]} -> {w}x{h}",
            measure(lambda: model_frame(scaled, w, h), n),
        ),
        (
            what,
            f"OpenCV full decode + INTER_AREA to {w}x{h} (baseline)",
            measure(
                lambda: cv2.resize(cv2.imdecode(data, cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_AREA), repeats
            ),
        ),
    ]


if __name__ == "__main__":
    main()
