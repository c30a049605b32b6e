"""rosbag2 bags without ROS: write the robot's topics and read them back as sensor events, with the
`rosbags` library (MCAP storage, bag format version 8 as Jazzy's rosbag2 writes it).

Messages are built and parsed through the Jazzy typestore, so a bag written here is what
`ros2 bag info/play` read, and a bag from rosbag2 reads here. Reading yields the same
(stamp, kind, data) events the simulator and the node feed LiquidController. The bag tools
(`liquid-control record/play/replay`) also move messages through here as serialized CDR bytes,
never decoded. Every problem with a bag surfaces as BagError naming the bag.

Every bag is read within the limits of liquid_control.bags.limits: what is not a regular file is
never opened, and no chunk is expanded beyond what it declares and the limits allow, so that no
file can exhaust the machine's memory or keep a reader waiting forever. A new bag is only ever
created where nothing is (not through a link, not over a file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from transforms3d.euler import euler2quat

from .. import topics
from ..model.labels import COMMAND_TYPES, command_values
from ..runtime.sensing import (
    SensorError,
    compressed_to_array,
    image_to_array,
    imu_to_array,
    odometry_to_array,
    seconds_to_stamp,
    stamp_to_seconds,
)
from . import limits

limits.install()  # rosbags' decompressors, bounded (before any bag is read)
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
IMAGE, COMPRESSED_IMAGE, IMU, TWIST_STAMPED, TWIST, ODOMETRY = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/Imu",
    "geometry_msgs/msg/TwistStamped",
    "geometry_msgs/msg/Twist",
    "nav_msgs/msg/Odometry",
)
BOOL = "std_msgs/msg/Bool"  # the controller node's ~/intervention (a takeover's marks)


class BagError(ValueError):
    """A bag that cannot be used; the message names the bag and the problem."""


def _time(stamp: float | tuple[int, int]):
    """builtin_interfaces/Time from float seconds, or exactly from (sec, nanosec)."""
    sec, nanosec = stamp if isinstance(stamp, tuple) else seconds_to_stamp(stamp)
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _header(stamp: float | tuple[int, int], frame_id: str):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=_time(stamp), frame_id=frame_id)


def _vector3(x: float, y: float, z: float):
    return TYPESTORE.types["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))


def _quaternion(roll: float, pitch: float, yaw: float):
    w, x, y, z = euler2quat(roll, pitch, yaw, axes="sxyz")
    return TYPESTORE.types["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))


def image_msg(stamp: float | tuple[int, int], rgb: np.ndarray, frame_id: str = topics.CAMERA_FRAME):
    """An rgb8 Image from an (h, w, 3) float [0, 1] or uint8 array."""
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    h, w, _ = rgb.shape
    return TYPESTORE.types[IMAGE](
        header=_header(stamp, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


def compressed_image_msg(stamp: float | tuple[int, int], data: bytes, frame_id: str = topics.CAMERA_FRAME):
    """A CompressedImage of JPEG bytes, as image_transport's compressed plugin publishes one."""
    return TYPESTORE.types[COMPRESSED_IMAGE](
        header=_header(stamp, frame_id), format="rgb8; jpeg compressed bgr8", data=np.frombuffer(data, np.uint8)
    )


def imu_msg(stamp: float | tuple[int, int], values: np.ndarray, frame_id: str = topics.IMU_FRAME):
    """An Imu from sensing.IMU_FIELDS values (angular velocity, linear acceleration, roll/pitch/yaw)."""
    quaternion = _quaternion(*values[6:9])
    return TYPESTORE.types[IMU](
        header=_header(stamp, frame_id),
        orientation=quaternion,
        orientation_covariance=np.zeros(9),
        angular_velocity=_vector3(*values[0:3]),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=_vector3(*values[3:6]),
        linear_acceleration_covariance=np.zeros(9),
    )


def twist_stamped_msg(stamp: float | tuple[int, int], linear: float, angular: float, frame_id: str = topics.BASE_FRAME):
    twist = TYPESTORE.types[TWIST](linear=_vector3(linear, 0, 0), angular=_vector3(0, 0, angular))
    return TYPESTORE.types[TWIST_STAMPED](header=_header(stamp, frame_id), twist=twist)


def bool_msg(value: bool):
    """A std_msgs/Bool (the controller node's ~/intervention)."""
    return TYPESTORE.types[BOOL](data=bool(value))


def odometry_msg(stamp: float, x: float, y: float, yaw: float, linear: float, angular: float):
    t = TYPESTORE.types
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0), orientation=_quaternion(0.0, 0.0, yaw)
        ),
        covariance=np.zeros(36),
    )
    twist = t["geometry_msgs/msg/TwistWithCovariance"](
        twist=t[TWIST](linear=_vector3(linear, 0, 0), angular=_vector3(0, 0, angular)), covariance=np.zeros(36)
    )
    return t[ODOMETRY](
        header=_header(stamp, topics.ODOM_FRAME), child_frame_id=topics.BASE_FRAME, pose=pose, twist=twist
    )


@contextmanager
def _reading(path: Path) -> Iterator[limits.CheckedReader]:
    """An open rosbags Reader, within the limits (bags.limits); whatever goes wrong while it is open
    becomes BagError naming the bag."""
    if not os.path.lexists(path):
        raise BagError(f"bag {path}: no such file or directory")
    try:
        limits.check_bag(path)  # a FIFO, a device: refused before anything is opened
    except limits.LimitError as exc:
        raise BagError(f"bag {path}: {exc.about(path)}") from None
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise BagError(
            f"bag {path}: no metadata.yaml (not a rosbag2 bag, or one whose recorder was killed "
            "before it closed the bag)"
        )
    try:
        with limits.CheckedReader(path) as reader:
            yield reader
    except BagError:
        raise
    except limits.LimitError as exc:
        raise BagError(f"bag {path}: {exc.about(path)}") from None
    except Exception as exc:  # rosbags raises its own errors for truncated or foreign files
        hint = " (truncated: the file ends before its MCAP footer)" if "end magic" in str(exc) else ""
        raise BagError(f"bag {path}: cannot be read ({type(exc).__name__}: {exc}){hint}") from None


def check_new_bag(path: str | Path) -> None:
    """Refuse (BagError) to create a bag at `path` where something is already: a bag is never
    overwritten, nor written through a symbolic link (one to nothing included), nor below a file."""
    path = Path(path)
    if os.path.islink(path) and not path.exists():
        raise BagError(
            f"bag {path}: is a symbolic link to {os.readlink(path)}, which does not exist "
            "(a bag is never written through a link)"
        )
    if os.path.lexists(path):
        raise BagError(f"bag {path}: exists already (a bag is never overwritten)")
    for parent in path.absolute().parents:  # the nearest that is there must be a directory
        if os.path.lexists(parent):
            if not parent.is_dir():
                what = (
                    f"a symbolic link to {os.readlink(parent)}, which does not exist"
                    if os.path.islink(parent) and not parent.exists()
                    else "not a directory"
                )
                raise BagError(f"bag {path}: {parent} is {what}")
            break


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str
    count: int
    offered_qos: tuple = ()  # rosbags.interfaces.Qos of the publishers it was recorded from


@dataclass(frozen=True)
class BagSummary:
    path: Path
    topics: dict[str, BagTopic]
    start_ns: int  # earliest bag time stamp (receive time), ns
    end_ns: int  # latest bag time stamp, ns
    count: int

    @property
    def duration(self) -> float:
        return max(self.end_ns - self.start_ns, 0) * 1e-9


ROBOT_KEY = "liquid_control.robot"  # custom_data of a simulator's bag: the robot that drove


def bag_robot(path: str | Path) -> str | None:
    """The robot a bag's custom_data says drove it (our simulator's bags say it), else None."""
    import yaml

    from ..files import FileRefused, read_text

    path = Path(path)
    meta = path / "metadata.yaml" if path.is_dir() else path.with_name("metadata.yaml")
    if not meta.exists():
        return None
    try:
        data = yaml.safe_load(read_text(meta)) or {}
    except (FileRefused, yaml.YAMLError) as exc:
        raise BagError(f"bag {path}: its metadata.yaml cannot be read ({exc})") from None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    custom = info.get("custom_data") if isinstance(info, dict) else None
    robot = custom.get(ROBOT_KEY) if isinstance(custom, dict) else None
    return str(robot) if robot is not None else None


def summarize(path: str | Path) -> BagSummary:
    """A bag's topics, types, message counts and time span, without reading its messages."""
    path = Path(path)
    with _reading(path) as reader:
        topics: dict[str, BagTopic] = {}
        for c in reader.connections:
            qos = tuple(getattr(c.ext, "offered_qos_profiles", ()) or ())
            old = topics.get(c.topic)
            if old is not None and old.msgtype != c.msgtype:
                raise BagError(f"bag {path}: topic {c.topic} holds two types, {old.msgtype} and {c.msgtype}")
            topics[c.topic] = BagTopic(
                c.topic, c.msgtype, (old.count if old else 0) + c.msgcount, (old.offered_qos if old else ()) + qos
            )
        count = reader.message_count
        start, end = (reader.start_time, reader.end_time - 1) if count else (0, 0)
    return BagSummary(path, topics, start, end, count)


def read_serialized(
    path: str | Path, topics: Iterable[str] | None = None, start_ns: int | None = None
) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag time ns, CDR bytes) of every message on `topics` (all if None), in
    bag-time order, from `start_ns` on. Topics the bag lacks raise BagError."""
    path = Path(path)
    with _reading(path) as reader:
        have = {c.topic for c in reader.connections}
        wanted = have if topics is None else set(topics)
        missing = sorted(wanted - have)
        if missing:
            raise BagError(f"bag {path}: no topic {', '.join(missing)} (it has {sorted(have)})")
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, log_time, raw in reader.messages(connections=connections, start=start_ns):
            yield connection.topic, connection.msgtype, log_time, raw if isinstance(raw, bytes) else bytes(raw)


class BagWriter:
    """Writes messages to a new rosbag2 bag (MCAP, version 8). Use as a context manager.

    `write` serializes a typestore message; `add_topic` + `write_serialized` store CDR bytes as
    they came off the wire (the recorder), with the publishers' QoS kept for `ros2 bag play`."""

    def __init__(self, path: str | Path, custom_data: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        check_new_bag(self.path)
        self._writer = Writer(self.path, version=8, storage_plugin=StoragePlugin.MCAP)
        for key, value in (custom_data or {}).items():  # metadata.yaml's custom_data (rosbag2 since Iron)
            self._writer.set_custom_data(key, value)
        self._connections: dict[str, object] = {}
        self._open = False

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except Exception as exc:  # noqa: BLE001 - rosbags' WriterError, or the OSError of a directory it cannot make
            raise BagError(f"bag {self.path}: cannot be created ({type(exc).__name__}: {exc})") from None
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bag (its summary, metadata.yaml); once: a second close, or one of a bag that
        never opened, does nothing."""
        if self._open:
            self._open = False
            self._writer.close()

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence = (), msgdef: str | None = None) -> None:
        """Register `topic` of `msgtype`: a Jazzy type, whose definition goes into the bag, or any
        type whose definition `msgdef` (ros2msg text, dependencies appended as rosbag2 writes
        them) is given."""
        if topic in self._connections:
            raise BagError(f"bag {self.path}: topic {topic} added twice")
        if msgtype in TYPESTORE.types:
            definition = {"typestore": TYPESTORE}
        elif msgdef:
            definition = {"msgdef": msgdef, "rihs01": _rihs01(self.path, topic, msgtype, msgdef)}
        else:
            raise BagError(
                f"bag {self.path}: topic {topic} has type {msgtype}, which the ROS 2 Jazzy typestore "
                "does not know (its definition could not be stored)"
            )
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, offered_qos_profiles=list(offered_qos), **definition
        )

    def flush(self) -> None:
        """Close the MCAP chunk being filled and hand the file's buffer to the operating system, so
        that everything written so far survives the writer being killed (SIGKILL): a bag without
        its summary, that `liquid-control recover` reads. rosbags itself closes a chunk only once
        it holds 1 MiB, and has no option for it (rosbags 0.11: Writer.storage is its McapWriter)."""
        storage = getattr(self._writer, "storage", None)
        chunk = getattr(storage, "chunk", None)
        if chunk is None or not hasattr(storage, "close_chunk"):
            return  # not MCAP, or closed
        if chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()

    def write_serialized(self, topic: str, data: bytes, log_time_ns: int) -> None:
        """Write CDR bytes on a topic registered with add_topic, at bag time `log_time_ns`."""
        self._writer.write(self._connections[topic], log_time_ns, data)

    def write(self, topic: str, msg, receive_time: float | None = None, *, log_time_ns: int | None = None) -> None:
        """Write `msg` on `topic`, logged at `receive_time` (s; the bag's own time stamp) or
        exactly at `log_time_ns`."""
        if log_time_ns is None:
            if receive_time is None:
                raise TypeError("write() needs receive_time or log_time_ns")
            log_time_ns = int(round(receive_time * 1e9))
        msgtype = msg.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise BagError(f"bag {self.path}: topic {topic} is {connection.msgtype}, not {msgtype}")
        self._writer.write(connection, log_time_ns, TYPESTORE.serialize_cdr(msg, msgtype))


def _rihs01(path: Path, topic: str, msgtype: str, msgdef: str) -> str:
    """The RIHS01 type hash of a type known only from its definition text."""

    try:
        store = get_typestore(Stores.EMPTY)
        store.register(get_types_from_msg(msgdef, msgtype))
        return store.hash_rihs01(msgtype)
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own errors for bad definitions
        raise BagError(
            f"bag {path}: topic {topic}: the definition of {msgtype} cannot be parsed ({type(exc).__name__}: {exc})"
        ) from None


def _typestore(path: Path, connections) -> Any:
    """The Jazzy type store, with the types of these connections that it lacks (ackermann_msgs, for
    one) registered from the definitions the bag carries (an MCAP bag keeps each topic's schema)."""
    missing = [c for c in connections if c.msgtype not in TYPESTORE.types]
    if not missing:
        return TYPESTORE
    store = get_typestore(Stores.ROS2_JAZZY)
    for c in missing:
        definition = getattr(getattr(c, "msgdef", None), "data", "") or ""
        if not definition:
            raise BagError(
                f"bag {path}: topic {c.topic} is {c.msgtype}, whose definition the bag does not carry "
                "(an MCAP bag does; a .db3 bag written without it does not)"
            )
        try:
            store.register(get_types_from_msg(definition, c.msgtype))
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own errors for bad definitions
            raise BagError(
                f"bag {path}: topic {c.topic}: the definition of {c.msgtype} cannot be parsed ({type(exc).__name__}: {exc})"
            ) from None
    return store


@dataclass(frozen=True)
class BagEvent:
    stamp: float  # header stamp (s); bag time for an unstamped command
    kind: str  # "camera", "imu", "odom", "command", "intervention", or "proposal"
    data: np.ndarray  # camera RGB, IMU_FIELDS values, ODOM_FIELDS values, a command's two values, or
    # an intervention's one (1.0 while a person commands)
    # (labels.command_values: (linear.x, angular.z) of a Twist, (speed, steering_angle) of an AckermannDrive)
    header_stamp: tuple[int, int] | None = field(default=None, compare=False)  # exact (sec, nanosec)
    log_time_ns: int = field(default=0, compare=False)  # the bag's time stamp (receive time)
    msgtype: str = field(default="", compare=False)  # a command's type (model.labels maps its values)


def read_events(
    path: str | Path,
    camera: str = topics.absolute(topics.CAMERA),
    imu: str | None = topics.absolute(topics.IMU),
    command: str | None = topics.absolute(topics.CMD_VEL),
    skipped: dict[str, int] | None = None,
    camera_size: tuple[int, int] = (0, 0),
    max_image_pixels: int | None = None,
    image_dtype: type = np.float32,
    odom: str | None = None,
    intervention: str | None = None,
    proposal: str | None = None,
) -> Iterator[BagEvent]:
    """The bag's camera, IMU, odometry (and command, and intervention) messages as events, in the
    order they were logged. `imu`, `odom`, `command` and `intervention` None: not read (a
    camera-only robot has no IMU). An intervention (std_msgs/Bool, unstamped) is stamped with its
    bag time; a `proposal` (the controller node's ~/proposed_cmd_vel, TwistStamped) comes as a
    command does.

    The camera topic may be sensor_msgs/Image or CompressedImage (JPEG or PNG, as image_transport
    records `.../compressed`); a JPEG is decoded at the smallest DCT scale that still covers
    `camera_size` (width, height: the model's input, as the node decodes it; (0, 0): full size).
    Frames come as float32 RGB in [0, 1], or with image_dtype=np.uint8 as the node takes them (the
    8-bit values, no float pass; sensing.model_frame gives the same model frame from either).
    Missing topics, topics of another type, and unreadable bags raise BagError naming the bag.
    Bad messages inside a good bag (an image of the wrong size, a corrupt JPEG, NaN in an IMU
    message) are skipped here just as the controller would reject them; `skipped` counts them per
    reason.
    """
    path = Path(path)
    wanted = {camera: ("camera", (IMAGE, COMPRESSED_IMAGE))}
    if imu:
        wanted[imu] = ("imu", (IMU,))
    if odom:
        wanted[odom] = ("odom", (ODOMETRY,))
    if command:
        wanted[command] = ("command", COMMAND_TYPES)
    if intervention:
        wanted[intervention] = ("intervention", (BOOL,))
    if proposal:
        wanted[proposal] = ("proposal", (TWIST_STAMPED,))
    with _reading(path) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        for topic, (_, types) in wanted.items():
            if topic not in topics:
                raise BagError(f"bag {path}: no topic {topic} (it has {sorted(topics)})")
            if topics[topic] not in types:
                raise BagError(f"bag {path}: topic {topic} is {topics[topic]}, expected {' or '.join(types)}")
        connections = [c for c in reader.connections if c.topic in wanted]
        store = _typestore(path, connections)
        for connection, log_time, raw in reader.messages(connections=connections):
            kind = wanted[connection.topic][0]
            msg = store.deserialize_cdr(raw, connection.msgtype)
            header = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)) if hasattr(msg, "header") else None
            if kind == "intervention":
                yield BagEvent(log_time * 1e-9, kind, np.array([float(bool(msg.data))]), None, log_time)
                continue
            if kind in ("command", "proposal"):
                stamp = stamp_to_seconds(msg.header.stamp) if header else log_time * 1e-9
                values = command_values(msg, connection.msgtype)
                yield BagEvent(stamp, kind, values, header, log_time, connection.msgtype)
                continue
            try:
                if kind == "imu":
                    data = imu_to_array(msg)
                elif kind == "odom":
                    data = odometry_to_array(msg)
                elif connection.msgtype == COMPRESSED_IMAGE:
                    data = compressed_to_array(msg, *camera_size, max_pixels=max_image_pixels, dtype=image_dtype)
                else:
                    data = image_to_array(msg, max_pixels=max_image_pixels, dtype=image_dtype)
            except SensorError as exc:
                if skipped is not None:
                    reason = f"{kind}: {exc}"
                    skipped[reason] = skipped.get(reason, 0) + 1
                continue
            yield BagEvent(stamp_to_seconds(msg.header.stamp), kind, data, header, log_time)
