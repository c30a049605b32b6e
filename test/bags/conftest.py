"""What the bag tests share over DDS: processes of their own, stopped at the end, and a node that
watches the graph."""

import subprocess

import pytest
from support import stop_process


@pytest.fixture
def processes(tmp_path):
    """start(name, args) runs a process in a session of its own (the signals it gets are the
    test's only, never a Ctrl-C meant for pytest) with its output in tmp_path/name.out; all are
    stopped at the end."""
    started = []

    def start(name, args):
        out = open(tmp_path / f"{name}.out", "w")
        proc = subprocess.Popen(
            [str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        proc.log = tmp_path / f"{name}.out"
        started.append((proc, out))
        return proc

    try:
        yield start
    finally:
        for proc, out in started:
            stop_process(proc)
            out.close()


@pytest.fixture(scope="module")
def graph():
    """A plain rclpy node of the test's own, to watch the graph."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bag_tools_test", context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
