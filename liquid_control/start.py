"""How every executable of the package starts (the wrappers in lib/liquid_control/ run
`python -m liquid_control.start MODULE ARGS...`): importing a node pulls in torch, numba and rclpy,
seconds on a small board, and a Ctrl-C (or SIGTERM from `ros2 launch`) in that time ends the
process quietly with status 0 instead of a KeyboardInterrupt traceback from deep inside an import
(or from Python's own start-up: the wrapper keeps both signals blocked until the handler is here).
Once the module runs, its own handling takes over (rclpy's, or the bag tools')."""

from __future__ import annotations

import importlib
import signal
import sys


def _stop_while_starting(signum, frame) -> None:
    raise SystemExit(0)


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m liquid_control.start MODULE [ARGS...]", file=sys.stderr)
        return 2
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop_while_starting) for sig in stops}
    # The wrapper starts Python with both blocked (a signal during Python's own start stays
    # pending): one that came in the meantime is delivered here, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    module = importlib.import_module(sys.argv.pop(1))
    for sig, handler in previous.items():  # the module's main() installs what it needs
        signal.signal(sig, handler)
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
