"""`liquid-control replay --video`: an MP4 with one video frame per camera frame: the camera frame,
the encoder's saliency over it, and linear.x and angular.z over the last seconds, replayed and
recorded. Drawn with matplotlib (Agg, one figure whose artists are updated per frame), written by
imageio through the ffmpeg that imageio-ffmpeg ships (`pip install 'liquid_control[video]'`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .plot import COMMAND_PANELS, new_figure

WINDOW_S = 5.0  # s of commands shown before each frame
SIZE_IN = (7.68, 4.32)  # 768 x 432 pixels at the plots' DPI: both multiples of 16, as H.264 likes
INSTALL = "pip install 'liquid_control[video]' (imageio and imageio-ffmpeg)"


class VideoWriterMissing(ValueError):
    """imageio or imageio-ffmpeg (its ffmpeg) is not installed: says what to install."""


def check_writer() -> None:
    """Raise VideoWriterMissing, saying what to install, unless an MP4 can be written here."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg
    except ImportError as exc:
        raise VideoWriterMissing(f"--video needs {exc.name}, which is not installed: {INSTALL}") from None
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VideoWriterMissing(f"--video: imageio-ffmpeg finds no ffmpeg ({exc}); {INSTALL}") from None


class ReplayVideo:
    """`add()` one camera frame at a time; `close()` finishes the file. `limits`: the largest
    |linear.x| and |angular.z| (m/s, rad/s), the command panels' ranges."""

    def __init__(self, path: str | Path, fps: float, limits: tuple[float, float], title: str = "") -> None:
        check_writer()
        import imageio.v2 as imageio

        self.path = Path(path)
        self.frames = 0
        self._writer = imageio.get_writer(
            self.path,
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec="libx264",
            pixelformat="yuv420p",
            quality=7,
            macro_block_size=16,
            ffmpeg_log_level="error",
        )
        self._fig = fig = new_figure(*SIZE_IN)
        grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
        self._camera_ax, self._saliency_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        self._camera = self._saliency = None
        self._lines = {}
        for col, ((name, unit), limit) in enumerate(zip(COMMAND_PANELS, limits, strict=True)):
            ax = fig.add_subplot(grid[1, col])
            (recorded,) = ax.plot([], [], color="C1", lw=2.4, alpha=0.75, label="recorded")
            (replayed,) = ax.plot([], [], color="C0", lw=1.2, label="replayed")
            self._lines[name] = (replayed, recorded)
            ax.axvline(0.0, color="#777777", lw=1.0, ls=":")
            ax.set_xlim(-WINDOW_S, 0.0)
            pad = 0.1 * limit if limit > 0 else 0.1
            ax.set_ylim(-limit - pad, limit + pad)
            ax.set_xlabel("time [s] before this frame")
            ax.set_ylabel(f"{name} [{unit}]")
            ax.grid(True, color="#e5e5e5")
            if col == 0:
                ax.legend(loc="upper left", fontsize=8)
        for ax in (self._camera_ax, self._saliency_ax):
            ax.set_xticks([])
            ax.set_yticks([])
        self._title = title
        self._label = self._background = None
        self._moving: list = []

    def add(
        self,
        camera: np.ndarray,
        saliency: np.ndarray,
        t: float,
        replayed: tuple[Sequence[float], Sequence[float], Sequence[float]],
        recorded: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None,
        label: str = "",
    ) -> None:
        """One video frame: `camera` and `saliency` (h, w, 3) images (uint8, or float in [0, 1]),
        and the commands as (times in s, linear.x, angular.z), drawn against time before `t`."""
        if self._camera is None:
            self._start(camera, saliency)
        self._camera.set_data(camera)
        self._saliency.set_data(saliency)
        self._label.set_text(f"camera {label}".strip())
        for k, name in enumerate(("linear.x", "angular.z")):
            replayed_line, recorded_line = self._lines[name]
            replayed_line.set_data(np.asarray(replayed[0], dtype=float) - t, replayed[1 + k])
            if recorded is not None:
                recorded_line.set_data(np.asarray(recorded[0], dtype=float) - t, recorded[1 + k])
        # Only what changes is drawn, over the still parts drawn once (a whole draw costs ten times more).
        canvas = self._fig.canvas
        canvas.restore_region(self._background)
        for artist in self._moving:
            self._fig.draw_artist(artist)
        self._writer.append_data(np.asarray(canvas.buffer_rgba())[..., :3])
        self.frames += 1

    def _start(self, camera: np.ndarray, saliency: np.ndarray) -> None:
        """The still parts (axes, labels, legend) drawn once and kept as the background."""
        self._camera = self._camera_ax.imshow(camera, interpolation="nearest", animated=True)
        self._saliency = self._saliency_ax.imshow(saliency, interpolation="nearest", animated=True)
        h, w = np.shape(saliency)[:2]
        self._saliency_ax.set_title(f"where the encoder looks (VisualBackProp, {w}x{h})", fontsize=9)
        self._label = self._camera_ax.set_title(" ", fontsize=9)
        self._label.set_animated(True)
        if self._title:
            self._fig.suptitle(self._title, fontsize=10)
        self._moving = [
            self._camera,
            self._saliency,
            self._label,
            *(line for pair in self._lines.values() for line in pair),
        ]
        for line in self._moving[3:]:
            line.set_animated(True)
        canvas = self._fig.canvas
        canvas.draw()
        self._fig.set_layout_engine("none")  # laid out once: the positions stay
        self._background = canvas.copy_from_bbox(self._fig.bbox)

    def close(self) -> int:
        """Finish the file; the number of frames written."""
        self._writer.close()
        return self.frames
