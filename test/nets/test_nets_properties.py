"""Properties of the liquid networks that a controller relies on."""

import numpy as np
import pytest
import torch

from liquid_control import nets


@pytest.mark.parametrize("implicit", [True, False])
def test_ltc_state_stays_inside_the_papers_bounds_for_extreme_inputs(implicit):
    # LTC paper, Theorem 1: each neuron stays within [min(vleak, E), max(vleak, E)] over its
    # incoming synapses' reversal potentials E (and its initial value). The fused semi-implicit
    # step keeps that exactly: each update is a convex combination of v, vleak and the E's.
    torch.manual_seed(0)
    model = nets.LTC(8, nets.AutoNCP(19, 2, seed=4), implicit_param_constraints=implicit).eval()
    if not implicit:
        model.apply_weight_constraints()
    cell = model.rnn_cell
    mask, smask = cell.sparsity_mask.detach().numpy(), cell.sensory_sparsity_mask.detach().numpy()
    erev, serev = cell.erev.detach().numpy(), cell.sensory_erev.detach().numpy()
    vleak = cell.vleak.detach().numpy()
    incoming = [
        np.concatenate([erev[mask[:, i] > 0, i], serev[smask[:, i] > 0, i], [vleak[i], 0.0]])
        for i in range(model.state_size)
    ]
    low = np.array([e.min() for e in incoming])
    high = np.array([e.max() for e in incoming])
    rng = np.random.default_rng(1)
    state = model.initial_state()
    for k in range(2000):
        x = rng.choice([-1e6, -1e3, 0.0, 1e3, 1e6], size=8) * rng.uniform(0.5, 1.0, size=8)
        dt = float(rng.choice([1e-4, 0.005, 0.033, 1.0, 100.0]))
        _, state = model.step(x, state, dt)
        assert np.all(np.isfinite(state))
        assert np.all(state >= low - 1e-9) and np.all(state <= high + 1e-9), k
    # The torch path holds the same bound for a batch of extreme sequences.
    x = torch.tensor(rng.choice([-1e6, 1e6], size=(4, 50, 8)), dtype=torch.float32)
    with torch.no_grad():
        _, h = model(x, timespans=torch.full((4, 50), 10.0))
    assert torch.all(h >= torch.tensor(low, dtype=torch.float32) - 1e-5)
    assert torch.all(h <= torch.tensor(high, dtype=torch.float32) + 1e-5)


def _split_ratio(f, dt: float) -> float:
    """RMS |one step of dt - two steps of dt/2| over the RMS variation of the output, 10 s of slow
    (0.08 Hz) inputs."""
    steps = int(10 / dt)
    t = np.arange(steps) * dt
    xs = np.stack([np.sin(0.5 * t + k) for k in range(4)], axis=1)
    full, half = f.initial_state(), f.initial_state()
    diff, out = [], []
    for i in range(steps):
        y_full = f.step(xs[i], full, dt)[0].copy()
        f.step(xs[i], half, dt / 2)
        y_half = f.step(xs[i], half, dt / 2)[0]
        diff.append(y_full - y_half)
        out.append(y_full)
    diff, out = np.array(diff), np.array(out)
    return float(np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean((out - out.mean(0)) ** 2)))


def test_cfc_half_steps_come_closer_to_full_steps_as_the_step_shrinks():
    """A CfC is a closed-form approximation, not an exact flow, so splitting a step in two changes
    the output. What a sensor-rate controller needs: the change shrinks with the step (the IMU's
    200 Hz splits closer than the camera's 30 Hz) for every network, and at the IMU's rate it stays
    a small part of what a typical network's output does (under a tenth for the median network:
    splitting an IMU period is a different rate, not a different command)."""
    at_imu_rate = []
    for seed in range(6):
        torch.manual_seed(seed)
        f = nets.CfC(4, nets.AutoNCP(19, 2, seed=seed)).eval().fused()
        imu, camera = _split_ratio(f, 1 / 200), _split_ratio(f, 1 / 30)
        assert imu < camera, (seed, imu, camera)
        at_imu_rate.append(imu)
    assert np.median(at_imu_rate) < 0.1, at_imu_rate


@pytest.mark.parametrize(
    "make",
    [
        lambda: nets.CfC(5, nets.AutoNCP(19, 2, seed=1)),
        lambda: nets.CfC(5, 16, mixed_memory=True),
        lambda: nets.LTC(5, nets.AutoNCP(19, 2, seed=1)),
    ],
)
def test_gradients_flow_through_200_steps(make):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(2, 200, 5)
    ts = torch.rand(2, 200) * 0.1 + 0.005
    y, _ = model(x, timespans=ts)
    y[:, -1].sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    # A loss on every step (as in BPTT training) reaches the first input with a finite gradient.
    x0 = x.clone().requires_grad_(True)
    y0, _ = model(x0, timespans=ts)
    y0.pow(2).mean().backward()
    assert torch.isfinite(x0.grad).all() and x0.grad[:, 0].abs().sum() > 0


def test_same_seed_same_network_and_outputs():
    def build():
        torch.manual_seed(42)
        return nets.CfC(6, nets.AutoNCP(19, 2, seed=9)), nets.LTC(6, nets.AutoNCP(19, 2, seed=9))

    (c1, l1), (c2, l2) = build(), build()
    for a, b in ((c1, c2), (l1, l2)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
        x = torch.randn(1, 20, 6)
        ts = torch.rand(1, 20)
        with torch.no_grad():
            assert torch.equal(a(x, timespans=ts)[0], b(x, timespans=ts)[0])
    other = nets.AutoNCP(19, 2, seed=10)
    other.build(6)
    assert not np.array_equal(other.adjacency_matrix, c1.wiring.adjacency_matrix)
