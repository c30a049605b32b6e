"""Test-session environment: a DDS domain of its own, localhost discovery, headless MuJoCo, and the
installed package visible to ament_index_python and to subprocesses."""

import hashlib
import os
import shutil
import signal
import sys
import tempfile

_CACHE = None
_INHERITED_IGNORED: list[str] = []  # stop signals the session was started with ignored


def pytest_configure(config):
    # A fresh domain per session (1..101; 0 is everyone's default), so that parallel runs and stray
    # nodes on this machine never see each other. LIQUID_CONTROL_TEST_DOMAIN_ID pins it. Under
    # pytest-xdist (make test runs two workers) each worker is a session of its own: the workers of
    # one run take neighbouring domains, never the same one (their test namespaces repeat).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        run = int(hashlib.sha256(os.environ.get("PYTEST_XDIST_TESTRUNUID", "").encode()).hexdigest(), 16)
        count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
        domain = str(1 + (run % (101 // count) * count + int(worker[2:])) % 101)
    else:
        domain = str(1 + os.getpid() % 101)
    # A harness that runs the session as a background job (a non-interactive shell's `&`, nohup)
    # hands it SIGINT and SIGTERM ignored, and every process a test starts inherits that: its
    # Ctrl-C is dropped by the kernel until its own handler is up. The tests stop processes as a
    # terminal and ros2 launch do, started as those start them: with both at their default action.
    # (test_node_process checks the executables against inherited ignores on purpose.)
    for sig, action in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(sig) == signal.SIG_IGN:
            _INHERITED_IGNORED.append(sig.name)
            signal.signal(sig, action)
    domain = os.environ.get("LIQUID_CONTROL_TEST_DOMAIN_ID") or domain
    os.environ["ROS_DOMAIN_ID"] = domain
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("MUJOCO_GL", "egl")
    # Training's frame cache: the session's own, removed at its end (never the user's ~/.cache).
    global _CACHE
    _CACHE = tempfile.mkdtemp(prefix="liquid_control-test-cache-")
    os.environ["LIQUID_CONTROL_CACHE"] = _CACHE
    others = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p and p != sys.prefix]
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *others])


def pytest_unconfigure(config):
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_report_header(config):
    inherited = (
        f" (started with {' and '.join(_INHERITED_IGNORED)} ignored: set back to default)" if _INHERITED_IGNORED else ""
    )
    return f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} AMENT_PREFIX_PATH={os.environ['AMENT_PREFIX_PATH']}{inherited}"
