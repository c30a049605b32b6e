"""Small line plots as PNG without a plotting library (loss curves, trajectories): lines drawn on a
white canvas with a frame; values are scaled to the data's range, log scale optional."""

from __future__ import annotations

import numpy as np

from .png import png_bytes

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0), 1)) * 2
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    h, w, _ = img.shape
    for dx in (0, 1):
        ok = (xs + dx >= 0) & (xs + dx < w) & (ys >= 0) & (ys < h)
        img[ys[ok], xs[ok] + dx] = colour


def line_plot_png(x, series: dict[str, list[float]], title: str = "", log_y: bool = True,
                  width: int = 640, height: int = 400, equal_aspect: bool = False) -> bytes:
    """PNG bytes of one or more series over x (legend order = colour order; see COLOURS)."""
    img = np.full((height, width, 3), 255, np.uint8)
    margin = 40
    xs = np.asarray(x, dtype=float)
    ys = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    if log_y:
        ys = {k: np.log10(np.maximum(v, 1e-9)) for k, v in ys.items()}
    all_y = np.concatenate(list(ys.values()))
    lo, hi = float(np.nanmin(all_y)), float(np.nanmax(all_y))
    xlo, xhi = float(xs.min()), float(xs.max())
    if hi - lo < 1e-12:
        hi = lo + 1.0
    if xhi - xlo < 1e-12:
        xhi = xlo + 1.0
    sx = (width - 2 * margin) / (xhi - xlo)
    sy = (height - 2 * margin) / (hi - lo)
    if equal_aspect:
        sx = sy = min(sx, sy)
    to_px = lambda a, b: (margin + (a - xlo) * sx, height - margin - (b - lo) * sy)  # noqa: E731
    grey = (160, 160, 160)
    for a, b, c, d in ((0, 0, 1, 0), (0, 0, 0, 1), (1, 0, 1, 1), (0, 1, 1, 1)):
        _line(img, margin + a * (width - 2 * margin), height - margin - b * (height - 2 * margin),
              margin + c * (width - 2 * margin), height - margin - d * (height - 2 * margin), grey)
    for k, v in enumerate(ys.values()):
        colour = COLOURS[k % len(COLOURS)]
        px = [to_px(a, b) for a, b in zip(xs, v, strict=True) if np.isfinite(b)]
        for (a0, b0), (a1, b1) in zip(px, px[1:], strict=False):
            _line(img, a0, b0, a1, b1, colour)
        img[8 + 12 * k: 16 + 12 * k, width - 60: width - 44] = colour  # legend swatch, in series order
    return png_bytes(img)


def xy_plot_png(lines: dict[str, tuple], size: int = 600) -> bytes:
    """Top-down paths with equal axes: the first line grey (e.g. a centreline), the rest in COLOURS."""
    margin = 30
    img = np.full((size, size, 3), 255, np.uint8)
    allx = np.concatenate([np.asarray(x, dtype=float) for x, _ in lines.values()])
    ally = np.concatenate([np.asarray(y, dtype=float) for _, y in lines.values()])
    span = max(allx.max() - allx.min(), ally.max() - ally.min(), 1e-6)
    scale = (size - 2 * margin) / span
    for k, (x, y) in enumerate(lines.values()):
        colour = (120, 120, 120) if k == 0 else COLOURS[(k - 1) % len(COLOURS)]
        px = margin + (np.asarray(x) - allx.min()) * scale
        py = size - margin - (np.asarray(y) - ally.min()) * scale
        for i in range(len(px) - 1):
            _line(img, px[i], py[i], px[i + 1], py[i + 1], colour)
    return png_bytes(img)
