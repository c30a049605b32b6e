"""Progress bars (tqdm) for the long commands: collect, cache building, train, eval and table.

Shown on a terminal (stderr is a TTY), left out of logs and pipes, so a CI log or a `2>file` does not
fill with carriage returns. `LIQUID_CONTROL_PROGRESS=1` shows them anyway, `=0` never.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def enabled() -> bool:
    forced = os.environ.get("LIQUID_CONTROL_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def bar(iterable: Any = None, active: bool = True, **options: Any):
    """A tqdm bar (rate and ETA from tqdm) on stderr, or, when not `active` (another process
    shows it) or not enabled, a silent one with the same methods."""
    from tqdm import tqdm

    options.setdefault("dynamic_ncols", True)
    options.setdefault("mininterval", 0.5)
    return tqdm(iterable, disable=not (active and enabled()), file=sys.stderr, **options)


def write(line: str) -> None:
    """A log line that does not break a bar being drawn (stdout, as print)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
