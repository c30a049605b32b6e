"""`liquid-control record`: live ROS 2 topics to a rosbag2 bag, with rclpy. Messages travel as
serialized CDR bytes and are never decoded, so what is played later is byte for byte what was
recorded. The bag itself is written by liquid_control.bags.io (rosbags, MCAP, version 8), which
`ros2 bag info/play` read too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from .io import BagError, BagWriter
from .ros import (
    DISCOVERY_PERIOD_S,
    UnknownTypeError,
    _bag_qos,
    _ros,
    _stderr,
    default_topics,
    message_class,
    subscription_qos,
)


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
