"""Work done in a thread of its own on the latest request only, so that whoever asks returns at once
and nothing on the control path waits behind it: the controller node's model loader (reading a
file, building its network, loading its weights and tracing its encoder take from milliseconds to
many seconds: a big wired network's synapses are built one by one) and its saliency maps. A request
made while another is waiting replaces it, and a result whose request was replaced meanwhile is
thrown away, never delivered. No ROS here.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    """What one request gave: `value` (whatever `work` returned) or `error` (why it failed)."""

    job: Any
    generation: int
    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def path(self) -> str:
        """The job, for a model loader: the model path."""
        return self.job


class LatestWorker:
    """`request(job)` hands a job to the worker thread, which calls `work(job)` and then
    `done(result)` in that thread, unless a later request (or `cancel`, or `stop`) came meanwhile:
    then the result is dropped and the later job done. `work` raises to say the job failed; its
    exception's text is the reason. `done` must not raise (what it raises is printed)."""

    def __init__(self, work: Callable[[Any], Any], done: Callable[[Result], None], name: str) -> None:
        self._work, self._done = work, done
        self._cond = threading.Condition()
        self._pending: tuple[Any, int] | None = None
        self._generation = 0
        self._busy: Any = None  # the job being done now
        self._running = True
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def request(self, job: Any) -> int:
        """Do `job` next, replacing any request not yet done; returns the request's generation."""
        with self._cond:
            self._generation += 1
            self._pending = (job, self._generation)
            self._cond.notify()
            return self._generation

    def cancel(self) -> None:
        """Forget any request not yet delivered (a job in progress runs out and is dropped)."""
        with self._cond:
            self._generation += 1
            self._pending = None

    @property
    def pending(self) -> Any:
        """The job waiting or being done, if any (None once its result is delivered or dropped)."""
        with self._cond:
            return self._pending[0] if self._pending is not None else self._busy

    def current(self, generation: int) -> bool:
        """Whether `generation` is still the latest request (`done` checks it again where it acts)."""
        with self._cond:
            return generation == self._generation

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving; a job in progress is not interrupted (it cannot be) but never delivered.
        The thread is a daemon: a process that exits does not wait for it."""
        with self._cond:
            self._running = False
            self._generation += 1
            self._pending = None
            self._cond.notify()
        self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait()
                if not self._running:
                    return
                (job, generation), self._pending = self._pending, None
                self._busy = job
            try:
                try:
                    result = Result(job, generation, value=self._work(job))
                except Exception as exc:  # noqa: BLE001 - any failure is the job's, said in its result
                    result = Result(job, generation, error=str(exc) or type(exc).__name__)
                if self.current(generation):
                    try:
                        self._done(result)
                    except Exception:  # noqa: BLE001 - a defect in done: said, and the worker goes on
                        traceback.print_exc()
            finally:  # `pending` turns None only once the result is delivered (or dropped)
                with self._cond:
                    self._busy = None


class ModelLoader(LatestWorker):
    """The controller node's loader: `request(path)`, `work` builds the model at that path."""

    @property
    def loading(self) -> str | None:
        """The model path being built or waiting to be, if any."""
        return self.pending


LoadResult = Result


class SaliencyWorker:
    """The controller node's ~/saliency: a thread of its own (a LatestWorker) computes the
    VisualBackProp map of the latest frame offered (saliency.py) and hands the frame at the model's
    input size with the map over it (rgb8) to `publish(picture, stamp, frame_id)`. The camera thread
    only offers: at most `rate` frames per second of header stamps, none while `subscribed()` says
    nobody looks; a frame offered while the thread is busy replaces the one waiting. A failure goes
    to `failed(reason)`. torch is imported when the first map is made. No ROS here: the node says
    how to publish."""

    def __init__(
        self,
        subscribed: Callable[[], bool],
        publish: Callable[[Any, tuple[int, int], str], None],
        failed: Callable[[str], None],
    ) -> None:
        self._subscribed, self._publish_picture, self._failed = subscribed, publish, failed
        # Frames taken under the cap; maps computed and published (fewer when maps take longer than
        # the cap's period: a frame taken while the thread is busy replaces the one waiting).
        self.offered = self.published = self.computed = 0
        self._last: float | None = None  # the stamp of the last frame taken, s
        self._vbp = None
        self._lock = threading.Lock()  # no publish once stop() has begun
        self._stopped = False
        self._worker = LatestWorker(self._image, self._publish, name="saliency")

    def offer(self, policy, rgb, stamp: tuple[int, int], frame_id: str, rate: float) -> None:
        """From the camera callback: cheap, never waits on a map being made."""
        seconds = stamp[0] + stamp[1] * 1e-9
        last = self._last
        if last is not None and last <= seconds < last + 1.0 / rate:
            return  # within the cap (a stamp going back restarts it)
        if not self._subscribed():
            return  # nobody looks: nothing is computed
        self._last = seconds
        self.offered += 1
        self._worker.request((policy, rgb, stamp, frame_id))

    @property
    def busy(self) -> bool:
        """Whether a frame is waiting for its map or being worked on (False once it is published)."""
        return self._worker.pending is not None

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
        self._worker.stop(timeout)

    def _publish(self, result: Result) -> None:
        if not result.ok:
            self._failed(result.error)
            return
        picture, stamp, frame_id = result.value
        with self._lock:
            if not self._stopped:
                self._publish_picture(picture, stamp, frame_id)
                self.published += 1

    def _image(self, job):
        from .saliency import VisualBackProp, overlay

        policy, rgb, stamp, frame_id = job
        if self._vbp is None or self._vbp.policy is not policy:  # a swapped model: its own encoder
            self._vbp = VisualBackProp(policy)
        frame = self._vbp.frame(rgb)
        picture = overlay(frame, self._vbp.from_frame(frame))
        self.computed += 1
        return picture, stamp, frame_id
