"""controller_node as a managed (lifecycle) node: the installed executable started with `--managed`,
driven from this process over DDS through the lifecycle_msgs services a lifecycle manager (Nav2's,
or `ros2 lifecycle set`) calls. Unconfigured it has no sensor subscriptions and no command
publisher; configure loads the model and makes them; only an active node commands; deactivate sends
one zero and stops; cleanup releases the subscriptions; a model that cannot load fails configure.

Every command carries the header stamp of the sensor message it answers, so the tests tell from the
stamps which messages were stepped, and wait for a later phase's commands instead of sleeping."""

import os
import subprocess
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
lifecycle_msgs = pytest.importorskip("lifecycle_msgs")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, Imu  # noqa: E402
from support import EXECUTABLE, make_model, publish_sensors, spinning_node, wait_for  # noqa: E402

from liquid_control.processes import stop  # noqa: E402

pytestmark = pytest.mark.ros

_count = iter(range(10**6))


class Managed:
    """The managed node's process and a peer that drives its lifecycle and its topics."""

    def __init__(self, model_path, *params: str):
        if not EXECUTABLE.exists():
            pytest.skip(f"{EXECUTABLE} not installed (pip install the package into this venv)")
        self.ns = f"/lc_life_{os.getpid()}_{next(_count)}"
        args = [
            str(EXECUTABLE),
            "--managed",
            "--ros-args",
            "-r",
            f"__ns:={self.ns}",
            "-p",
            f"model_path:={model_path}",
            "-p",
            "cmd_vel_stamped:=true",
            "-p",
            "max_linear_accel:=20.0",
        ]
        for p in params:
            args += ["-p", p]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.peer, self._close = spinning_node("life_peer", self.ns)
        self.imu = self.peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
        self.camera = self.peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.commands: list[tuple[float, float]] = []  # (stamp of the answered message, linear.x)
        self._lock = threading.Lock()
        self.peer.create_subscription(TwistStamped, "cmd_vel", self._keep, 100)
        self.change = self.peer.create_client(ChangeState, "liquid_controller/change_state")
        self.get = self.peer.create_client(GetState, "liquid_controller/get_state")
        assert self.change.wait_for_service(timeout_sec=90.0), "no lifecycle services: not a managed node"
        assert self.get.wait_for_service(timeout_sec=10.0)

    def _keep(self, msg):
        with self._lock:
            self.commands.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg.twist.linear.x))

    def taken(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self.commands)

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    @staticmethod
    def _call(client, request):
        future = client.call_async(request)
        wait_for(future.done, timeout=60.0)  # configure loads the model
        return future.result()

    def stream(self, t0: float, seconds: float) -> None:
        """IMU at 200 Hz and camera at ~30 Hz of header stamps from t0 (published as fast as DDS takes them)."""
        for k in range(int(seconds * 200)):
            publish_sensors(self.imu, self.camera, t0 + k * 0.005, frame=k % 7 == 0)
            time.sleep(0.002)

    def stream_until(self, t0: float, condition, timeout: float = 60.0) -> None:
        """Stream one second of stamps after another from t0 until `condition()` holds."""
        end = time.monotonic() + timeout
        t = t0
        while not condition():
            assert time.monotonic() < end, f"timed out streaming for {condition}"
            self.stream(t, 1.0)
            t += 1.0

    def close(self) -> str:
        """End the peer and the process (once); the process's output."""
        if self._close is not None:
            self._close, close = None, self._close
            close()
            stop(self.proc)
            self.output = self.proc.stdout.read()
        return self.output


@pytest.fixture
def managed(tmp_path):
    made = []

    def start(model=None, *params):
        node = Managed(model or make_model(tmp_path / "life.safetensors", bias=(1.0, 0.5)), *params)
        made.append(node)
        return node

    yield start
    for node in made:
        node.close()


def test_configure_activate_deactivate_cleanup_over_the_lifecycle_services(managed):
    node = managed()
    peer = node.peer
    assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
    # Unconfigured: nothing subscribed, nothing that could command.
    assert peer.count_subscribers(f"{node.ns}/imu/data") == 0
    assert peer.count_publishers(f"{node.ns}/cmd_vel") == 0

    assert node.transition(Transition.TRANSITION_CONFIGURE)
    assert node.state() == State.PRIMARY_STATE_INACTIVE
    wait_for(lambda: node.imu.get_subscription_count() > 0 and node.camera.get_subscription_count() > 0, timeout=30)
    assert peer.count_publishers(f"{node.ns}/cmd_vel") == 1
    node.stream(100.0, 1.0)  # inactive: received, never stepped, never answered

    assert node.transition(Transition.TRANSITION_ACTIVATE)
    assert node.state() == State.PRIMARY_STATE_ACTIVE
    node.stream_until(200.0, lambda: any(v > 0.0 for t, v in node.taken() if t >= 200.0))
    assert all(t >= 200.0 for t, _ in node.taken()), "a message received while inactive was answered"

    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert node.state() == State.PRIMARY_STATE_INACTIVE
    wait_for(lambda: node.taken()[-1][1] == 0.0, timeout=30)  # the one zero that deactivation sends
    stopped_at = len(node.taken())
    node.stream(300.0, 1.0)  # inactive again: no answer

    assert node.transition(Transition.TRANSITION_ACTIVATE)
    node.stream_until(400.0, lambda: any(t >= 400.0 and v > 0.0 for t, v in node.taken()))
    after = node.taken()[stopped_at:]
    assert not [t for t, _ in after if 300.0 <= t < 400.0], "commands while inactive"

    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert node.transition(Transition.TRANSITION_CLEANUP)
    assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
    wait_for(lambda: node.imu.get_subscription_count() == 0 and node.camera.get_subscription_count() == 0, timeout=30)
    wait_for(lambda: peer.count_publishers(f"{node.ns}/cmd_vel") == 0, timeout=30)

    # And round again: configure and activate after a cleanup give a working node.
    assert node.transition(Transition.TRANSITION_CONFIGURE)
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    node.stream_until(500.0, lambda: any(t >= 500.0 and v > 0.0 for t, v in node.taken()))

    assert node.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert node.state() == State.PRIMARY_STATE_FINALIZED
    wait_for(lambda: node.taken()[-1][1] == 0.0, timeout=30)  # shutting down from active sends the zero too
    node.proc.send_signal(2)
    assert node.proc.wait(timeout=30) == 0


def test_a_model_that_cannot_load_fails_configure_and_says_why(managed, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}')  # a header, but no model in it
    node = managed(broken)
    assert not node.transition(Transition.TRANSITION_CONFIGURE)
    assert node.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert node.peer.count_publishers(f"{node.ns}/cmd_vel") == 0
    out = node.close()
    assert "configure failed" in out and str(broken) in out, out
    assert "Traceback" not in out, out


def test_without_managed_the_node_has_no_lifecycle_services_and_commands_at_once(tmp_path):
    """The plain executable: configured and active by itself, as it always was."""
    model = make_model(tmp_path / "plain.safetensors", bias=(1.0, 0.5))
    ns = f"/lc_plain_{os.getpid()}"
    proc = subprocess.Popen(
        [str(EXECUTABLE), "--ros-args", "-r", f"__ns:={ns}", "-p", f"model_path:={model}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peer, close = spinning_node("plain_peer", ns)
    try:
        # Generous: on a loaded machine the node's start (torch, the model) and discovery take a while.
        wait_for(lambda: peer.count_publishers(f"{ns}/cmd_vel") == 1, timeout=90)
        wait_for(lambda: f"{ns}/liquid_controller/reset_state" in dict(peer.get_service_names_and_types()), timeout=60)
        services = dict(peer.get_service_names_and_types())
        assert not [
            name
            for name in services
            if name.startswith(f"{ns}/liquid_controller/") and ("change_state" in name or "get_state" in name)
        ], services
    finally:
        close()
        stop(proc)
