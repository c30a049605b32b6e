"""Models loaded and prepared in a thread of their own, so that whoever asks (the controller node's
parameter callback) returns at once and no safety decision waits behind a build: reading a file,
building its network, loading its weights and tracing its encoder take from milliseconds to many
seconds (a big wired network's synapses are built one by one). The latest request wins: a request
made while another is being built replaces it, and a build whose request was replaced is thrown
away, never installed. No ROS here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    """What one request gave: `value` (whatever `build` returned) or `error` (why it failed)."""

    path: str
    generation: int
    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class ModelLoader:
    """`request(path)` hands a model path to the loader thread, which calls `build(path)` and then
    `done(result)` in that thread, unless a later request was made meanwhile (then the result is
    dropped and the later one is built). `build` raises to say the model cannot be used; its
    exception's text is the reason."""

    def __init__(self, build: Callable[[str], Any], done: Callable[[LoadResult], None], name: str = "model_loader") -> None:
        self._build, self._done = build, done
        self._cond = threading.Condition()
        self._pending: tuple[str, int] | None = None
        self._generation = 0
        self._busy: str | None = None  # the path being built now
        self._running = True
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def request(self, path: str) -> int:
        """Load `path` next, replacing any request not yet done; returns the request's generation."""
        with self._cond:
            self._generation += 1
            self._pending = (path, self._generation)
            self._cond.notify()
            return self._generation

    def cancel(self) -> None:
        """Forget any request not yet installed (a build in progress runs out and is dropped)."""
        with self._cond:
            self._generation += 1
            self._pending = None

    @property
    def loading(self) -> str | None:
        """The path being built or waiting to be, if any."""
        with self._cond:
            return self._pending[0] if self._pending is not None else self._busy

    def current(self, generation: int) -> bool:
        """Whether `generation` is still the latest request (checked again at install time)."""
        with self._cond:
            return generation == self._generation

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving; a build in progress is not interrupted (it cannot be) but never installed.
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
                (path, generation), self._pending = self._pending, None
                self._busy = path
            try:
                try:
                    result = LoadResult(path, generation, value=self._build(path))
                except Exception as exc:  # noqa: BLE001 - any failure is a model that cannot be used
                    result = LoadResult(path, generation, error=str(exc) or type(exc).__name__)
                if self.current(generation):
                    self._done(result)
            finally:  # `loading` turns None only once the result is installed (or dropped)
                with self._cond:
                    self._busy = None
