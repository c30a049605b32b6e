"""How long controller_node takes to end after a Ctrl-C (SIGINT to its process, as a terminal and
`ros2 launch` send it), beside a bare rclpy node started and stopped the same way in this run
(rclpy.init, one node, spin; the least a ROS Python process pays). `ros2 launch` escalates to
SIGTERM 5 s after SIGINT, and the node's own deadline dumps every thread's stack and exits 1 after
4 s: on a loaded machine what the exit costs is multiplied by the load, so it must be small.

Until 2026-12-06 the node left through the interpreter's finalization (tearing down torch, numba
and rclpy): 0.61-0.66 s here with two trainings running beside it, 0.02-0.05 s without it.

    .venv/bin/python bench/shutdown.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

EXECUTABLE = Path(sys.prefix) / "lib" / "liquid_control" / "controller_node"
BARE_NODE = (
    "import rclpy, sys\n"
    "from rclpy.executors import ExternalShutdownException\n"
    "rclpy.init()\n"
    "node = rclpy.create_node('bare_node')\n"
    "print('spinning', flush=True)\n"
    "try:\n"
    "    rclpy.spin(node)\n"
    "except (KeyboardInterrupt, ExternalShutdownException):\n"
    "    pass\n"
    "node.destroy_node()\n"
    "rclpy.try_shutdown()\n"
)


def _exit_after_sigint(command: list[str], ns: str, ready: str, timeout_s: float = 120.0) -> float:
    """Start `command`, wait until its output says `ready` (imports done, spinning), SIGINT it; the
    seconds from the signal to its exit."""
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*command, "--ros-args", "-r", f"__ns:={ns}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:  # keeps the pipe drained to the end, so the process never blocks on it
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen.wait(timeout_s):
            raise SystemExit(f"{command[0]} never said {ready!r} in {timeout_s:.0f} s:\n{''.join(lines)[-2000:]}")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} exited {proc.returncode} after SIGINT:\n{''.join(lines)[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not EXECUTABLE.exists():
        print(f"{EXECUTABLE} not installed (make venv)", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    node, bare = [], []
    for k in range(args.rounds):  # interleaved: both see the same machine
        node.append(_exit_after_sigint([str(EXECUTABLE)], f"/bench_shutdown_{os.getpid()}_{k}", "running"))
        bare.append(_exit_after_sigint([sys.executable, "-c", BARE_NODE], f"/bench_bare_{os.getpid()}_{k}", "spinning"))
    result = {
        "rounds": args.rounds,
        "controller_node_exit_s": {"median": float(np.median(node)), "max": float(np.max(node))},
        "bare_rclpy_node_exit_s": {"median": float(np.median(bare)), "max": float(np.max(bare))},
        "ratio_median": float(np.median(node) / max(np.median(bare), 1e-6)),
        "load_average_1min": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"SIGINT to exit, median of {args.rounds} (max): controller_node "
            f"{result['controller_node_exit_s']['median']:.3f} s ({result['controller_node_exit_s']['max']:.3f}), "
            f"bare rclpy node {result['bare_rclpy_node_exit_s']['median']:.3f} s "
            f"({result['bare_rclpy_node_exit_s']['max']:.3f}); ratio {result['ratio_median']:.2f}; "
            f"load average {result['load_average_1min']:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
