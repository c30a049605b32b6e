"""What `record` and `play` share over rclpy: message classes by type name, the QoS rules, and an
rclpy context whose SIGINT and SIGTERM end the work gracefully instead of raising.

QoS: the recorder subscribes as the publishers offer (best effort if any publisher is best effort,
as sensor drivers are; transient local if all are latched), and keeps their offered QoS in the bag.
The player publishes sensor topics with the sensor-data profile, the others reliable (latched if
they were recorded from latched publishers).
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import contextmanager

import rclpy
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions

from .. import topics as robot_topics

# Types published with the sensor-data profile (best effort): what sensor drivers publish.
SENSOR_TYPES = frozenset({
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/Imu", "sensor_msgs/msg/LaserScan", "sensor_msgs/msg/PointCloud2",
    "sensor_msgs/msg/NavSatFix", "sensor_msgs/msg/MagneticField", "sensor_msgs/msg/JointState",
})
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
RECORD_DEPTH = 1000       # subscription queue of the recorder: absorbs bursts while the bag writes
PLAY_DEPTH = 100          # history of the player's reliable publishers
DISCOVERY_PERIOD_S = 0.25  # how often the recorder looks for topics that have not appeared yet
WAIT_FOR_SUBSCRIBERS_S = 30.0
_INFINITE_NS = 2**63 - 1


def default_topics(namespace: str = "/") -> list[str]:
    """The robot's topics (liquid_control.topics) as they appear on the graph under `namespace`."""
    names = (robot_topics.CAMERA, robot_topics.CAMERA_INFO, robot_topics.IMU, robot_topics.ODOM,
             robot_topics.CMD_VEL, robot_topics.TEACHER, robot_topics.E_STOP, robot_topics.CLOCK,
             robot_topics.DIAGNOSTICS)
    return [robot_topics.absolute(n, namespace) for n in names]


class UnknownTypeError(LookupError):
    """A message type whose Python module is not installed here."""


def message_class(msgtype: str) -> type:
    """The rclpy message class of a type name such as 'sensor_msgs/msg/Imu'."""
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    if get_message is not None:
        try:
            return get_message(msgtype)
        except (AttributeError, ModuleNotFoundError, ValueError):
            raise UnknownTypeError(f"message type {msgtype} is not installed") from None
    package, _, name = msgtype.rpartition("/")
    if not package.endswith("/msg") or not name:
        raise UnknownTypeError(f"{msgtype!r} is not a message type name (<package>/msg/<Name>)")
    module_name = package.replace("/", ".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise UnknownTypeError(f"message type {msgtype} is not installed (no Python module {module_name}"
                               f" with {name})") from None


def _bag_qos(profile: QoSProfile):
    """An rclpy QoS profile (as discovered for a publisher) in the bag's metadata form."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def duration(d) -> QosTime:
        ns = d.nanoseconds
        if ns >= _INFINITE_NS:
            return QosTime(2147483647, 4294967295)  # how rosbag2 writes an infinite duration
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    return Qos(QosHistory(int(profile.history)), int(profile.depth), QosReliability(int(profile.reliability)),
               QosDurability(int(profile.durability)), duration(profile.deadline), duration(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), duration(profile.liveliness_lease_duration),
               bool(profile.avoid_ros_namespace_conventions))


def subscription_qos(offered: Sequence[QoSProfile]) -> QoSProfile:
    """A subscription that hears every one of these publishers: best effort unless all are
    reliable, transient local only if all are (then it also gets what they latched)."""
    reliable = bool(offered) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def publisher_qos(msgtype: str, recorded: Sequence = ()) -> QoSProfile:
    """How the player publishes a topic: sensor data profile for sensor types, else reliable,
    latched when every publisher it was recorded from was (recorded: rosbags Qos entries)."""
    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    latched = bool(recorded) and all(int(q.durability.value) == int(DurabilityPolicy.TRANSIENT_LOCAL)
                                     for q in recorded)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=PLAY_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


@contextmanager
def _ros(node_name: str, stop: threading.Event):
    """An rclpy context and node of our own; SIGINT and SIGTERM set `stop` instead of raising,
    so the caller finishes what it is doing (closing a bag) before it exits."""
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    context = rclpy.context.Context()
    # No command line for rcl: it would read play's `--remap /a:=/b` as a global remapping rule.
    rclpy.init(args=["liquid-control"], context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = Node(node_name, context=context)
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


