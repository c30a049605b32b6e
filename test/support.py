"""What the tests that run nodes share: waiting for a condition (never for a fixed time), a peer node
in a DDS context of its own, a small model file, and the installed controller_node executable.
Imported by the test modules that need it (`from support import ...`); ROS and torch are imported
lazily, so that a module without them can still import wait_for."""

import sys
import threading
import time
from pathlib import Path

EXECUTABLE = Path(sys.prefix) / "lib" / "liquid_control" / "controller_node"


def __getattr__(name: str):
    """SPEC (the small model's camera encoder) and OUTPUTS (its outputs), made when first asked for:
    they import the torch policy, which a module that only waits need not."""
    if name == "SPEC":
        from liquid_control.model.policy import EncoderSpec

        return EncoderSpec(image_width=32, image_height=24, channels=(4, 8), camera_features=4)
    if name == "OUTPUTS":
        from liquid_control.model.modelfile import OutputSpec

        return OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.5, 1.5)), scale=(0.5, 1.5))
    raise AttributeError(name)


def wait_for(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {condition}")


def spinning_node(name: str, ns: str):
    """A node in a context of its own, spun by an executor thread; returns it and what ends it all."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, namespace=ns, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def close():
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown(context=context)

    return node, close


def publish_sensors(imu, camera, t: float, frame: bool, width: int = 64, height: int = 48) -> None:
    """One IMU message at rest stamped `t` and, with `frame`, a black rgb8 camera frame of the same stamp."""
    from sensor_msgs.msg import Image, Imu

    msg = Imu()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    msg.linear_acceleration.z = 9.8
    imu.publish(msg)
    if frame:
        image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(width * height * 3))
        image.header = msg.header
        camera.publish(image)


def streaming_peer(ns):
    """A peer in its own context publishing camera and IMU into `ns` from a thread; stop() ends it."""
    from geometry_msgs.msg import Twist
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, Imu

    peer, close = spinning_node("exit_peer", ns)
    context = peer.context
    imu = peer.create_publisher(Imu, "imu/data", qos_profile_sensor_data)
    camera = peer.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    commands = []
    peer.create_subscription(Twist, "cmd_vel", commands.append, 100)
    running = threading.Event()
    running.set()

    def publish():
        k = 0
        while running.is_set() and context.ok():
            publish_sensors(imu, camera, 100.0 + k * 0.005, frame=k % 7 == 0)
            k += 1
            time.sleep(0.005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()

    def stop_peer():
        running.clear()
        publisher.join(timeout=5.0)
        close()

    return commands, stop_peer


def make_model(path, seed=0, bias=None):
    """A small CfC policy (12 NCP neurons, a 32x24 camera) saved at `path`; `bias` sets its readout's."""
    import torch

    from liquid_control import nets
    from liquid_control.model.modelfile import save_model
    from liquid_control.model.policy import LiquidPolicy

    spec, outputs = __getattr__("SPEC"), __getattr__("OUTPUTS")
    torch.manual_seed(seed)
    policy = LiquidPolicy(
        spec,
        nets.CfC(spec.core_inputs, nets.AutoNCP(12, 2, seed=seed)),
        outputs=2,
        imu_mean=(0.0, 0.0, 9.8),
        imu_std=(0.5, 1.0, 1.0),
    ).eval()
    if bias is not None:
        with torch.no_grad():
            policy.readout.bias[:] = torch.tensor(bias)
    save_model(path, policy, policy.sensor_spec(), outputs, {"trainer": "test"})
    return path
