"""Stopping child processes the way ROS tools expect: SIGINT first (a node's clean shutdown, a
recorder closing its bag), a kill only for what does not end in time. No ROS import here."""

from __future__ import annotations

import signal
import subprocess
import time


def stop(*procs: subprocess.Popen, timeout: float = 10.0) -> list[int]:
    """SIGINT every process still running, wait up to `timeout` seconds for all of them together,
    kill the rest; returns their exit codes (a killed one: -9)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [proc.returncode for proc in procs]
