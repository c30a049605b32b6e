"""How every executable of the package runs its node: `--help` without ROS arguments, rclpy up,
spin until Ctrl-C or an external shutdown, and a cleanup that a second SIGINT cannot interrupt and
that cannot hang: from the first SIGINT or SIGTERM on, the process has SHUTDOWN_DEADLINE_S to end;
past it, Python's faulthandler (a C thread that needs no lock and no GIL) prints every thread's
stack to stderr and exits with status 1. `ros2 launch` sends SIGTERM 5 s after SIGINT and SIGKILL
10 s later, with nothing said: once, a controller node was seen to sit through both."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
import rclpy.signals
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, NameValidationException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

# What a user gets wrong on the command line (`-p max_linear_speed:=-1.0`, `-p rate:=fast`, a bad
# `-r __ns:=`): rclpy checks them while the node declares its parameters or is made.
START_ERRORS = (InvalidParameterValueException, InvalidParameterTypeException, NameValidationException)

# Under ros2 launch's 5 s sigterm_timeout, with room for a normal shutdown (about 1 s here).
SHUTDOWN_DEADLINE_S = 4.0
# How often the spin looks at the context between callbacks (see _spin).
SPIN_RECHECK_S = 0.25
_deadline_armed = False
_building = False  # the node is being made (seconds on a loaded machine: torch, a track's fields)


def _arm_shutdown_deadline() -> None:
    global _deadline_armed
    if not _deadline_armed:
        _deadline_armed = True
        faulthandler.dump_traceback_later(SHUTDOWN_DEADLINE_S, exit=True)


def _on_stop_signal(signum, frame) -> None:
    # rclpy's handler (installed by init, chaining to this one) shuts the context down and spin
    # ends; this one only starts the deadline, and raises while the node is being made or where
    # rclpy installed no handler. No
    # rclpy call that takes a lock here: the interrupted frame may hold it (Context.ok does).
    _arm_shutdown_deadline()
    # While the node is being made nothing spins to notice the shutdown: end the making at once
    # (else the deadline would end a slow start with a stack dump and status 1).
    if _building or rclpy.signals.get_current_signal_handlers_options() == rclpy.signals.SignalHandlerOptions.NO:
        raise KeyboardInterrupt


def _spin(node: Node) -> None:
    """rclpy.spin, with a timeout on each wait. On SIGINT rclpy's deferred handler wakes the
    executors (its guard conditions) *before* it shuts the contexts down: an executor that wakes in
    between finds the context still ok and waits again, without a timeout, for ever. Seen in CI on a
    loaded machine: sim_node still in rcl_wait 4 s after SIGINT, its sensor thread already gone
    (it had seen the shutdown), ended by the deadline's stack dump with status 1. The timeout makes
    the spin see the shutdown within SPIN_RECHECK_S however it came."""
    executor = rclpy.get_global_executor()
    try:
        executor.add_node(node)
        while executor.context.ok():
            executor.spin_once(timeout_sec=SPIN_RECHECK_S)
    finally:
        executor.remove_node(node)


def _end(exit_process: bool) -> None:
    """The node is down (its last zero sent, its entities destroyed, rclpy shut down). An executable
    (`exit_process`) ends here, its output flushed, status 0, without the interpreter's
    finalization: tearing down torch, numba and rclpy took 0.6 s of a 0.64 s exit after Ctrl-C
    with the machine half busy (0.03 s without it), seconds on a loaded one, where `ros2 launch`'s
    5 s SIGTERM and the 4 s deadline's stack dump then came first. Nothing is left for it to do: no
    file is open for writing, rclpy's log goes straight to stderr. In a Python that goes on after
    run_node (a test, a script), the process ends here only when a worker thread is still busy: a
    model being built in the loader thread, in torch code that cannot be interrupted, would hold the
    interpreter's exit in C for as long as the build takes (a Ctrl-C during a 10 s load ended with
    the deadline's stack dump and status 1, or with death by SIGINT)."""
    if exit_process or any(t.is_alive() for t in threading.enumerate() if t is not threading.current_thread()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        faulthandler.cancel_dump_traceback_later()
        os._exit(0)


def run_node(
    prog: str,
    description: str,
    make_node: Callable[..., Node],
    args: list[str] | None = None,
    errors: tuple[type[Exception], ...] = (),
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    exit_process: bool = False,
) -> None:
    """Spin the node `make_node` builds; an exception of `errors` or START_ERRORS from building or
    spinning it is a user error: printed as `prog: error: ...`, exit status 2. With `options` (a
    function that adds arguments to the parser), make_node gets the parsed arguments. With
    `exit_process` (an executable's main), the process ends once the node is down."""
    argv = sys.argv if args is None else args
    try:
        plain = remove_ros_args(argv)[1:]
    except rclpy_implementation.RCLInvalidROSArgsError as exc:  # `--ros-args -r __ns:=bad`: rcl's parse error
        print(f"{prog}: error: {str(exc).split(', at /')[0]}", file=sys.stderr)
        sys.exit(2)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if options is not None:
        options(parser)
    parsed = parser.parse_args(plain)
    # Ctrl-C must not raise KeyboardInterrupt at whatever bytecode the main thread is on: in the
    # middle of rclpy's Task.__init__ it left a half-built Task whose __del__ printed a traceback
    # at exit (seen in test_node_process). rclpy's own handler, installed by init and chaining to
    # this one, shuts the context down and spin ends with ExternalShutdownException; this one
    # raises only where rclpy installed no handler.
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)
    rclpy.init(args=argv)
    node = None
    try:
        global _building
        _building = True
        try:
            node = make_node(parsed) if options is not None else make_node()
        finally:
            _building = False
        _spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if not rclpy.ok():
            # A Ctrl-C while the node was being built: rclpy's handler shut the context down under
            # it, and what failed next (an RCLError "context is invalid") is that, not a fault.
            pass
        elif isinstance(exc, (*errors, *START_ERRORS)):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        else:
            raise
    finally:
        # Under `ros2 launch`, Ctrl-C sends SIGINT twice (terminal and launch): the second must
        # not interrupt the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _arm_shutdown_deadline()  # also when spin ended without a signal (an external shutdown)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    _end(exit_process)
