"""The LSTM and GRU baselines: their streaming step is their training path, they use the elapsed
time they are given, and they travel in model files and policies like the liquid cores."""

import numpy as np
import pytest
import torch

from liquid_control.model.modelfile import NetworkSpec, OutputSpec, load_model, save_model
from liquid_control.model.policy import EncoderSpec, LiquidPolicy
from liquid_control.nets.recurrent.module import Recurrent


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_streaming_step_equals_the_torch_cell_sequence(cell):
    torch.manual_seed(3)
    core = Recurrent(5, 16, cell=cell)
    x = torch.randn(2, 40, 5)
    ts = torch.rand(2, 40) * 0.03 + 0.001
    with torch.no_grad():
        reference = core.state_sequence(x, ts)
    for b in range(2):
        state = core.initial_state()
        for t in range(40):
            out, state = core.step(x[b, t].double().numpy(), state, float(ts[b, t]))
            assert np.abs(out - reference[b, t].numpy()).max() < 1e-5
    assert len(state) == (32 if cell == "lstm" else 16)  # an LSTM carries c after h
    assert np.isnan(core.fused().tau).all()  # no time constants to report


def test_the_elapsed_time_is_an_input_unless_turned_off():
    torch.manual_seed(0)
    x = np.ones(5)
    for time_input, differs in ((True, True), (False, False)):
        core = Recurrent(5, 8, cell="gru", time_input=time_input)
        a = core.step(x, core.initial_state(), 0.005)[0].copy()
        b = core.step(x, core.initial_state(), 0.033)[0].copy()
        assert (np.abs(a - b).max() > 1e-4) == differs


def test_bad_step_input_is_refused():
    core = Recurrent(5, 8)
    with pytest.raises(ValueError, match="dt"):
        core.step(np.zeros(5), core.initial_state(), float("nan"))
    with pytest.raises(ValueError, match="shape"):
        core.step(np.zeros(4), core.initial_state(), 0.01)
    with pytest.raises(ValueError, match="cell"):
        Recurrent(5, 8, cell="rnn")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_baseline_policy_round_trips_through_a_model_file(cell, tmp_path):
    torch.manual_seed(1)
    spec = EncoderSpec()
    policy = LiquidPolicy(spec, Recurrent(spec.core_inputs, 24, cell=cell), outputs=2).eval()
    path = tmp_path / f"{cell}.safetensors"
    save_model(
        path,
        policy,
        policy.sensor_spec(),
        OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 1.0), (-1.5, 1.5))),
    )
    loaded, config = load_model(path)
    assert config.network == NetworkSpec(cell, spec.core_inputs, units=24, options={"time_input": True})
    frames = torch.rand(1, 2, 48, 64, 3)
    index = torch.tensor([[0, 0, 1, 1, 1]])
    imu, dt = torch.randn(1, 5, 3), torch.full((1, 5), 0.005)
    with torch.no_grad():
        assert torch.equal(policy(frames, index, imu, dt), loaded(frames, index, imu, dt))


def test_a_baseline_cannot_take_a_wiring():
    with pytest.raises(ValueError, match="fully connected"):
        NetworkSpec("lstm", 5, wiring={"class": "FullyConnected", "units": 4})
    with pytest.raises(ValueError, match="unknown lstm options"):
        NetworkSpec("lstm", 5, units=4, options={"mode": "pure"})
