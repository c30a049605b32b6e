"""The memoryless Feedforward core (nets/feedforward/), the ~100k-parameter CNN policy's MLP: its
streaming step is its training path, it has no memory and no time unless given dt, it learns, and
it travels in model files, policies and the ONNX export like the other cores."""

import json
import math

import numpy as np
import pytest
import torch

from liquid_control.model.modelfile import NetworkSpec, OutputSpec, load_model, parameter_counts, save_model
from liquid_control.model.policy import EncoderSpec, LiquidPolicy
from liquid_control.nets.feedforward.module import ACTIVATIONS, Feedforward
from liquid_control.nets.feedforward.stream import FusedFeedforward
from liquid_control.nets.kernels import DT_SCALE

OUTPUTS = OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 1.0), (-1.5, 1.5)))


def _series(seed: int, batch: int, steps: int, inputs: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (2.0 * torch.randn(batch, steps, inputs, generator=g)).to(dtype)
    ts = (0.002 + 0.06 * torch.rand(batch, steps, generator=g)).to(dtype)
    return x, ts


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("time_input", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streaming_step_equals_state_sequence(activation, time_input, dtype):
    torch.manual_seed(4)
    core = Feedforward(5, 7, hidden=(16, 9), activation=activation, time_input=time_input).to(dtype).eval()
    x, ts = _series(1, 2, 30, 5, dtype)
    with torch.no_grad():
        ref = core.state_sequence(x, ts)
    assert ref.shape == (2, 30, 7)
    run = core.fused(refresh=True)
    worst = 0.0
    for b in range(2):
        state = run.initial_state()
        for t in range(30):
            out, state = run.step(x[b, t].double().numpy(), state, float(ts[b, t]))
            worst = max(worst, float(np.abs(out - ref[b, t].double().numpy()).max()))
            assert np.array_equal(state, out)  # the readout reads what the step returns
    assert worst < (1e-12 if dtype == torch.float64 else 1e-6)
    assert state.shape == (7,) and np.isnan(run.tau).all()  # no time constants to report


def test_it_has_no_memory_each_output_is_its_own_steps_inputs_alone():
    torch.manual_seed(0)
    core = Feedforward(4, 6, hidden=(12,)).double().eval()
    x, ts = _series(2, 3, 25, 4)
    perm = torch.randperm(25)
    with torch.no_grad():
        z = core.state_sequence(x, ts)
        shuffled = core.state_sequence(x[:, perm], ts[:, perm])
        alone = core.state_sequence(x[:, 17:18], ts[:, 17:18])
    assert torch.equal(shuffled, z[:, perm])  # reordering the events reorders the outputs, nothing else
    torch.testing.assert_close(alone[:, 0], z[:, 17], rtol=0, atol=1e-14)
    # The streaming step: whatever state it is handed (a long history, or garbage), the same output.
    fresh = core.step(x[0, 0].numpy(), core.initial_state(), 0.01)[0].copy()
    used = np.random.default_rng(0).normal(size=6) * 5.0
    assert np.array_equal(core.step(x[0, 0].numpy(), used, 0.01)[0], fresh)


def test_dt_is_ignored_unless_time_input_then_it_is_dt_over_dt_scale_as_one_more_input():
    torch.manual_seed(1)
    x = np.array([0.4, -1.2, 0.7])
    plain = Feedforward(3, 5, hidden=(8,))
    assert np.array_equal(plain.step(x, plain.initial_state(), 0.005)[0], plain.step(x, plain.initial_state(), 0.5)[0])
    timed = Feedforward(3, 5, hidden=(8,), time_input=True).double()
    assert timed.layers[0].in_features == 4
    a = timed.step(x, timed.initial_state(), 0.005)[0].copy()
    b = timed.step(x, timed.initial_state(), 0.033)[0].copy()
    assert np.abs(a - b).max() > 1e-4
    # The same weights without the time input, fed dt / DT_SCALE as a fourth input: the same map.
    same = Feedforward(4, 5, hidden=(8,)).double()
    same.load_state_dict(timed.state_dict())
    np.testing.assert_allclose(
        same.step(np.append(x, 0.033 / DT_SCALE), same.initial_state(), 1.0)[0], b, rtol=0, atol=1e-15
    )


def test_the_streaming_kernel_follows_weight_changes_and_travels_as_arrays():
    torch.manual_seed(2)
    core = Feedforward(3, 4, hidden=(6, 5), activation="silu", time_input=True)
    x = np.array([0.3, -1.0, 2.0])
    before = core.step(x, core.initial_state(), 0.02)[0].copy()
    with torch.no_grad():
        core.layers[1].weight.add_(0.5)  # in place, as an optimizer step does
    after = core.step(x, core.initial_state(), 0.02)[0].copy()
    with torch.no_grad():
        ref = core.double().state_sequence(torch.tensor(x)[None, None], torch.full((1, 1), 0.02, dtype=torch.float64))
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, ref[0, 0].numpy(), atol=1e-12)
    copy = FusedFeedforward._from_arrays(json.loads(json.dumps(core.fused().to_arrays())))
    assert np.array_equal(copy.step(x, copy.initial_state(), 0.02)[0], after)


def test_it_learns_a_static_map_of_its_inputs():
    torch.manual_seed(0)
    core = Feedforward(2, 16, hidden=(32,))
    head = torch.nn.Linear(16, 1)
    g = torch.Generator().manual_seed(5)
    x = 2.0 * torch.rand(64, 8, 2, generator=g) - 1.0
    ts = torch.full((64, 8), 0.01)
    y = torch.sin(3.0 * x[..., :1]) * x[..., 1:]  # nonlinear: no linear map comes close
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(400):
        opt.zero_grad()
        loss = (head(core.state_sequence(x, ts)) - y).pow(2).mean()
        loss.backward()
        opt.step()
    linear = torch.linalg.lstsq(torch.cat([x, torch.ones_like(x[..., :1])], -1).reshape(-1, 3), y.reshape(-1, 1))
    linear_mse = (
        (torch.cat([x, torch.ones_like(x[..., :1])], -1).reshape(-1, 3) @ linear.solution - y.reshape(-1, 1))
        .pow(2)
        .mean()
    )
    assert float(loss) < 0.1 * float(linear_mse)


def _policy(time_input=False):
    torch.manual_seed(3)
    spec = EncoderSpec(image_width=32, image_height=24, channels=(4, 8), camera_features=6)
    core = Feedforward(spec.core_inputs, 7, hidden=(10, 8), activation="tanh", time_input=time_input)
    return LiquidPolicy(spec, core, outputs=2, imu_mean=(0.0, 0.1, 9.8), imu_std=(0.5, 1.0, 1.0)).eval()


def _events(seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (1, 4, 24, 32, 3), dtype=np.uint8)  # model frames, as training caches them
    frame_index = np.repeat(np.arange(4), 5)[None]
    imu = rng.normal(size=(1, 20, 3)) + np.array([0.0, 0.1, 9.8])
    dt = rng.uniform(0.003, 0.04, size=(1, 20))
    return frames, frame_index, imu, dt


@pytest.mark.parametrize("time_input", [False, True])
def test_a_feedforward_policy_round_trips_and_streams_like_its_forward(time_input, tmp_path):
    policy = _policy(time_input)
    path = tmp_path / "mlp.safetensors"
    save_model(path, policy, policy.sensor_spec(), OUTPUTS)
    loaded, config = load_model(path)
    assert config.network == NetworkSpec(
        "mlp", 9, units=7, options={"hidden": [10, 8], "activation": "tanh", "time_input": time_input}
    )
    assert isinstance(loaded.core, Feedforward) and NetworkSpec.of(loaded.core) == config.network
    counts = parameter_counts(loaded)
    assert (
        counts["liquid_core"] == counts["liquid_core_effective"] == (9 + time_input) * 10 + 10 + 10 * 8 + 8 + 8 * 7 + 7
    )
    assert counts["trainable"] == counts["camera_encoder"] + counts["liquid_core"] + counts["readout"]
    frames, frame_index, imu, dt = _events()
    args = (
        torch.tensor(frames),
        torch.tensor(frame_index),
        torch.tensor(imu, dtype=torch.float32),
        torch.tensor(dt, dtype=torch.float32),
    )
    with torch.no_grad():
        ref = policy(*args)[0].numpy()
        assert np.array_equal(loaded(*args)[0].numpy(), ref)
        features = loaded.camera(args[0][0]).double().numpy()
    # The running form's core and readout on the camera features the torch encoder gives (how a
    # frame reaches the encoder is the runtime's business, tested with the CfC policies).
    run = loaded.streamer()
    state = run.initial_state()
    assert state.shape == (7,)
    out = [
        run.step(features[frame_index[0, t]], run.normalize_imu(imu[0, t]), state, float(dt[0, t])).copy()
        for t in range(20)
    ]
    np.testing.assert_allclose(np.array(out), ref, rtol=0, atol=1e-5)
    run.check()


def _exported(tmp_path, time_input):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from liquid_control.model.export import export_onnx

    policy = _policy(time_input)
    model = tmp_path / "mlp.safetensors"
    save_model(model, policy, policy.sensor_spec(), OUTPUTS)
    export_onnx(model, tmp_path / "mlp.onnx")
    return model, ort.InferenceSession(str(tmp_path / "mlp.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("time_input", [False, True])
def test_the_exported_onnx_graph_steps_like_the_running_policy(time_input, tmp_path):
    model, session = _exported(tmp_path, time_input)
    names = {i.name for i in session.get_inputs()}
    assert names == {"frame", "imu", "dt", "state"}  # all four, read or not (test below)
    loaded, _ = load_model(model)
    run = loaded.streamer()
    frames, frame_index, imu, dt = _events(1)
    state = run.initial_state()
    for t in range(20):
        feed = {
            "frame": frames[0, frame_index[0, t]][None],
            "imu": imu[0, t],
            "dt": np.array([dt[0, t]]),
            "state": np.full(state.size, np.nan),
        }  # a state, were the graph to read it, that would show
        command, new_state, features = session.run(None, feed)
        expected = run.step(features, run.normalize_imu(imu[0, t]), state, float(dt[0, t]))
        np.testing.assert_allclose(command, expected, rtol=0, atol=1e-9)
        np.testing.assert_allclose(new_state, state, rtol=0, atol=1e-9)


def test_the_exported_graph_has_the_documented_inputs(tmp_path):
    """torch's exporter drops inputs the step does not read (this core's state; dt without
    time_input); the export puts them back, so every graph takes the same four inputs."""
    _, session = _exported(tmp_path, time_input=False)
    assert [i.name for i in session.get_inputs()] == ["frame", "imu", "dt", "state"]


def test_the_cnn_baseline_is_about_100k_parameters_against_the_ncps_22k():
    """The comparison of the NCP lane-keeping result: a wide camera encoder and this MLP, ~100k
    parameters in all, against the NCP policy's encoder and 19 neurons."""
    from liquid_control.nets import AutoNCP, CfC

    spec = EncoderSpec(channels=(24, 36, 48), camera_features=24)
    cnn = LiquidPolicy(spec, Feedforward(spec.core_inputs, 64, hidden=(128, 64)), outputs=2)
    ncp = LiquidPolicy(EncoderSpec(), CfC(EncoderSpec().core_inputs, AutoNCP(19, 2, seed=0)), outputs=2)
    counts, ncp_counts = parameter_counts(cnn), parameter_counts(ncp)
    assert counts == {
        "trainable": 96_734,
        "effective": 96_734,
        "camera_encoder": 80_604,
        "liquid_core": 16_000,
        "liquid_core_effective": 16_000,
        "readout": 130,
    }
    assert 95_000 <= counts["trainable"] <= 110_000
    assert 4 <= counts["trainable"] / ncp_counts["trainable"] <= 5  # ~21.7k: encoder 20k, core 1.7k


def test_bad_configurations_and_inputs_are_refused():
    core = Feedforward(3, 4)
    with pytest.raises(ValueError, match="dt"):
        core.step(np.zeros(3), core.initial_state(), math.nan)
    with pytest.raises(ValueError, match="dt"):
        core.step(np.zeros(3), core.initial_state(), 0.0)
    with pytest.raises(ValueError, match="shape"):
        core.step(np.zeros(2), core.initial_state(), 0.01)
    with pytest.raises(ValueError, match="state"):
        core.step(np.zeros(3), np.zeros(5), 0.01)
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        core.state_sequence(torch.zeros(1, 4, 2), torch.ones(1, 4))
    with pytest.raises(ValueError, match="timespans"):
        core.state_sequence(torch.zeros(1, 4, 3), torch.ones(1, 5))
    with pytest.raises(ValueError, match="no state"):
        core(torch.zeros(1, 4, 3), hx=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="activation"):
        Feedforward(3, 4, activation="gelu")
    with pytest.raises(ValueError, match="positive"):
        Feedforward(3, 4, hidden=(8, 0))
    with pytest.raises(ValueError, match="fully connected"):
        NetworkSpec("mlp", 5, wiring={"class": "FullyConnected", "units": 4})
    with pytest.raises(ValueError, match="unknown mlp options"):
        NetworkSpec("mlp", 5, units=4, options={"channels": 3})
    spec = NetworkSpec("mlp", 5, units=4, options={"hidden": [6], "activation": "relu", "time_input": False})
    built = spec.build()
    assert NetworkSpec.of(built) == spec and [layer.out_features for layer in built.layers] == [6, 4]
