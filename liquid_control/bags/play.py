"""`liquid-control play`: a rosbag2 bag back to live ROS 2 topics, with rclpy: the recorded bytes,
with the recorded spacing in time (divided by the rate), optionally /clock from the bag's time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy

from .. import topics as robot_topics
from .io import BagError, read_serialized, summarize
from .ros import WAIT_FOR_SUBSCRIBERS_S, UnknownTypeError, _ros, _stderr, message_class, publisher_qos


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

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: Sequence[str] | None = None,
        remap: dict[str, str] | None = None,
        rate: float = 1.0,
        clock_hz: float = 0.0,
        start_offset: float = 0.0,
        log: Callable[[str], None] = _stderr,
    ) -> None:
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
            raise ValueError(
                f"--start-offset {start_offset} s is past the end of bag {path} ({summary.duration:.3f} s long)"
            )
        self.publishers = {}
        for topic in played:
            info = summary.topics[topic]
            try:
                cls = message_class(info.msgtype)
            except UnknownTypeError as exc:
                raise BagError(
                    f"bag {path}: topic {topic} cannot be played: {exc} (leave it out with --topics)"
                ) from None
            self.publishers[topic] = node.create_publisher(
                cls, self.names[topic], publisher_qos(info.msgtype, info.offered_qos)
            )
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


def play(
    path: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    remap: dict[str, str] | None = None,
    clock_hz: float = 0.0,
    topics: Sequence[str] | None = None,
    start_offset: float = 0.0,
    delay: float = 0.0,
    wait_for_subscribers: bool = False,
    log: Callable[[str], None] = _stderr,
    stop: threading.Event | None = None,
) -> dict:
    """Play a bag to live topics until its end (or forever with `loop`, until SIGINT/SIGTERM)."""
    summarize(path)  # a bad bag is an error before any ROS starts
    stop = stop or threading.Event()
    started = time.monotonic()
    loops = 0
    with _ros("liquid_bag_player", stop) as node:
        player = Player(node, path, topics, remap, rate, clock_hz, start_offset, log)
        renamed = {t: n for t, n in player.names.items() if t != n}
        log(
            f"playing {len(player.topics)} topics from {path}"
            + (f" ({', '.join(f'{a} -> {b}' for a, b in renamed.items())})" if renamed else "")
        )
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
    lines = [
        f"played {summary['messages']} messages from {summary['bag']} in {summary['seconds']:.1f} s"
        + (f" ({summary['loops']} loops)" if summary["loops"] > 1 else "")
        + (", interrupted" if summary["interrupted"] else "")
    ]
    width = max([len(t) for t in summary["topics"]] or [0])
    for topic, n in summary["topics"].items():
        lines.append(f"  {topic:<{width}}  {n:>7}")
    if summary["clock_messages"]:
        lines.append(f"  {robot_topics.CLOCK:<{width}}  {summary['clock_messages']:>7}  (--clock)")
    return "\n".join(lines)
