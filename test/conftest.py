"""Test-session environment: a DDS domain of its own, localhost discovery, headless MuJoCo, and the
installed package visible to ament_index_python and to subprocesses."""

import os
import shutil
import sys
import tempfile

_CACHE = None


def pytest_configure(config):
    # A fresh domain per session (1..101; 0 is everyone's default), so that parallel runs and stray
    # nodes on this machine never see each other. LIQUID_CONTROL_TEST_DOMAIN_ID pins it.
    domain = os.environ.get("LIQUID_CONTROL_TEST_DOMAIN_ID") or str(1 + os.getpid() % 101)
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
    return f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} AMENT_PREFIX_PATH={os.environ['AMENT_PREFIX_PATH']}"
