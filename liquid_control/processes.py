"""Child processes as tests and benchmarks handle them: stopped the way ROS tools expect (SIGINT
first, a node's clean shutdown or a recorder closing its bag; a kill only for what does not end in
time), and their resident memory. No ROS import here."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f"process {pid}: no VmRSS in /proc/{pid}/status")


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
