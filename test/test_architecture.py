"""The layering of ARCHITECTURE.md: the network core, the runtime and the simulator never import
rclpy (they run in notebooks, training and bag replay without ROS)."""

import subprocess
import sys

import pytest

ROS_FREE = ["liquid_control.nets", "liquid_control.policy", "liquid_control.modelfile",
            "liquid_control.controller", "liquid_control.adaptation", "liquid_control.sensing",
            "liquid_control.sim.track", "liquid_control.bags", "liquid_control.cli", "liquid_control.demo",
            "liquid_control.learning.conditions", "liquid_control.topics", "liquid_control.replay", "liquid_control.paramfile", "liquid_control.learning.dataset", "liquid_control.rosdemo"]


@pytest.mark.parametrize("module", ROS_FREE)
def test_module_imports_no_ros(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces', 'mujoco')); "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} pulls in {result.stdout.strip()} {result.stderr[-500:]}"
