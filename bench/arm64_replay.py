"""Replay a bag through the onnx backend and save the commands, or compare two such recordings.

The one definition of "replay on the onnx backend" that bench/arm64_check.sh runs on this machine
and, under emulation, in an arm64 Debian root with `.[edge]` from aarch64 wheels. It imports only
what `.[edge]` installs (no torch, no rclpy, no MuJoCo).

    python bench/arm64_replay.py MODEL.onnx BAG OUT.npy      # rows: stamp, linear.x, angular.z
    python bench/arm64_replay.py --compare A.npy B.npy [--tolerance 1e-5]
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np


def replay(model: str, bag: str) -> np.ndarray:
    from liquid_control.bags.io import read_events
    from liquid_control.runtime.controller import LiquidController
    from liquid_control.runtime.onnx_policy import load_onnx_policy

    controller = LiquidController(*load_onnx_policy(model))
    rows = []
    for event in read_events(bag, command=None):
        command = controller.on_sensor(event.kind, event.stamp, event.data)
        if command is not None:
            rows.append((command.stamp, command.linear_x, command.angular_z))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def compare(a: np.ndarray, b: np.ndarray, tolerance: float) -> tuple[bool, str]:
    if a.shape != b.shape:
        return False, f"{len(a)} commands against {len(b)}"
    worst = float(np.max(np.abs(a - b))) if a.size else 0.0
    same = a.size > 0 and worst <= tolerance
    return same, f"{len(a)} commands, largest difference {worst:.2e} (tolerance {tolerance:g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="MODEL BAG OUT, or with --compare: A B")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args(argv)
    if args.compare:
        if len(args.paths) != 2:
            parser.error("--compare takes two .npy files")
        same, summary = compare(np.load(args.paths[0]), np.load(args.paths[1]), args.tolerance)
        print(f"{'same' if same else 'DIFFERENT'}: {summary}")
        return 0 if same else 1
    if len(args.paths) != 3:
        parser.error("replay takes MODEL BAG OUT")
    model, bag, out = args.paths
    commands = replay(model, bag)
    np.save(out, commands)
    print(f"{platform.machine()}: {len(commands)} commands from {bag} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
