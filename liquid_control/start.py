"""How every executable of the package starts: the one wrapper script, installed as
lib/liquid_control/NAME and bin/liquid-control, runs `python -m liquid_control.start NAME ARGS...`
and EXECUTABLES maps NAME to the module whose main() runs. Importing a node pulls in torch, numba and rclpy,
seconds on a small board, and a Ctrl-C (or SIGTERM from `ros2 launch`) in that time ends the
process quietly with status 0 instead of a KeyboardInterrupt traceback from deep inside an import
(or from Python's own start-up: the wrapper keeps both signals blocked until the handler is here).
Once the module runs, its own handling takes over (rclpy's, or the bag tools')."""

from __future__ import annotations

import importlib
import os
import signal
import sys

# ROS executables (`ros2 run liquid_control NAME`, launch_ros `Node(executable=NAME)`) and the
# command line. Adding one: a line here and a link resource/executables/NAME -> ../ros_executable.
EXECUTABLES = {
    "liquid-control": "liquid_control.cli",
    "controller_node": "liquid_control.nodes.controller_node",
    "sim_node": "liquid_control.nodes.sim_node",
}


_STOPPED: list[int] = []  # the signal that ended the start, once one has


def _stop_while_starting(signum, frame) -> None:
    _STOPPED.append(signum)
    raise SystemExit(0)


def _leave() -> None:
    """End a start that a stop signal cut short, status 0. Nothing has run yet that needs cleaning
    up, and an import cut short (torch's, numba's, rclpy's: threads started, C++ state half made)
    could hold the interpreter's own shutdown, so it is skipped. (Both places that call this were
    first suspected of a CI hang that turned out to be an inherited ignored SIGINT: see
    resource/ros_executable.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> int:
    if len(sys.argv) < 2:
        print(f"usage: python -m liquid_control.start {{{','.join(EXECUTABLES)}}} [ARGS...]", file=sys.stderr)
        return 2
    name = sys.argv.pop(1)
    if name not in EXECUTABLES:
        print(f"liquid_control.start: no executable {name!r} (there are: {', '.join(EXECUTABLES)})", file=sys.stderr)
        return 2
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop_while_starting) for sig in stops}
    # The wrapper starts Python with both blocked (a signal during Python's own start stays
    # pending): one that came in the meantime is delivered here, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    sys.argv[0] = name  # argparse's usage line and rclpy's logs name the executable
    # Where Python swallows the handler's SystemExit (a weakref callback of importlib's module
    # locks, a __del__), it would print "Exception ignored in ..." with a traceback (seen in CI);
    # the check after the import ends the start quietly instead.
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda u: None if _STOPPED and u.exc_type is SystemExit else unraisable(u)
    try:
        module = importlib.import_module(EXECUTABLES[name])
    except BaseException:
        # The SystemExit above, or what an import made of it: a C extension that was importing
        # reports its failure as an ImportError of its own (numpy's "PyCapsule_Import could not
        # import module datetime"). Either way the start was stopped, quietly.
        if _STOPPED:
            _leave()
        raise
    sys.unraisablehook = unraisable
    for sig, handler in previous.items():  # the module's main() installs what it needs
        signal.signal(sig, handler)
    if _STOPPED:
        # The stop came while importing, and its SystemExit was swallowed on the way: raised where
        # Python only reports an exception and goes on (a __del__, a gc or weakref callback, a C
        # extension's callback) or caught by a bare except. Stop now.
        _leave()
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
