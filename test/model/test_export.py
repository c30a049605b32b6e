"""`liquid-control export` and the ONNX Runtime backend: the exported graph reproduces the torch
runtime's commands over a recorded bag, and the backend (and the node on it) runs without torch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.ros, pytest.mark.sim]
pytest.importorskip("mujoco")

from liquid_control.bags.io import read_events  # noqa: E402
from liquid_control.learning.collect import collect  # noqa: E402
from liquid_control.model.modelfile import load_policy  # noqa: E402
from liquid_control.model.specs import ModelFileError  # noqa: E402
from liquid_control.paths import DEFAULT_MODEL  # noqa: E402
from liquid_control.runtime.controller import LiquidController  # noqa: E402
from liquid_control.runtime.onnx_policy import load_onnx_policy  # noqa: E402
from liquid_control.sim.track import Track, track_path  # noqa: E402

CLI = [sys.executable, "-m", "liquid_control.cli"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "shipped.onnx"
    result = subprocess.run(
        [*CLI, "export", DEFAULT_MODEL, "--onnx", str(path), "--json"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return path, json.loads(result.stdout)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / "drive"
    collect([Track.load(track_path("kidney"))], path, episodes=1, seconds=8.0, seed=5)
    return path


def test_the_graph_has_the_documented_inputs_outputs_and_the_models_config(exported):
    path, summary = exported
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.input}
    assert shapes == {"frame": [1, 48, 64, 3], "imu": [3], "dt": [1], "state": [19]}
    types = {v.name: v.type.tensor_type.elem_type for v in graph.graph.input}
    assert types == {
        "frame": onnx.TensorProto.UINT8,
        "imu": onnx.TensorProto.DOUBLE,
        "dt": onnx.TensorProto.DOUBLE,
        "state": onnx.TensorProto.DOUBLE,
    }
    assert [v.name for v in graph.graph.output] == ["command", "new_state", "camera_features"]
    _, config = load_policy(DEFAULT_MODEL)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["liquid_control"]) == json.loads(config.to_json())
    assert summary["inputs"]["state"] == [19]


def test_onnx_runtime_reproduces_the_controllers_commands_over_a_recorded_bag(exported, bag):
    path, _ = exported
    torch_controller = LiquidController(*load_policy(DEFAULT_MODEL))
    onnx_controller = LiquidController(*load_onnx_policy(path))
    diffs, reasons, compared = [], 0, 0
    for event in read_events(bag, command=None):
        a = torch_controller.on_sensor(event.kind, event.stamp, event.data)
        b = onnx_controller.on_sensor(event.kind, event.stamp, event.data)
        assert (a is None) == (b is None)
        if a is None:
            continue
        compared += 1
        reasons += a.reason == b.reason
        diffs.append(max(abs(a.linear_x - b.linear_x), abs(a.angular_z - b.angular_z)))
    assert compared > 8.0 * 200 and reasons == compared
    assert max(diffs) <= 1e-5, max(diffs)
    assert np.abs(torch_controller.state - onnx_controller.state).max() <= 1e-5


def test_the_backend_encodes_with_the_encoder_graph_that_is_the_graphs_own(exported, tmp_path):
    """The metadata's encoder-only graph (ONNX Runtime runs every output of a graph, the core's
    too) gives the whole graph's camera_features; a file without it is encoded by the whole graph."""
    from liquid_control.runtime.onnx_policy import ENCODER_KEY

    path, _ = exported
    policy, _ = load_onnx_policy(path)
    assert policy.encoder is not None
    graph = onnx.load(str(path))
    keep = [p for p in graph.metadata_props if p.key != ENCODER_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    whole_only = tmp_path / "no_encoder_graph.onnx"
    onnx.save(graph, str(whole_only))
    fallback, _ = load_onnx_policy(whole_only)
    assert fallback.encoder is None
    fast, slow = policy.streamer(), fallback.streamer()
    rng = np.random.default_rng(3)
    for _ in range(10):
        frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        np.testing.assert_allclose(fast.encode_frame(frame), slow.encode_frame(frame), rtol=0, atol=1e-6)


def test_export_never_overwrites_and_bad_files_are_model_file_errors(exported, tmp_path):
    path, _ = exported
    result = subprocess.run(
        [*CLI, "export", DEFAULT_MODEL, "--onnx", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "never written over" in result.stderr
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"\x00" * 40)
    with pytest.raises(ModelFileError, match="x.onnx"):
        load_onnx_policy(not_onnx)
    plain = tmp_path / "plain.onnx"
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    onnx.save(graph, str(plain))
    with pytest.raises(ModelFileError, match="not written by liquid-control export"):
        load_onnx_policy(plain)
    with pytest.raises(ModelFileError, match="the path is empty"):
        load_onnx_policy("")
    # A graph from before frames were uint8 (float32 in [0, 1]): said so, rather than an ONNX
    # Runtime type error at the first frame (the graph stays valid: its Cast to float becomes a no-op).
    old = onnx.load(str(path))
    old.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    old_path = tmp_path / "float_frames.onnx"
    onnx.save(old, str(old_path))
    with pytest.raises(ModelFileError, match="export the model again"):
        load_onnx_policy(old_path)
    # The core's kernel arrays: missing (an LSTM or GRU exported before they had a torch-free
    # kernel) or of a kind this version does not know.
    for value, message in (
        (None, "streaming kernel is not in the file"),
        (json.dumps({"kind": "transformer"}), "its transformer core has no torch-free"),
    ):
        graph = onnx.load(str(path))
        props = [(p.key, p.value) for p in graph.metadata_props]
        del graph.metadata_props[:]
        for key, text in props:
            if key == "liquid_control.core":
                if value is None:
                    continue
                text = value
            graph.metadata_props.add(key=key, value=text)
        bad = tmp_path / "core.onnx"
        onnx.save(graph, str(bad))
        with pytest.raises(ModelFileError, match=message):
            load_onnx_policy(bad)


def _no_torch_env(tmp_path: Path) -> dict:
    """An environment in which `import torch` fails, as on a board with the edge install."""
    blocker = tmp_path / "no_torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here (test blocker)')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _replay_without_torch(model: Path, bag: Path, tmp_path: Path, also_import: str = "") -> tuple[int, bool]:
    """In a process where `import torch` fails: the commands the onnx backend gives over the bag, and
    whether torch got into sys.modules all the same."""
    script = textwrap.dedent(f"""
        import sys
        from liquid_control.bags.io import read_events
        from liquid_control.runtime.controller import LiquidController
        from liquid_control.runtime.onnx_policy import load_onnx_policy
        {also_import}
        c = LiquidController(*load_onnx_policy({str(model)!r}))
        n = sum(c.on_sensor(e.kind, e.stamp, e.data) is not None for e in read_events({str(bag)!r}, command=None))
        print(n, "torch" in sys.modules)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_no_torch_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    commands, torch_loaded = result.stdout.split()
    return int(commands), torch_loaded == "True"


def test_the_onnx_backend_runs_without_torch(exported, bag, tmp_path):
    path, _ = exported
    commands, torch_loaded = _replay_without_torch(path, bag, tmp_path, "import liquid_control.nodes.controller_node")
    assert commands > 8.0 * 200 and not torch_loaded


def test_controller_node_on_the_onnx_backend_drives_without_torch(exported, tmp_path):
    pytest.importorskip("rclpy")
    from support import EXECUTABLE, streaming_peer, wait_for

    from liquid_control.processes import stop

    if not EXECUTABLE.exists():
        pytest.skip(f"{EXECUTABLE} not installed")
    path, _ = exported
    ns = f"/lc_onnx_{os.getpid()}"
    proc = subprocess.Popen(
        [str(EXECUTABLE), "--ros-args", "-r", f"__ns:={ns}", "-p", "backend:=onnx", "-p", f"model_path:={path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_no_torch_env(tmp_path),
        start_new_session=True,
    )
    try:
        commands, stop_peer = streaming_peer(ns)
        try:
            wait_for(lambda: sum(1 for m in commands if m.linear.x > 0) > 20, timeout=90)
        finally:
            stop_peer()
    finally:
        codes = stop(proc)
    out = proc.stdout.read()
    assert codes == [0], out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("arch", ["cnn-mlp", "liquid-s4", "lstm-small", "gru"])
def test_the_onnx_backend_streams_the_benchmarks_other_cores_without_torch(arch, bag, tmp_path):
    """The feedforward, Liquid-S4, LSTM and GRU cores have torch-free kernels too: exported, their
    commands over the bag equal the torch runtime's, and the backend runs them with torch blocked."""
    from liquid_control.learning.train import ARCHITECTURES, ENCODERS, OUTPUTS
    from liquid_control.model.export import export_onnx
    from liquid_control.model.modelfile import save_model
    from liquid_control.model.policy import LiquidPolicy
    from liquid_control.model.specs import EncoderSpec

    spec = ENCODERS.get(arch) or EncoderSpec()
    policy = LiquidPolicy(spec, ARCHITECTURES[arch](spec.core_inputs, 0), 2).eval()
    model = tmp_path / f"{arch}.safetensors"
    save_model(model, policy, policy.sensor_spec(), OUTPUTS, {"trainer": "test"})
    out = tmp_path / f"{arch}.onnx"
    export_onnx(model, out)
    torch_controller = LiquidController(*load_policy(model))
    onnx_controller = LiquidController(*load_onnx_policy(out))
    diffs, turns = [], []
    for event in read_events(bag, command=None):
        a = torch_controller.on_sensor(event.kind, event.stamp, event.data)
        b = onnx_controller.on_sensor(event.kind, event.stamp, event.data)
        assert (a is None) == (b is None)
        if a is not None:
            diffs.append(max(abs(a.linear_x - b.linear_x), abs(a.angular_z - b.angular_z)))
            turns.append(a.angular_z)
    assert len(diffs) > 8.0 * 200 and max(diffs) <= 1e-5, max(diffs)
    assert np.ptp(turns) > 1e-3  # the commands move with the input: a constant would pass the equality
    commands, torch_loaded = _replay_without_torch(out, bag, tmp_path)
    assert commands == len(diffs) and not torch_loaded


@pytest.mark.parametrize("fields", [{"imu_fields": ()}, {"odom_fields": ("twist.linear.x", "twist.angular.z")}])
def test_camera_only_and_odometry_models_export_and_the_onnx_backend_follows_their_inputs(fields, tmp_path):
    """The graph's `imu` input holds the model's IMU fields then its odometry fields (none for a
    camera-only model), and the ONNX backend's controller reads the sensors the model declares,
    to the torch runtime's commands."""
    import torch

    from liquid_control import nets
    from liquid_control.model.modelfile import save_model
    from liquid_control.model.policy import EncoderSpec, LiquidPolicy
    from liquid_control.model.specs import OutputSpec

    spec = EncoderSpec(image_width=16, image_height=12, channels=(4,), camera_features=4, **fields)
    torch.manual_seed(1)
    policy = LiquidPolicy(spec, nets.CfC(spec.core_inputs, nets.AutoNCP(10, 2, seed=1)), 2).eval()
    outputs = OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 0.5), (-1.5, 1.5)))
    save_model(tmp_path / "m.safetensors", policy, policy.sensor_spec(), outputs)
    onnx_path = tmp_path / "m.onnx"
    result = subprocess.run(
        [*CLI, "export", tmp_path / "m.safetensors", "--onnx", onnx_path, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inputs"]["imu"] == [len(spec.held_fields)]
    a = LiquidController(*load_policy(tmp_path / "m.safetensors"), settings=None)
    b = LiquidController(*load_onnx_policy(onnx_path))
    assert a.sensors == b.sensors == spec.sensors
    rng = np.random.default_rng(2)
    compared = 0
    for k in range(200):
        t = 0.01 * k
        kind = "camera" if k % 5 == 0 else ("imu", "odom")[k % 2]
        data = (
            rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            if kind == "camera"
            else rng.normal(0, 1, 9 if kind == "imu" else 3)
        )
        x, y = a.on_sensor(kind, t, data), b.on_sensor(kind, t, data)
        assert (x is None) == (y is None) and (x is None) == (kind not in spec.sensors)
        if x is not None and x.reason == "policy":
            compared += 1
            assert abs(x.linear_x - y.linear_x) <= 1e-5 and abs(x.angular_z - y.angular_z) <= 1e-5
    assert compared > (35 if fields.get("imu_fields") == () else 120)
