"""The fused streaming step against the torch training path it is built from, and the streaming
interface every core shares (the liquid ones and the LSTM/GRU baselines)."""

import numpy as np
import pytest
import torch

from liquid_control import nets
from liquid_control.nets.recurrent.module import Recurrent

TOL = 1e-5

# One of each core kind, all with 3 inputs and a state of 8 (the LSTM's is h and c), so that the
# shared input check must give each of them the very same message.
CORES = {
    "cfc": lambda: nets.CfC(3, 8),
    "ltc": lambda: nets.LTC(3, 8),
    "lstm": lambda: Recurrent(3, 4, cell="lstm"),
    "gru": lambda: Recurrent(3, 8, cell="gru"),
}

CASES = [
    ("cfc", lambda: nets.CfC(6, nets.AutoNCP(19, 2, seed=3))),
    ("cfc", lambda: nets.CfC(6, nets.AutoNCP(19, 2, seed=3), mode="pure")),
    ("cfc", lambda: nets.CfC(6, nets.AutoNCP(19, 2, seed=3), mode="no_gate", mixed_memory=True)),
    ("cfc", lambda: nets.CfC(6, nets.NCP(5, 4, 2, 3, 2, 3, 2), proj_size=4)),
    ("cfc", lambda: nets.CfC(6, 10, backbone_layers=2, backbone_units=16, activation="tanh")),
    ("cfc", lambda: nets.CfC(6, 10, backbone_layers=0, mode="pure", proj_size=1)),
    ("cfc", lambda: nets.CfC(6, 10, mixed_memory=True, activation="gelu")),
    ("ltc", lambda: nets.LTC(6, nets.AutoNCP(19, 2, seed=3))),
    ("ltc", lambda: nets.LTC(6, nets.AutoNCP(19, 2, seed=3), implicit_param_constraints=False)),
    ("ltc", lambda: nets.LTC(6, 8, mixed_memory=True, ode_unfolds=2, output_mapping="linear")),
]


def _stream(model, x, ts):
    state = model.initial_state()
    ys = []
    for t in range(x.shape[0]):
        y, state = model.step(x[t], state, float(ts[t]))
        ys.append(y.copy())
    return np.array(ys), state


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fused_step_equals_training_path(index):
    torch.manual_seed(index)
    model = CASES[index][1]().eval()
    rng = np.random.default_rng(index)
    x = rng.normal(size=(60, 6)) * 1.5
    ts = rng.uniform(0.002, 0.2, size=60)  # irregular, as camera and IMU interleave
    ys, state = _stream(model, x, ts)
    with torch.no_grad():
        y_ref, h_ref = model(
            torch.tensor(x, dtype=torch.float32)[None], timespans=torch.tensor(ts, dtype=torch.float32)[None]
        )
    assert np.abs(ys - y_ref[0].numpy()).max() <= TOL
    h_ref = torch.cat(h_ref, dim=1) if isinstance(h_ref, tuple) else h_ref
    assert np.abs(state - h_ref[0].numpy()).max() <= TOL


def test_fused_kernel_follows_weight_updates():
    torch.manual_seed(0)
    model = nets.CfC(3, nets.AutoNCP(10, 1, seed=1))
    x = np.ones(3)
    before, _ = model.step(x, model.initial_state(), 0.05)
    before = before.copy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    out, _ = model(torch.ones(1, 4, 3))
    out.pow(2).sum().backward()
    optimizer.step()
    after, _ = model.step(x, model.initial_state(), 0.05)
    with torch.no_grad():
        ref, _ = model(torch.ones(1, 1, 3), timespans=torch.full((1, 1), 0.05))
    assert abs(after[0] - before[0]) > 1e-4
    assert abs(after[0] - ref.item()) <= TOL


@pytest.mark.parametrize("kind", CORES)
def test_load_state_dict_refreshes_the_kernel(kind):
    torch.manual_seed(0)
    a, b = CORES[kind](), CORES[kind]()
    x = np.array([0.5, -1.0, 2.0])
    ya = a.step(x, a.initial_state(), 0.1)[0].copy()
    b.step(x, b.initial_state(), 0.1)  # builds b's kernel from b's own weights
    b.load_state_dict(a.state_dict())
    np.testing.assert_allclose(b.step(x, b.initial_state(), 0.1)[0], ya, atol=1e-12)


BAD_STEPS = {  # (x, state, dt) -> the start of the error every core must raise
    "zero dt": (np.zeros(3), np.zeros(8), 0.0, "dt must be a finite positive"),
    "negative dt": (np.zeros(3), np.zeros(8), -0.01, "dt must be a finite positive"),
    "nan dt": (np.zeros(3), np.zeros(8), float("nan"), "dt must be a finite positive"),
    "infinite dt": (np.zeros(3), np.zeros(8), float("inf"), "dt must be a finite positive"),
    "long input": (np.zeros(4), np.zeros(8), 0.1, r"input must have shape \(3,\)"),
    "batched input": (np.zeros((1, 3)), np.zeros(8), 0.1, r"input must have shape \(3,\)"),
    "short state": (np.zeros(3), np.zeros(7), 0.1, r"state must be float64 of shape \(8,\)"),
    "float32 state": (np.zeros(3), np.zeros(8, np.float32), 0.1, r"state must be float64 of shape \(8,\)"),
}


@pytest.mark.parametrize("case", BAD_STEPS)
def test_every_core_refuses_a_bad_step_with_the_same_error(case):
    x, state, dt, expected = BAD_STEPS[case]
    messages = {}
    for kind, make in CORES.items():
        model = make()
        with pytest.raises(ValueError, match=expected) as error:
            model.step(x, state, dt)
        messages[kind] = str(error.value)
    assert len(set(messages.values())) == 1, messages


def test_step_does_not_allocate_a_new_state():
    model = nets.CfC(3, nets.AutoNCP(10, 2, seed=1))
    state = model.initial_state()
    y1, s1 = model.step(np.ones(3), state, 0.01)
    y2, s2 = model.step(np.ones(3), state, 0.01)
    assert s1 is state and s2 is state and y1 is y2


def test_cfc_time_constants_are_the_time_scale_of_its_gate():
    torch.manual_seed(0)
    model = nets.CfC(3, 5, backbone_layers=0).eval()
    f = model.fused()
    state = f.initial_state()
    f.step(np.array([0.3, -0.2, 1.0]), state, 0.05)
    h_prev = state.copy()
    x = np.array([1.0, 0.5, -0.5])
    f.step(x, state, 0.05)
    z = torch.tensor(np.concatenate([x, h_prev]), dtype=torch.float32)[None]
    with torch.no_grad():
        expected = 1.0 / model.rnn_cell.time_a(z).abs()[0].double().numpy()
    np.testing.assert_allclose(f.tau, expected, rtol=1e-4)


def test_ltc_time_constants_are_cm_over_open_conductances():
    torch.manual_seed(0)
    model = nets.LTC(2, 4).eval()
    with torch.no_grad():
        model.rnn_cell.w.fill_(-30.0)  # softplus(-30) ~ 1e-13: synapses closed
        model.rnn_cell.sensory_w.fill_(-30.0)
    f = model.fused()
    state = f.initial_state()
    f.step(np.array([1.0, -1.0]), state, 0.1)
    cell = model.rnn_cell
    cm = torch.nn.functional.softplus(cell.cm).detach().double().numpy()
    gleak = torch.nn.functional.softplus(cell.gleak).detach().double().numpy()
    np.testing.assert_allclose(f.tau, cm / gleak, rtol=1e-6)
    with torch.no_grad():
        model.rnn_cell.w.fill_(3.0)  # open synapses shorten every time constant: the liquid effect
    g = model.fused()
    s2 = g.initial_state()
    g.step(np.array([1.0, -1.0]), s2, 0.1)
    assert np.all(g.tau < f.tau)
