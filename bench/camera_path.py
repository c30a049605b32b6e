"""A camera frame's way through the controller, stage by stage, one thread, batch 1: message to
array (raw 96x64 rgb8; 640x480 JPEG decoded in full and at the DCT scale the controller uses),
resize to the model's input, the camera encoder, and the liquid step. The shipped policy; the
baselines in the same run are OpenCV's own JPEG decode and resize of the same frame.

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

from liquid_control.paths import DEFAULT_MODEL
from liquid_control.runtime.modelfile import load_policy
from liquid_control.runtime.sensing import compressed_to_array, image_to_array, resize


def _scene(width: int, height: int) -> np.ndarray:
    """A camera-like frame: smooth shading, a road band with edge lines, and sensor noise (a pure
    noise frame would make JPEG far larger and slower than a real camera's)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([90 + 60 * y / height, 110 + 40 * x / width, 80 + 30 * (x + y) / (width + height)], -1)
    road = np.abs(x - width / 2 - (y - height) * 0.3) < width * (0.1 + 0.3 * y / height)
    rgb[road] = 60
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    policy, _ = load_policy(DEFAULT_MODEL)
    run = policy.streamer()
    w, h = run.image_width, run.image_height
    n = args.repeats

    small = _scene(96, 64)
    raw = types.SimpleNamespace(encoding="rgb8", height=64, width=96, step=96 * 3, is_bigendian=0,
                                data=small.tobytes())
    big = _scene(640, 480)
    jpeg_bytes = cv2.imencode(".jpg", big[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
    jpeg = types.SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=jpeg_bytes.tobytes())
    rgb_small = image_to_array(raw)
    rgb_scaled = compressed_to_array(jpeg, w, h)
    model_input = resize(rgb_small, w, h)
    frame = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))[None]
    state = run.initial_state()
    rows = []
    with torch.inference_mode():
        rows += [
            ("raw 96x64 rgb8", "convert (image_to_array)", measure(lambda: image_to_array(raw), n)),
            ("raw 96x64 rgb8", f"resize to {w}x{h}", measure(lambda: resize(rgb_small, w, h), n)),
            ("JPEG 640x480", "OpenCV imdecode, full size (baseline)", measure(
                lambda: cv2.imdecode(jpeg_bytes, cv2.IMREAD_COLOR), n // 4)),
            ("JPEG 640x480", "decode, full size", measure(lambda: compressed_to_array(jpeg), n // 4)),
            ("JPEG 640x480", f"decode at DCT scale ({rgb_scaled.shape[1]}x{rgb_scaled.shape[0]})", measure(
                lambda: compressed_to_array(jpeg, w, h), n // 4)),
            ("JPEG 640x480", f"resize {rgb_scaled.shape[1]}x{rgb_scaled.shape[0]} to {w}x{h}", measure(
                lambda: resize(rgb_scaled, w, h), n)),
            ("JPEG 640x480", f"OpenCV full decode + INTER_AREA to {w}x{h} (baseline)", measure(
                lambda: cv2.resize(cv2.imdecode(jpeg_bytes, cv2.IMREAD_COLOR), (w, h),
                                   interpolation=cv2.INTER_AREA), n // 4)),
            ("model", "camera encoder (traced, frozen torch)", measure(lambda: run._camera(frame), n)),
            ("model", "liquid step + readout", measure(lambda: run.advance(state, 0.005), n)),
        ]
    load = os.getloadavg()[0]
    print(f"Camera path, shipped policy ({w}x{h} input), 1 thread, load average {load:.1f}")
    print(f"{'input':<16}{'stage':<52}{'p50 us':>9}{'p99 us':>9}")
    for what, stage, stats in rows:
        print(f"{what:<16}{stage:<52}{stats['p50_us']:>9.1f}{stats['p99_us']:>9.1f}")
    p = {stage: stats["p50_us"] for _, stage, stats in rows}
    stage_names = [stage for _, stage, _ in rows]
    ours_jpeg = p[stage_names[4]] + p[stage_names[5]]
    base_jpeg = p[stage_names[6]]
    per_frame_raw = sum(p[stage_names[i]] for i in (0, 1, 7, 8))
    per_frame_jpeg = ours_jpeg + p[stage_names[7]] + p[stage_names[8]]
    print(f"per frame, raw 96x64: {per_frame_raw:.0f} us; JPEG 640x480: {per_frame_jpeg:.0f} us "
          f"(decode + resize {ours_jpeg:.0f} us = {base_jpeg / ours_jpeg:.1f}x faster than OpenCV's full decode + "
          f"resize, {base_jpeg:.0f} us)")
    if args.json:
        print(json.dumps([{"input": a, "stage": b, **s} for a, b, s in rows]))


if __name__ == "__main__":
    main()
