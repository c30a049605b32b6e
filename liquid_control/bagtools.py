"""`liquid-control record` and `liquid-control play`: live ROS 2 topics to a rosbag2 bag and back,
with rclpy. Messages travel as serialized CDR bytes and are never decoded, so what is played is
byte for byte what was recorded. The bag itself is written and read by liquid_control.bags
(rosbags, MCAP, version 8), which `ros2 bag info/play` read too.

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
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions

from . import topics as robot_topics
from .bags import BagError, BagWriter, read_serialized, summarize

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


# --- record ---------------------------------------------------------------------------------------
class Recorder:
    """Subscribes to each wanted topic once a publisher of it appears on the graph, and writes
    every message it receives, untouched, to the bag at its receive time."""

    def __init__(self, node: Node, bag: BagWriter, topics: Iterable[str], log: Callable[[str], None]) -> None:
        self.node = node
        self.bag = bag
        self.log = log
        self.pending = list(dict.fromkeys(topics))
        self.types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self._subscriptions = []
        self.discover()
        node.create_timer(DISCOVERY_PERIOD_S, self.discover)

    def discover(self) -> None:
        if not self.pending:
            return
        graph = dict(self.node.get_topic_names_and_types())
        for topic in list(self.pending):
            if topic not in graph:
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # a subscriber alone puts a topic on the graph; wait for a publisher
            self.pending.remove(topic)
            names = graph[topic]
            if len(names) != 1:
                self._skip(topic, f"published with several types {names}")
                continue
            msgtype = names[0]
            try:
                cls = message_class(msgtype)
                self.bag.add_topic(topic, msgtype, [_bag_qos(p.qos_profile) for p in publishers])
            except (UnknownTypeError, BagError) as exc:
                self._skip(topic, str(exc))
                continue
            qos = subscription_qos([p.qos_profile for p in publishers])
            self.types[topic] = msgtype
            self.counts[topic] = 0
            self._subscriptions.append(
                self.node.create_subscription(cls, topic, self._writer(topic), qos, raw=True))
            self.log(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()})")

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic] = reason
        self.log(f"warning: not recording {topic}: {reason}")

    def _writer(self, topic: str):
        counts, write = self.counts, self.bag.write_serialized

        def on_message(data: bytes, info: dict) -> None:
            # The middleware's receive time (system clock), not the time this callback runs.
            write(topic, data, info.get("received_timestamp") or time.time_ns())
            counts[topic] += 1

        return on_message


def _drain(executor: SingleThreadedExecutor, recorder: Recorder, limit_s: float = 0.5) -> None:
    """Write what has arrived already: spin until a pass takes nothing (at most `limit_s`)."""
    end = time.monotonic() + limit_s
    before = -1
    while time.monotonic() < end and before != sum(recorder.counts.values()):
        before = sum(recorder.counts.values())
        for _ in range(100):
            executor.spin_once(timeout_sec=0.0)


def record(output: str | Path, topics: Sequence[str] | None = None, duration: float | None = None,
           log: Callable[[str], None] = _stderr, stop: threading.Event | None = None) -> dict:
    """Record `topics` (default: the robot's) to a new bag until SIGINT/SIGTERM, `stop`, or
    `duration` seconds; the bag is closed properly in every case. Returns the summary."""
    if duration is not None and not duration > 0:
        raise ValueError(f"--duration must be > 0 s, got {duration}")
    topics = list(topics) if topics else default_topics()
    for topic in topics:
        if not topic.startswith("/"):
            raise ValueError(f"topic {topic!r}: give absolute names (/{topic})")
    stop = stop or threading.Event()
    bag = BagWriter(output)  # refuses an existing path before anything starts
    started = time.monotonic()
    with bag, _ros("liquid_bag_recorder", stop) as node:
        recorder = Recorder(node, bag, topics, log)
        if recorder.pending:
            log(f"waiting for {', '.join(recorder.pending)}")
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        deadline = None if duration is None else started + duration
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.05)
            _drain(executor, recorder)
        finally:
            executor.shutdown(timeout_sec=1.0)
    elapsed = time.monotonic() - started
    return {
        "bag": str(output),
        "seconds": round(elapsed, 3),
        "messages": sum(recorder.counts.values()),
        "topics": {t: {"type": recorder.types[t], "count": recorder.counts[t]} for t in recorder.counts},
        "not_seen": list(recorder.pending),
        "skipped": recorder.skipped,
    }


def format_record_summary(summary: dict) -> str:
    lines = [f"bag {summary['bag']}: {summary['messages']} messages in {summary['seconds']:.1f} s"]
    width = max([len(t) for t in [*summary["topics"], *summary["not_seen"], *summary["skipped"]]] or [0])
    for topic, item in summary["topics"].items():
        lines.append(f"  {topic:<{width}}  {item['count']:>7}  {item['type']}")
    for topic in summary["not_seen"]:
        lines.append(f"  {topic:<{width}}  {0:>7}  (no publisher seen)")
    for topic, reason in summary["skipped"].items():
        lines.append(f"  {topic:<{width}}  {0:>7}  (not recorded: {reason})")
    return "\n".join(lines)


# --- play -----------------------------------------------------------------------------------------
def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """OLD:=NEW pairs (as ROS writes remappings) as a dict."""
    remap = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old.startswith("/") or not new.startswith("/"):
            raise ValueError(f"--remap takes /OLD:=/NEW with absolute topic names, got {item!r}")
        remap[old] = new
    return remap


class Player:
    """Publishes a bag's messages as they were recorded: same bytes, same spacing in time
    (divided by `rate`), optionally /clock from the bag's time."""

    def __init__(self, node: Node, path: str | Path, topics: Sequence[str] | None = None,
                 remap: dict[str, str] | None = None, rate: float = 1.0, clock_hz: float = 0.0,
                 start_offset: float = 0.0, log: Callable[[str], None] = _stderr) -> None:
        if not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        if clock_hz < 0:
            raise ValueError(f"--clock must be a rate >= 0 Hz, got {clock_hz}")
        if start_offset < 0:
            raise ValueError(f"--start-offset must be >= 0 s, got {start_offset}")
        self.node, self.path, self.rate, self.log = node, Path(path), rate, log
        self.summary = summary = summarize(path)
        if topics:
            missing = sorted(set(topics) - set(summary.topics))
            if missing:
                raise BagError(f"bag {path}: no topic {', '.join(missing)} (it has {sorted(summary.topics)})")
            played = list(dict.fromkeys(topics))
        else:
            played = sorted(summary.topics)
        if clock_hz > 0 and robot_topics.CLOCK in played:
            played.remove(robot_topics.CLOCK)
            log(f"--clock: the bag's own {robot_topics.CLOCK} is not played")
        remap = remap or {}
        unused = sorted(set(remap) - set(played))
        if unused:
            raise ValueError(f"--remap of {', '.join(unused)}: not a topic played from bag {path} ({played})")
        self.topics = played
        self.names = {t: remap.get(t, t) for t in played}
        self.start_ns = summary.start_ns + int(round(start_offset * 1e9))
        if summary.count and self.start_ns > summary.end_ns:
            raise ValueError(f"--start-offset {start_offset} s is past the end of bag {path} "
                             f"({summary.duration:.3f} s long)")
        self.publishers = {}
        for topic in played:
            info = summary.topics[topic]
            try:
                cls = message_class(info.msgtype)
            except UnknownTypeError as exc:
                raise BagError(f"bag {path}: topic {topic} cannot be played: {exc} "
                               "(leave it out with --topics)") from None
            self.publishers[topic] = node.create_publisher(cls, self.names[topic],
                                                           publisher_qos(info.msgtype, info.offered_qos))
        self.clock_period = 1.0 / clock_hz if clock_hz > 0 else None
        if self.clock_period:
            from rosgraph_msgs.msg import Clock

            self._clock_msg = Clock()
            self.clock_pub = node.create_publisher(Clock, robot_topics.CLOCK, 10)
        self.published = dict.fromkeys(played, 0)
        self.clocks = 0

    def wait_for_subscribers(self, stop: threading.Event, timeout: float = WAIT_FOR_SUBSCRIBERS_S) -> bool:
        """Until every played topic has a subscriber (True), or `timeout` s (False)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            lonely = [self.names[t] for t, p in self.publishers.items() if p.get_subscription_count() == 0]
            if not lonely:
                return True
            if time.monotonic() > deadline:
                self.log(f"warning: no subscriber on {', '.join(lonely)} after {timeout:.0f} s; playing anyway")
                return False
            stop.wait(0.05)
        return False

    def play_once(self, stop: threading.Event) -> bool:
        """One pass through the bag. False if stopped before the end."""
        wall0 = time.monotonic()
        self._next_clock = wall0
        publishers, published = self.publishers, self.published
        for topic, _, log_time, data in read_serialized(self.path, self.topics, self.start_ns):
            due = wall0 + (log_time - self.start_ns) * 1e-9 / self.rate
            if not self._wait_until(due, wall0, stop):
                return False
            publishers[topic].publish(data)
            published[topic] += 1
        return not stop.is_set()

    def _wait_until(self, due: float, wall0: float, stop: threading.Event) -> bool:
        while True:
            now = time.monotonic()
            if self.clock_period:
                while self._next_clock <= now:
                    self._publish_clock(self.start_ns + int((self._next_clock - wall0) * self.rate * 1e9))
                    self._next_clock += self.clock_period
            if now >= due:
                return not stop.is_set()
            wake = min(due, self._next_clock) if self.clock_period else due
            if stop.wait(max(wake - now, 0.0)):
                return False

    def _publish_clock(self, bag_ns: int) -> None:
        stamp = self._clock_msg.clock
        stamp.sec, stamp.nanosec = divmod(bag_ns, 1_000_000_000)
        self.clock_pub.publish(self._clock_msg)
        self.clocks += 1

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until reliable subscribers have acknowledged everything published."""
        from rclpy.duration import Duration

        for topic, publisher in self.publishers.items():
            if publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE and self.published[topic]:
                publisher.wait_for_all_acked(Duration(seconds=timeout))


def play(path: str | Path, rate: float = 1.0, loop: bool = False, remap: dict[str, str] | None = None,
         clock_hz: float = 0.0, topics: Sequence[str] | None = None, start_offset: float = 0.0,
         delay: float = 0.0, wait_for_subscribers: bool = False, log: Callable[[str], None] = _stderr,
         stop: threading.Event | None = None) -> dict:
    """Play a bag to live topics until its end (or forever with `loop`, until SIGINT/SIGTERM)."""
    summarize(path)  # a bad bag is an error before any ROS starts
    stop = stop or threading.Event()
    started = time.monotonic()
    loops = 0
    with _ros("liquid_bag_player", stop) as node:
        player = Player(node, path, topics, remap, rate, clock_hz, start_offset, log)
        renamed = {t: n for t, n in player.names.items() if t != n}
        log(f"playing {len(player.topics)} topics from {path}"
            + (f" ({', '.join(f'{a} -> {b}' for a, b in renamed.items())})" if renamed else ""))
        if wait_for_subscribers:
            player.wait_for_subscribers(stop)
        if delay > 0:
            stop.wait(delay)
        empty = not any(player.summary.topics[t].count for t in player.topics)
        while not stop.is_set():
            finished = player.play_once(stop)
            loops += finished
            if not (loop and finished) or empty:
                break
        player.flush()
    return {
        "bag": str(path),
        "seconds": round(time.monotonic() - started, 3),
        "loops": loops,
        "messages": sum(player.published.values()),
        "topics": {player.names[t]: n for t, n in player.published.items()},
        "clock_messages": player.clocks,
        "interrupted": stop.is_set(),
    }


def format_play_summary(summary: dict) -> str:
    lines = [f"played {summary['messages']} messages from {summary['bag']} in {summary['seconds']:.1f} s"
             + (f" ({summary['loops']} loops)" if summary["loops"] > 1 else "")
             + (", interrupted" if summary["interrupted"] else "")]
    width = max([len(t) for t in summary["topics"]] or [0])
    for topic, n in summary["topics"].items():
        lines.append(f"  {topic:<{width}}  {n:>7}")
    if summary["clock_messages"]:
        lines.append(f"  {robot_topics.CLOCK:<{width}}  {summary['clock_messages']:>7}  (--clock)")
    return "\n".join(lines)
