"""processes.stop: SIGINT first, a kill only for what does not end in time."""

import subprocess
import sys
import time

from liquid_control.processes import stop

# It puts Python's handler in place itself: a process started from a background job of a
# non-interactive shell inherits SIGINT ignored, and Python then keeps it ignored.
HANDLES_SIGINT = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\ntry:\n"
    "    print('ready', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    raise SystemExit(0)\n"
)
IGNORES_SIGINT = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n"
)


def _start(code):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_process_that_handles_sigint_ends_cleanly_and_one_that_ignores_it_is_killed():
    clean = _start(HANDLES_SIGINT)
    stubborn = _start(IGNORES_SIGINT)
    for proc in (clean, stubborn):
        assert proc.stdout.readline().strip() == "ready"  # inside its try, or its handler in place
    start = time.monotonic()
    codes = stop(clean, stubborn, timeout=2.0)
    assert codes == [0, -9]
    assert time.monotonic() - start < 5.0  # one shared timeout, not one per process


def test_a_process_that_already_ended_keeps_its_exit_code():
    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait()
    assert stop(done) == [3]
