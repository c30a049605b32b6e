"""What `record` and `play` share over rclpy: message classes by type name, the QoS rules, an
rclpy context whose SIGINT and SIGTERM end the work gracefully instead of raising, and a wait loop
that takes raw messages off the executor.

QoS: the recorder subscribes as the publishers offer (best effort if any publisher is best effort,
as sensor drivers are; transient local if all are latched), and keeps their offered QoS in the bag.
The player publishes sensor topics with the sensor-data profile, the others reliable (latched if
they were recorded from latched publishers).
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import rclpy
from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
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
from ..runtime.parameters import NODE_NAME

# Types published with the sensor-data profile (best effort): what sensor drivers publish.
SENSOR_TYPES = frozenset(
    {
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/CompressedImage",
        "sensor_msgs/msg/CameraInfo",
        "sensor_msgs/msg/Imu",
        "sensor_msgs/msg/LaserScan",
        "sensor_msgs/msg/PointCloud2",
        "sensor_msgs/msg/NavSatFix",
        "sensor_msgs/msg/MagneticField",
        "sensor_msgs/msg/JointState",
    }
)
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
RECORD_DEPTH = 1000  # subscription queue of the recorder: absorbs bursts while the bag writes
PLAY_DEPTH = 100  # history of the player's reliable publishers
DISCOVERY_PERIOD_S = 0.25  # how often the recorder looks for topics that have not appeared yet
WAIT_FOR_SUBSCRIBERS_S = 30.0
_INFINITE_NS = 2**63 - 1


def default_topics(namespace: str = "/") -> list[str]:
    """The robot's topics (liquid_control.topics) as they appear on the graph under `namespace`,
    the controller node's proposals and takeover marks included."""
    names = (
        robot_topics.CAMERA,
        robot_topics.CAMERA_INFO,
        robot_topics.IMU,
        robot_topics.ODOM,
        robot_topics.CMD_VEL,
        robot_topics.TEACHER,
        robot_topics.TELEOP,
        robot_topics.TELEOP_ENABLE,
        robot_topics.PROPOSED,
        robot_topics.INTERVENTION,
        robot_topics.E_STOP,
        robot_topics.CLOCK,
        robot_topics.DIAGNOSTICS,
    )
    return [robot_topics.absolute(n, namespace, node=NODE_NAME) for n in names]


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
        raise UnknownTypeError(
            f"message type {msgtype} is not installed (no Python module {module_name} with {name})"
        ) from None


def _bag_qos(profile: QoSProfile):
    """An rclpy QoS profile (as discovered for a publisher) in the bag's metadata form."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def duration(d) -> QosTime:
        ns = d.nanoseconds
        if ns >= _INFINITE_NS:
            return QosTime(2147483647, 4294967295)  # how rosbag2 writes an infinite duration
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    return Qos(
        QosHistory(int(profile.history)),
        int(profile.depth),
        QosReliability(int(profile.reliability)),
        QosDurability(int(profile.durability)),
        duration(profile.deadline),
        duration(profile.lifespan),
        QosLiveliness(int(profile.liveliness)),
        duration(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def subscription_qos(offered: Sequence[QoSProfile]) -> QoSProfile:
    """A subscription that hears every one of these publishers: best effort unless all are
    reliable, transient local only if all are (then it also gets what they latched)."""
    reliable = bool(offered) and all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=RECORD_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def publisher_qos(msgtype: str, recorded: Sequence = ()) -> QoSProfile:
    """How the player publishes a topic: sensor data profile for sensor types, else reliable,
    latched when every publisher it was recorded from was (recorded: rosbags Qos entries)."""
    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    latched = bool(recorded) and all(int(q.durability.value) == int(DurabilityPolicy.TRANSIENT_LOCAL) for q in recorded)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=PLAY_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


# Signals that arrive within this many seconds after the work is done (the bag closed) are taken
# as the rest of the burst that stopped it (a terminal's Ctrl-C under `ros2 launch` is two SIGINTs,
# the process group's and launch's own): absorbed, also while the interpreter exits, so the process
# exits 0. Later ones get the handlers that were there before.
LATE_SIGNAL_GRACE_S = 3.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT and SIGTERM, any number of them, set `stop` instead of raising, for as long as the
    block runs: the caller finishes what it is doing (closing a bag) and nothing raises inside it.

    The handler only writes a byte to a pipe; a thread of its own sets `stop`. (A handler that set
    the Event itself could deadlock: Python runs handlers between bytecodes of the main thread,
    which may be inside `stop.wait()` holding the Event's lock.) Outside the main thread (where
    Python cannot install handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # a handler never blocks, even with the pipe full

    def on_signal(signum, frame):
        try:
            os.write(write_fd, b"s")
        except OSError:  # the pipe is full: a stop is pending already
            pass

    def watch():
        while os.read(read_fd, 512):  # b"" once the write end is closed
            if not stop.is_set():
                stop.set()

    watcher = threading.Thread(target=watch, name="stop_on_signals", daemon=True)
    watcher.start()
    previous = {}
    try:
        for sig in STOP_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is not None:  # None: a handler not installed from Python; leave it alone
                previous[sig] = handler
                signal.signal(sig, on_signal)
        yield
    finally:
        _restore_after_grace(previous, LATE_SIGNAL_GRACE_S)
        os.close(write_fd)  # the watcher reads the end and returns
        watcher.join()
        os.close(read_fd)


_grace_until = [0.0]  # the end of the latest grace period (time.monotonic())


@atexit.register
def _ignore_while_exiting() -> None:
    """At interpreter exit within a grace period, ignore SIGINT and SIGTERM from here on: Python's
    finalization resets a Python handler to the default action, and a late signal of the burst
    would then kill the process (exit -2) after its bag is safely closed."""
    if time.monotonic() < _grace_until[0] and threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _restore_after_grace(previous: dict, grace_s: float) -> None:
    """Put back the handlers that were there before, once `grace_s` seconds have passed: a signal
    until then is absorbed; the first one after it restores the old handler and is handed to it."""
    until = _grace_until[0] = time.monotonic() + grace_s

    def late(signum, frame):
        if time.monotonic() < until:
            return
        old = previous[signum]
        signal.signal(signum, old)
        if callable(old):
            old(signum, frame)
        elif old == signal.SIG_DFL:
            signal.raise_signal(signum)

    for sig in previous:
        signal.signal(sig, late)


@contextmanager
def ros_node(node_name: str, **node_options):
    """An rclpy context and node of our own, without rclpy's signal handlers; both are gone after
    the block."""
    context = rclpy.context.Context()
    # No command line for rcl: it would read play's `--remap /a:=/b` as a global remapping rule.
    rclpy.init(args=["liquid-control"], context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = Node(node_name, context=context, **node_options)
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


@contextmanager
def _ros(node_name: str, stop: threading.Event):
    """ros_node() inside stop_on_signals(): SIGINT and SIGTERM set `stop` until the context is down."""
    with stop_on_signals(stop), ros_node(node_name) as node:
        yield node


class ServedElsewhere(CallbackGroup):
    """A callback group that no executor runs: its entities are served by a wait loop of their own
    (RawTakeLoop here, the controller node's SensorLoop)."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


def _never_called(_msg) -> None:  # the subscriptions of a RawTakeLoop have no rclpy callback
    raise AssertionError("served by RawTakeLoop")


class RawTakeLoop:
    """Raw (serialized) subscriptions served by one thread of their own, off any executor.

    rclpy's executors rebuild their whole wait set in Python and wrap every callback in a task on
    each wake-up: about a tenth of a millisecond per message even for a bare relay on this machine
    (bench/node_latency.py), taken from the CPU the controller and simulator beside need. Here a
    wait set holds just the subscriptions and a guard condition, and each wake-up takes what each
    ready subscription holds (up to BATCH, by turns, so that no topic starves the others):
    `on_message(key, data, received_ns)` runs in this thread for every message, in the order
    taken, with the middleware's receive time (system clock). It should only queue the bytes.
    The technique of the controller node's sensor loop (nodes/sensor_loop.py, a layer above, so
    not imported): rclpy's wait set binding, used the way rclpy's own wait_for_message does.

    Subscriptions may be added while the loop runs (the recorder subscribes to topics as their
    publishers appear). stop() takes what has arrived before the loop ends."""

    POLL_S = 0.1  # how often the loop checks the context when nothing arrives

    def __init__(self, node: Node, on_message) -> None:
        self._node = node
        self._on_message = on_message
        self._group = ServedElsewhere()
        self._wake = node.create_guard_condition(lambda: None, callback_group=self._group)
        self._lock = threading.Lock()
        self._subscriptions: list = []
        self._changed = True
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile, key):
        """A raw subscription whose messages reach on_message with `key`."""
        sub = self._node.create_subscription(
            msg_type,
            topic,
            _never_called,
            qos,
            callback_group=self._group,
            raw=True,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
        )
        with self._lock:
            self._subscriptions.append((sub, key))
            self._changed = True
        self._wake.trigger()
        return sub

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self._node.get_name()}_take", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop after it has taken what the subscriptions hold; wait for it."""
        self._stopping.set()
        if self._thread is None:
            return
        self._wake.trigger()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - kept for the owner, which stops
            self.error = exc

    def _serve(self) -> None:
        context = self._node.context
        subs: list = []
        with ExitStack() as handles:
            handles.enter_context(self._wake.handle)
            wait_set = None
            while True:
                if self._changed:
                    with self._lock:
                        new, self._changed = self._subscriptions[len(subs) :], False
                    for sub, _ in new:
                        handles.enter_context(sub.handle)
                    subs = subs + new
                    wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0, 0, context.handle)
                if self._stopping.is_set() or not context.ok():
                    # Whatever arrived before the stop: passes until one finds nothing.
                    deadline = time.monotonic() + 0.5
                    while sum(self._take(sub, key) for sub, key in subs) and time.monotonic() < deadline:
                        pass
                    return
                wait_set.clear_entities()
                for sub, _ in subs:
                    wait_set.add_subscription(sub.handle)
                wait_set.add_guard_condition(self._wake.handle)
                wait_set.wait(int(self.POLL_S * 1e9))
                ready = wait_set.get_ready_entities("subscription")
                if ready:
                    for sub, key in subs:
                        if sub.handle.pointer in ready:
                            self._take(sub, key, self.BATCH)

    BATCH = 64  # messages taken from one subscription before the next one's turn

    def _take(self, sub, key, limit: int | None = None) -> int:
        """Take what `sub` holds now (at most `limit`); how many."""
        take, msg_type, on_message = sub.handle.take_message, sub.msg_type, self._on_message
        n = 0
        while limit is None or n < limit:
            got = take(msg_type, True)
            if got is None:
                break
            data, info = got
            on_message(key, data, info.get("received_timestamp") or time.time_ns())
            n += 1
        return n


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
