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
