"""Peak memory of `liquid-control train` on an hour of data: 30 Hz camera + 200 Hz IMU, as
`liquid-control collect` writes it (12 episodes of 5 minutes on the oval). Frames are decoded once
into the on-disk cache (uint8 at the model's input size, memory-mapped), so memory should not grow
with the hours of camera. Two runs: the first builds the cache, the second reuses it. Peak RSS is
the child's own (getrusage of the waited child); the baseline, measured in the same run, is a
process that only imports the trainer (torch and all), and the reference is what the frames would
take in memory as float32 (how the dataset held them before the cache).

    .venv/bin/python bench/train_memory.py [--bag PATH] [--minutes 60] [--iterations 50] [--json]

Without --bag it collects the data first (about half an hour on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _peak_mb(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `cmd` as the only child in a fresh process (so RUSAGE_CHILDREN is its own peak)."""
    probe = (
        "import resource, subprocess, sys, time, json; t = time.time(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(json.dumps({'rc': r.returncode, 'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "'seconds': time.time() - t, 'err': r.stderr[-2000:]}))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {result['err']}")
    return result["peak_kb"] / 1024, result["seconds"], result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", help="a bag to train on (default: collect --minutes of data first)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "LIQUID_CONTROL_PROGRESS": "0"}
    cli = [sys.executable, "-m", "liquid_control.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bag = Path(args.bag) if args.bag else tmp / "hour"
        if not args.bag:
            seconds = args.minutes * 60 / 12
            print(f"collecting {args.minutes:g} minutes of data into {bag} ...", flush=True)
            subprocess.run(
                [
                    *cli,
                    "collect",
                    "--track",
                    "oval",
                    "--output",
                    str(bag),
                    "--episodes",
                    "12",
                    "--seconds",
                    str(seconds),
                    "--seed",
                    "11",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
        floor, _, _ = _peak_mb([sys.executable, "-c", "import liquid_control.learning.train"], env)
        train = [
            *cli,
            "train",
            "--bag",
            str(bag),
            "--output",
            str(tmp / "m.safetensors"),
            "--iterations",
            str(args.iterations),
            "--eval-every",
            str(args.iterations),
            "--cache-dir",
            str(tmp / "cache"),
        ]
        cold, cold_s, _ = _peak_mb(train, env)
        warm, warm_s, _ = _peak_mb(train, env)
        (entry,) = [p for p in (tmp / "cache").iterdir() if p.is_dir()]
        meta = json.loads((entry / "meta.json").read_text())
        frames = meta["frames_shape"]
        float32_gb = int(np.prod(frames)) * 4 / 1e9
        result = {
            "bag_gb": sum(f.stat().st_size for f in bag.rglob("*") if f.is_file()) / 1e9,
            "frames": frames[0],
            "steps": meta["steps"],
            "episodes": meta["episodes"],
            "cache_gb": (entry / "frames.u8").stat().st_size / 1e9,
            "frames_as_float32_gb": float32_gb,
            "import_floor_mb": floor,
            "peak_rss_building_cache_mb": cold,
            "peak_rss_cache_reused_mb": warm,
            "seconds_building_cache_and_training": cold_s,
            "seconds_training_cache_reused": warm_s,
            "iterations": args.iterations,
        }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['frames']} frames, {result['steps']} steps in {result['episodes']} episodes; bag "
            f"{result['bag_gb']:.2f} GB, frame cache {result['cache_gb']:.2f} GB on disk (as float32 in memory: "
            f"{float32_gb:.1f} GB)"
        )
        print(
            f"peak RSS: building the cache + {args.iterations} iterations {cold:.0f} MB ({cold_s:.0f} s), cache "
            f"reused {warm:.0f} MB ({warm_s:.0f} s); importing the trainer alone {floor:.0f} MB"
        )
        print(f"peak / import floor: {cold / floor:.2f}x building, {warm / floor:.2f}x reused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
