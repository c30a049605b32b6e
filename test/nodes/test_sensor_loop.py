"""SensorLoop over real DDS: subscriptions served by a thread of their own, never by the executor
that spins the node; a raising callback is reported and the loop goes on; stop() ends it."""

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Imu  # noqa: E402
from support import wait_for  # noqa: E402

from liquid_control.nodes.sensor_loop import SensorLoop  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def setup():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("loop_test", namespace="/sensor_loop_test", context=context)
    peer = rclpy.create_node("loop_peer", namespace="/sensor_loop_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
    spinner.start()
    yield node, peer
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)
    node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown(context=context)


def test_callbacks_run_in_the_loop_thread_and_survive_a_raising_callback(setup):
    node, peer = setup
    seen, threads, errors = [], set(), []

    def on_imu(msg):
        threads.add(threading.current_thread().name)
        if msg.angular_velocity.x == 13.0:
            raise RuntimeError("unlucky message")
        seen.append(msg.angular_velocity.x)

    loop = SensorLoop(node, errors.append)
    loop.subscribe(Imu, "imu", on_imu, qos_profile_sensor_data)
    loop.start()
    pub = peer.create_publisher(Imu, "imu", qos_profile_sensor_data)
    wait_for(lambda: pub.get_subscription_count() > 0)
    for k in range(10, 20):
        msg = Imu()
        msg.header.stamp.sec = k
        msg.angular_velocity.x = float(k)
        pub.publish(msg)
        time.sleep(0.01)
    wait_for(lambda: len(seen) == 9)
    assert seen == [float(k) for k in range(10, 20) if k != 13]
    assert threads == {"loop_test_sensors"}  # never the executor's thread
    assert len(errors) == 1 and "unlucky" in str(errors[0])

    loop.stop()
    assert not loop.running
    pub.publish(Imu())
    time.sleep(0.3)
    assert len(seen) == 9  # nothing served after stop, and the executor does not take over


def test_subscribing_after_start_is_refused(setup):
    node, _ = setup
    loop = SensorLoop(node, lambda exc: None)
    loop.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            loop.subscribe(Imu, "imu", lambda msg: None, qos_profile_sensor_data)
    finally:
        loop.stop()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_context_shutdown_while_messages_flow_ends_the_loop_quietly():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("loop_shutdown", namespace="/sensor_loop_test", context=context)
    peer = rclpy.create_node("loop_shutdown_peer", namespace="/sensor_loop_test", context=context)
    answers = node.create_publisher(Imu, "answers", 10)
    errors = []
    loop = SensorLoop(node, errors.append)
    loop.subscribe(Imu, "imu", answers.publish, qos_profile_sensor_data)  # publishes from the loop
    loop.start()
    pub = peer.create_publisher(Imu, "imu", qos_profile_sensor_data)
    wait_for(lambda: pub.get_subscription_count() > 0)
    for _ in range(50):
        pub.publish(Imu())
        time.sleep(0.002)
    rclpy.shutdown(context=context)
    wait_for(lambda: not loop.running, timeout=2.0)  # ends by itself, before anyone calls stop()
    loop.stop()
    node.destroy_node()
    peer.destroy_node()
    assert errors == []
