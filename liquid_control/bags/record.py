"""`liquid-control record`: live ROS 2 topics to a rosbag2 bag, with rclpy. Messages travel as
serialized CDR bytes and are never decoded, so what is played later is byte for byte what was
recorded. The bag itself is written by liquid_control.bags.io (rosbags, MCAP, version 8), which
`ros2 bag info/play` read too.

Three threads: the main one looks for the topics' publishers on the graph and waits for the stop
(SIGINT, SIGTERM, `--duration`); a take loop (bags.ros.RawTakeLoop, no executor) takes every
message off the subscriptions as it arrives and only queues its bytes; a writer writes the queue
to the bag and, every FLUSH_PERIOD_S, closes the MCAP chunk and hands it to the operating system.
A recorder killed with SIGKILL so loses at most the messages of its last FLUSH_PERIOD_S (and any
it had not written yet); `liquid-control recover` reads the rest from the file.

SIGINT and SIGTERM, however many and whenever they come, only set the stop: the handlers stay
installed until the bag is closed and the rclpy context is down (bags.ros.stop_on_signals), so
nothing can raise inside the close.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rclpy.node import Node

from .io import BagError, BagWriter
from .ros import (
    DISCOVERY_PERIOD_S,
    RawTakeLoop,
    UnknownTypeError,
    _bag_qos,
    _stderr,
    default_topics,
    message_class,
    ros_node,
    stop_on_signals,
    subscription_qos,
)

FLUSH_PERIOD_S = 0.5  # a killed recorder loses at most about this much of the end of its recording
POLL_S = 0.05  # how often the main thread looks at the stop and the deadline
_END = object()  # the writer's last item


class Recorder:
    """Subscribes to each wanted topic once a publisher of it appears on the graph, and writes
    every message it receives, untouched, to the bag at its receive time (on a thread of its own:
    start() and close())."""

    def __init__(self, node: Node, bag: BagWriter, topics: Iterable[str], log: Callable[[str], None]) -> None:
        self.node = node
        self.bag = bag
        self.log = log
        self.pending = list(dict.fromkeys(topics))
        self.types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        put = self._queue.put
        self._take = RawTakeLoop(node, lambda topic, data, received_ns: put((topic, data, received_ns)))
        self._bag_lock = threading.Lock()  # the writer thread's writes, the main thread's add_topic
        self._writer = threading.Thread(target=self._write, name="liquid_bag_writer", daemon=True)

    def start(self) -> None:
        self._writer.start()
        self._take.start()
        self.discover()

    def close(self) -> None:
        """Take what has arrived, write everything queued, stop both threads (the bag stays open)."""
        self._take.stop()
        self._queue.put(_END)
        if self._writer.ident is not None:
            self._writer.join()
        self.error = self.error or self._take.error

    @property
    def failed(self) -> bool:
        return self.error is not None or self._take.error is not None or not self._writer.is_alive()

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
                with self._bag_lock:
                    self.bag.add_topic(topic, msgtype, [_bag_qos(p.qos_profile) for p in publishers])
            except (UnknownTypeError, BagError) as exc:
                self._skip(topic, str(exc))
                continue
            qos = subscription_qos([p.qos_profile for p in publishers])
            self.types[topic] = msgtype
            self.counts[topic] = 0
            self._take.subscribe(cls, topic, qos, topic)
            self.log(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()})")

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic] = reason
        self.log(f"warning: not recording {topic}: {reason}")

    def _write(self) -> None:
        """The writer thread: the queue to the bag, in batches; a chunk closed and flushed every
        FLUSH_PERIOD_S (and at the end)."""
        get, get_nowait, empty = self._queue.get, self._queue.get_nowait, queue.Empty
        counts, write, flush = self.counts, self.bag.write_serialized, self.bag.flush
        flushed = time.monotonic()
        done = False
        try:
            while not done:
                try:
                    item = get(timeout=FLUSH_PERIOD_S)
                except empty:
                    item = None
                with self._bag_lock:  # a batch at a time: between two, the main thread may add a topic
                    batch = 0
                    while item is not None:
                        if item is _END:
                            done = True
                            break
                        topic, data, received_ns = item
                        write(topic, data, received_ns)
                        counts[topic] += 1
                        batch += 1
                        if batch == 512:
                            break
                        try:
                            item = get_nowait()
                        except empty:
                            item = None
                    now = time.monotonic()
                    if done or now - flushed >= FLUSH_PERIOD_S:
                        flush()
                        flushed = now
        except BaseException as exc:  # noqa: BLE001 - reported by record(); the main thread stops
            self.error = exc


def record(
    output: str | Path,
    topics: Sequence[str] | None = None,
    duration: float | None = None,
    log: Callable[[str], None] = _stderr,
    stop: threading.Event | None = None,
) -> dict:
    """Record `topics` (default: the robot's) to a new bag until SIGINT/SIGTERM, `stop`, or
    `duration` seconds; the bag is closed properly in every case. Returns the summary."""
    if duration is not None and not duration > 0:
        raise ValueError(f"--duration must be > 0 s, got {duration}")
    topics = list(topics) if topics else default_topics()
    for topic in topics:
        if not topic.startswith("/"):
            raise ValueError(f"topic {topic!r}: give absolute names (/{topic})")
    stop = stop or threading.Event()
    started = time.monotonic()
    # Signals first, then the bag, then rclpy; undone in the other order: no signal raises
    # anywhere between the bag's creation and its close.
    with stop_on_signals(stop):
        bag = BagWriter(output)  # refuses an existing path before anything starts
        with bag:
            with ros_node("liquid_bag_recorder") as node:
                recorder = Recorder(node, bag, topics, log)
                try:
                    recorder.start()
                    if recorder.pending:
                        log(f"waiting for {', '.join(recorder.pending)}")
                    deadline = None if duration is None else started + duration
                    next_discovery = time.monotonic() + DISCOVERY_PERIOD_S
                    while not stop.is_set() and not recorder.failed:
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            break
                        if now >= next_discovery:
                            recorder.discover()
                            next_discovery = now + DISCOVERY_PERIOD_S
                        # Never stop.wait() here: see bags.ros.stop_on_signals.
                        time.sleep(POLL_S if deadline is None else max(min(POLL_S, deadline - now), 0.0))
                finally:
                    recorder.close()
        if recorder.error is not None:
            exc = recorder.error
            raise BagError(
                f"bag {output}: recording failed ({type(exc).__name__}: {exc}); what was written before is in the bag"
            ) from exc
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
