"""Camera and IMU served by a wait loop of their own thread, off the node's executor.

rclpy's executors rebuild their whole wait set in Python on every wake-up: every subscription,
service (a node has nine here: six parameter services and three Trigger services), timer, guard
condition and QoS event handler, then wrap the callback in a task. On this machine that is about a
tenth of a millisecond per message even for a bare relay (bench/node_latency.py). The camera and
the IMU are the only inputs on the control path, so they wait in a wait set that holds just them;
everything else of the node (parameters, services, teacher, e-stop, watchdog, /clock) stays on
the executor the user spins, so the node composes and spins like any other.

The subscriptions are created by the node itself (names, namespaces and remaps resolve as usual)
in a callback group that no executor runs. They have no QoS event handlers: Fast DDS wakes a wait
set that holds a subscription's event handler on every message of that subscription, and a best
effort, volatile reader (sensor data QoS) matches any publisher anyway.

The loop uses rclpy's wait set binding the way rclpy's own wait_for_message does.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

from ..bags.ros import ServedElsewhere

# Seconds between checks that the context is still up when no message comes (rcl has no wake-up
# on shutdown); stop() wakes the loop at once through its guard condition.
POLL_S = 0.1


def _stamp_key(msg) -> tuple[int, int]:
    header = getattr(msg, "header", None)
    return (header.stamp.sec, header.stamp.nanosec) if header is not None else (0, 0)


class SensorLoop:
    """Subscriptions whose callbacks run in one thread of their own, in header-stamp order when
    several are ready at once. `on_error(exc)` is called (in that thread) when a callback raises."""

    def __init__(self, node, on_error: Callable[[BaseException], None], name: str = "sensors") -> None:
        self._node = node
        self._name = name
        self._on_error = on_error
        self._group = ServedElsewhere()
        self._subscriptions = []
        self._wake = node.create_guard_condition(lambda: None, callback_group=self._group)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick: Callable[[], None] | None = None
        self._period = POLL_S

    def every(self, period: float, callback: Callable[[], None]) -> None:
        """Also call `callback` in the loop's thread every `period` seconds of the steady clock,
        whether messages come or not (the controller node's watchdog: it must fire while the
        executor is busy). A failure is reported like a callback's."""
        if self._thread is not None:
            raise RuntimeError("every() before start()")
        self._tick, self._period = callback, period

    def subscribe(self, msg_type, topic: str, callback, qos):
        if self._thread is not None:
            raise RuntimeError("subscribe before start()")
        sub = self._node.create_subscription(
            msg_type,
            topic,
            callback,
            qos,
            callback_group=self._group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
        )
        self._subscriptions.append(sub)
        return sub

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self._node.get_name()}_{self._name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._thread.name if self._thread is not None else self._name

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Stop the loop and (with `wait`) wait for the callback in progress to end (before the
        node goes). Stopping several loops: stop each with wait=False, then join() each."""
        self._stopping.set()
        if self._thread is None:
            return
        try:
            self._wake.trigger()
        except Exception:  # noqa: BLE001 - already destroyed: the poll timeout ends the loop
            pass
        if wait:
            self.join(timeout)

    def destroy(self) -> None:
        """Destroy the loop's subscriptions and guard condition (after stop(): a lifecycle cleanup).
        rclpy defers the destruction of a handle the thread still holds until it lets go."""
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._node.destroy_guard_condition(self._wake)
        self._subscriptions = []

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        context = self._node.context
        subs = self._subscriptions
        with ExitStack() as handles:
            try:
                for sub in subs:
                    handles.enter_context(sub.handle)
                handles.enter_context(self._wake.handle)
                wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0, 0, context.handle)
            except Exception:  # noqa: BLE001 - the node or context went before the loop started
                return
            period = min(self._period, POLL_S)
            next_tick = time.monotonic() + period
            while not self._stopping.is_set() and context.ok():
                wait_set.clear_entities()
                for sub in subs:
                    wait_set.add_subscription(sub.handle)
                wait_set.add_guard_condition(self._wake.handle)
                timeout = POLL_S if self._tick is None else max(next_tick - time.monotonic(), 0.0)
                try:
                    wait_set.wait(int(timeout * 1e9))
                except Exception:  # noqa: BLE001 - the context shut down during the wait
                    return
                if self._stopping.is_set():
                    return
                if self._tick is not None and time.monotonic() >= next_tick:
                    # On the steady clock, never bunched: a late tick does not make up the missed.
                    next_tick = max(next_tick + period, time.monotonic())
                    try:
                        self._tick()
                    except Exception as exc:  # noqa: BLE001 - a safe stop, never a dead thread
                        if not self._report(exc):
                            return
                ready = wait_set.get_ready_entities("subscription")
                if not ready:
                    continue
                taken = []
                for sub in subs:
                    if sub.handle.pointer in ready:
                        try:
                            got = sub.handle.take_message(sub.msg_type, sub.raw)
                        except Exception as exc:  # noqa: BLE001 - reported, the loop goes on
                            if not self._report(exc):
                                return
                            continue
                        if got is not None:
                            taken.append((sub, got[0]))
                if len(taken) > 1:
                    taken.sort(key=lambda pair: _stamp_key(pair[1]))
                for sub, msg in taken:
                    try:
                        sub.callback(msg)
                    except Exception as exc:  # noqa: BLE001 - a safe stop, never a dead thread
                        if not self._report(exc):
                            return

    def _report(self, exc: BaseException) -> bool:
        """Hand a failure to on_error; False when the node or context is going away (then a
        failure is expected, e.g. a publish after shutdown, and the loop ends quietly)."""
        if self._stopping.is_set() or not self._node.context.ok():
            return False
        try:
            self._on_error(exc)
        except Exception:  # noqa: BLE001 - on_error itself failed: print both, keep serving
            traceback.print_exc()
        return True
