"""rosbag2 bags without ROS: write the robot's topics and read them back as sensor events, with the
`rosbags` library (MCAP storage, bag format version 8 as Jazzy's rosbag2 writes it).

Messages are built and parsed through the Jazzy typestore, so a bag written here is what
`ros2 bag info/play` read, and a bag from rosbag2 reads here. Reading yields the same
(stamp, kind, data) events the simulator and the node feed LiquidController.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from transforms3d.euler import euler2quat

from .sensing import SensorError, image_to_array, imu_to_array, seconds_to_stamp, stamp_to_seconds

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
IMAGE, IMU, TWIST_STAMPED, TWIST, ODOMETRY = (
    "sensor_msgs/msg/Image", "sensor_msgs/msg/Imu", "geometry_msgs/msg/TwistStamped",
    "geometry_msgs/msg/Twist", "nav_msgs/msg/Odometry",
)


class BagError(ValueError):
    """A bag that cannot be used; the message names the bag and the problem."""


def _time(stamp: float):
    sec, nanosec = seconds_to_stamp(stamp)
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _header(stamp: float, frame_id: str):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_time(stamp), frame_id=frame_id)


def _vector3(x: float, y: float, z: float):
    return TYPESTORE.types["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))


def image_msg(stamp: float, rgb: np.ndarray, frame_id: str = "camera_link"):
    """An rgb8 Image from an (h, w, 3) float [0, 1] or uint8 array."""
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    h, w, _ = rgb.shape
    return TYPESTORE.types[IMAGE](header=_header(stamp, frame_id), height=h, width=w, encoding="rgb8",
                                  is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))


def imu_msg(stamp: float, values: np.ndarray, frame_id: str = "imu_link"):
    """An Imu from sensing.IMU_FIELDS values (angular velocity, linear acceleration, roll/pitch/yaw)."""
    w, x, y, z = euler2quat(*values[6:9], axes="sxyz")
    quaternion = TYPESTORE.types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)
    return TYPESTORE.types[IMU](
        header=_header(stamp, frame_id), orientation=quaternion, orientation_covariance=np.zeros(9),
        angular_velocity=_vector3(*values[0:3]), angular_velocity_covariance=np.zeros(9),
        linear_acceleration=_vector3(*values[3:6]), linear_acceleration_covariance=np.zeros(9))


def twist_stamped_msg(stamp: float, linear: float, angular: float, frame_id: str = "base_link"):
    twist = TYPESTORE.types[TWIST](linear=_vector3(linear, 0, 0), angular=_vector3(0, 0, angular))
    return TYPESTORE.types[TWIST_STAMPED](header=_header(stamp, frame_id), twist=twist)


def odometry_msg(stamp: float, x: float, y: float, yaw: float, linear: float, angular: float):
    t = TYPESTORE.types
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))),
        covariance=np.zeros(36))
    twist = t["geometry_msgs/msg/TwistWithCovariance"](
        twist=t[TWIST](linear=_vector3(linear, 0, 0), angular=_vector3(0, 0, angular)), covariance=np.zeros(36))
    return t[ODOMETRY](header=_header(stamp, "odom"), child_frame_id="base_link", pose=pose, twist=twist)


class BagWriter:
    """Writes messages to a new rosbag2 bag (MCAP, version 8). Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path}: exists already (a bag is never overwritten)")
        self._writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msg, receive_time: float) -> None:
        """Write `msg` on `topic`, logged at `receive_time` (s; the bag's own time stamp)."""
        msgtype = msg.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise BagError(f"bag {self.path}: topic {topic} is {connection.msgtype}, not {msgtype}")
        self._writer.write(connection, int(round(receive_time * 1e9)), TYPESTORE.serialize_cdr(msg, msgtype))


@dataclass(frozen=True)
class BagEvent:
    stamp: float        # header stamp (s)
    kind: str           # "camera", "imu", or "command"
    data: np.ndarray    # camera RGB float, IMU_FIELDS values, or (linear.x, angular.z)


def read_events(path: str | Path, camera: str = "/camera/image_raw", imu: str = "/imu/data",
                command: str | None = "/cmd_vel") -> Iterator[BagEvent]:
    """The bag's camera, IMU (and command) messages as events, in the order they were logged.

    Missing topics, topics of another type, and unreadable bags raise BagError naming the bag.
    Bad messages inside a good bag (an image of the wrong size, NaN in an IMU message) are
    skipped here just as the controller would reject them.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    wanted = {camera: ("camera", (IMAGE,)), imu: ("imu", (IMU,))}
    if command:
        wanted[command] = ("command", (TWIST_STAMPED, TWIST))
    try:
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            for topic, (_, types) in wanted.items():
                if topic not in topics:
                    raise BagError(f"bag {path}: no topic {topic} (it has {sorted(topics)})")
                if topics[topic] not in types:
                    raise BagError(f"bag {path}: topic {topic} is {topics[topic]}, expected {' or '.join(types)}")
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, log_time, raw in reader.messages(connections=connections):
                kind = wanted[connection.topic][0]
                msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                if kind == "command":
                    twist = msg.twist if connection.msgtype == TWIST_STAMPED else msg
                    stamp = stamp_to_seconds(msg.header.stamp) if connection.msgtype == TWIST_STAMPED else log_time * 1e-9
                    yield BagEvent(stamp, kind, np.array([twist.linear.x, twist.angular.z]))
                    continue
                try:
                    data = image_to_array(msg) if kind == "camera" else imu_to_array(msg)
                except SensorError:
                    continue
                yield BagEvent(stamp_to_seconds(msg.header.stamp), kind, data)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises its own errors for truncated or foreign files
        raise BagError(f"bag {path}: cannot be read ({type(exc).__name__}: {exc})") from None
