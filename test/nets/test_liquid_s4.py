"""Liquid-S4 (nets/liquid_s4/): its streaming step is its training path, its time is real time
(exact ZOH, so dt splits exactly), its liquid term is the documented one, it is stable for any
input, its gradients are right, it learns, and it travels in model files and policies."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liquid_control.model.modelfile import NetworkSpec, OutputSpec, load_model, save_model
from liquid_control.model.policy import EncoderSpec, LiquidPolicy
from liquid_control.nets.liquid_s4.module import RHO_MIN, LiquidS4
from liquid_control.nets.liquid_s4.stream import FusedLiquidS4

SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _core(seed: int, inputs=3, units=4, channels=3, modes=2, liquid=True, init="lin", dtype=torch.float64):
    """A small core with every parameter away from its initial value (B complex, rates spread)."""
    torch.manual_seed(seed)
    core = LiquidS4(inputs, units, channels, modes, liquid=liquid, init=init).to(dtype)
    with torch.no_grad():
        core.b_re.normal_(0.0, 0.5)
        core.b_im.normal_(0.0, 0.5)
        core.a_log.normal_(-1.0, 0.5)
        core.log_step.uniform_(0.0, 3.0)
        core.in_proj.weight.mul_(2.0)
    return core.eval()


def _series(seed: int, batch: int, steps: int, inputs: int, lo=0.002, hi=0.08):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, inputs, generator=g, dtype=torch.float64)
    ts = lo + (hi - lo) * torch.rand(batch, steps, generator=g, dtype=torch.float64)
    return x, ts


@SLOW
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 40),
    liquid=st.booleans(),
    init=st.sampled_from(["lin", "inv"]),
    hi=st.sampled_from([0.01, 0.1, 1.0]),
)
@pytest.mark.slow
def test_streaming_step_equals_state_sequence_on_irregular_time(seed, steps, liquid, init, hi):
    core = _core(seed, liquid=liquid, init=init)
    x, ts = _series(seed, 2, steps, 3, lo=1e-4, hi=hi)
    with torch.no_grad():
        fused = core.state_sequence(x, ts, fused=True)
        loop = core.state_sequence(x, ts, fused=False)
    np.testing.assert_allclose(fused.numpy(), loop.numpy(), atol=1e-12)
    run = core.fused(refresh=True)
    for b in range(2):
        state = run.initial_state()
        for t in range(steps):
            out, state = run.step(x[b, t].numpy(), state, float(ts[b, t]))
            np.testing.assert_allclose(out, fused[b, t].numpy(), rtol=1e-9, atol=1e-9)
            assert np.array_equal(state[: core.state_size], out)  # the readout reads what the step returns
    assert state.shape == (core.state_size + 2 * 3 * 2,)


def test_a_float32_core_streams_like_its_training_path():
    core = _core(7, inputs=15, units=19, channels=16, modes=8, dtype=torch.float32)
    x, ts = _series(7, 1, 200, 15, lo=0.002, hi=0.04)
    with torch.no_grad():
        ref = core.state_sequence(x.float(), ts.float())[0].numpy()
    state = core.initial_state()
    out = np.array([core.step(x[0, t].numpy(), state, float(ts[0, t].float()))[0].copy() for t in range(200)])
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_a_sequence_continues_from_a_streaming_state():
    core = _core(3)
    x, ts = _series(3, 2, 30, 3)
    for fused in (True, False):
        with torch.no_grad():
            whole = core.state_sequence(x, ts, fused=fused)
            _, state = core(x[:, :12], timespans=ts[:, :12])
            rest = core.state_sequence(x[:, 12:], ts[:, 12:], hx=state, fused=fused)
        np.testing.assert_allclose(rest.numpy(), whole[:, 12:].numpy(), atol=1e-12)


@SLOW
@given(seed=st.integers(0, 10_000), dt=st.floats(1e-4, 2.0), scale=st.floats(0.1, 10.0), liquid=st.booleans())
def test_two_steps_of_half_dt_on_a_held_input_are_one_step_of_dt(seed, dt, scale, liquid):
    # The state ODE is linear in xi for a held input and ZOH solves it exactly, so the flow
    # composes: exp(s lambda dt/2)^2 = exp(s lambda dt), and the input terms add up the same.
    core = _core(seed, liquid=liquid)
    run = core.fused(refresh=True)
    rng = np.random.default_rng(seed)
    start = run.initial_state()
    for _ in range(3):  # a state with some history
        run.step(rng.normal(size=3), start, float(rng.uniform(0.01, 0.1)))
    x = scale * rng.normal(size=3)
    one = run.step(x, start.copy(), dt)[1].copy()
    two = start.copy()
    run.step(x, two, dt / 2)
    run.step(x, two, dt / 2)
    np.testing.assert_allclose(two, one, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # the training path too
        xs, hx = torch.tensor(x)[None, None], torch.tensor(start)[None]
        a = core.state_sequence(xs.expand(1, 2, 3), torch.full((1, 2), dt / 2, dtype=torch.float64), hx)[0, -1]
        b = core.state_sequence(xs, torch.full((1, 1), dt, dtype=torch.float64), hx)[0, -1]
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)
    # ... and dt is not ignored: half the time is another state.
    half = run.step(x, start.copy(), dt / 2)[1]
    assert np.abs(half[core.state_size :] - one[core.state_size :]).max() > 1e-9


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-1e5, 1e5))
def test_the_training_kernels_sine_and_cosine_are_libms_to_a_few_ulp(x):
    from liquid_control.nets.liquid_s4.train import _sincos

    s, c = _sincos(x)
    assert abs(s - math.sin(x)) <= 4e-16 and abs(c - math.cos(x)) <= 4e-16


def test_without_the_liquid_term_it_is_s4d_with_zero_order_hold():
    core = _core(5, liquid=False)
    x, ts = _series(5, 1, 12, 3)
    p = {k: v.detach().numpy() for k, v in core.continuous_parameters().items()}
    a = p["a_re"] + 1j * p["a_im"]
    bb = p["b_re"] + 1j * p["b_im"]
    u = core.in_proj(x).detach().numpy()[0]
    xi = np.zeros_like(a)
    expected = []
    for k in range(12):
        a_bar = np.exp(p["scale"][:, None] * ts[0, k].item() * a)
        xi = a_bar * xi + (a_bar - 1) / a * bb * u[k][:, None]
        expected.append(xi)
    with torch.no_grad():
        xr, xi_im = core.mode_sequence(x, ts)
    np.testing.assert_allclose(xr[0].numpy() + 1j * xi_im[0].numpy(), np.array(expected), atol=1e-12)


@pytest.mark.parametrize("liquid", [True, False])
def test_the_order_two_input_correlation_is_s_dt_b_abar_bbar(liquid):
    # d^2 xi_2 / du_2 du_1 at u = 0 is the coefficient of u_2 u_1 in the unrolled recurrence:
    # s dt_2 B A_bar(dt_2) B_bar(dt_1) with the liquid term (the paper's B_bar^2 u_k u_{k-1}
    # with B_bar ~ s dt B), zero without it (S4: the state is linear in the inputs).
    core = _core(11, inputs=1, units=2, channels=1, modes=1, liquid=liquid)
    with torch.no_grad():
        core.in_proj.weight.fill_(1.0)
        core.in_proj.bias.zero_()
    dt = torch.tensor([[0.03, 0.05]], dtype=torch.float64)

    def mode(u, part):
        xr, xi = core.mode_sequence(u.reshape(1, 2, 1), dt, fused=False)
        return (xr if part == "re" else xi)[0, 1, 0, 0]

    h = {
        part: torch.autograd.functional.hessian(lambda u, part=part: mode(u, part), torch.zeros(2, dtype=torch.float64))
        for part in ("re", "im")
    }
    mixed = complex(h["re"][0, 1].item(), h["im"][0, 1].item())
    p = {k: v.detach().numpy().ravel()[0] for k, v in core.continuous_parameters().items()}
    a, b, s = complex(p["a_re"], p["a_im"]), complex(p["b_re"], p["b_im"]), p["scale"]
    a_bar_2 = np.exp(s * 0.05 * a)
    b_bar_1 = (np.exp(s * 0.03 * a) - 1) / a * b
    expected = s * 0.05 * b * a_bar_2 * b_bar_1 if liquid else 0.0
    assert abs(mixed - expected) < 1e-9 * max(1.0, abs(expected))
    if liquid:
        assert abs(expected) > 1e-4


@SLOW
@given(seed=st.integers(0, 10_000), magnitude=st.sampled_from([1.0, 1e2, 1e6]), dt=st.floats(1e-4, 5.0))
def test_stable_for_any_input_the_modes_contract(seed, magnitude, dt):
    # Re(lambda) <= -(RHO_MIN + exp(a_log)) whatever the input: two states under the same inputs
    # draw together mode by mode, and every mode's time constant is finite and positive.
    core = _core(seed)
    run = core.fused(refresh=True)
    rng = np.random.default_rng(seed)
    n = core.state_size
    a, b = run.initial_state(), run.initial_state()
    b[n:] = rng.normal(size=b.size - n)
    gap = np.abs(a[n : n + 6] + 1j * a[n + 6 :] - b[n : n + 6] - 1j * b[n + 6 :])
    for _ in range(20):
        x = magnitude * rng.normal(size=3)
        run.step(x, a, dt)
        tau = run.mode_tau.copy()
        run.step(x, b, dt)
        new_gap = np.abs(a[n : n + 6] + 1j * a[n + 6 :] - b[n : n + 6] - 1j * b[n + 6 :])
        bound = np.exp(-dt / tau) * gap
        rounding = 1e-12 * (1.0 + np.abs(a).max() + np.abs(b).max())
        assert np.all(new_gap <= bound * (1 + 1e-9) + rounding)
        assert np.all(np.isfinite(tau)) and np.all(tau > 0)
        assert np.all(tau <= 1.0 / (np.repeat(np.exp(core.log_step.detach().numpy()), 2) * RHO_MIN))
        gap = new_gap
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


def test_the_liquid_time_constants_move_with_the_input_only_when_liquid():
    for liquid in (True, False):
        run = _core(2, liquid=liquid).fused(refresh=True)
        run.step(np.full(3, -1.0), run.initial_state(), 0.01)
        low = run.mode_tau.copy()
        run.step(np.full(3, 1.0), run.initial_state(), 0.01)
        assert (np.abs(run.mode_tau - low).max() > 1e-3) == liquid
        assert np.isnan(run.tau).all()  # the readout's features have no time constant


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False])
def test_gradients_are_right_gradcheck_float64(fused):
    core = _core(4, inputs=2, units=2, channels=2, modes=2)
    core.fused_sequence = fused
    names = [name for name, _ in core.named_parameters()]
    x, ts = _series(4, 2, 5, 2, lo=0.01, hi=0.3)
    hx = torch.randn(2, core.state_len, dtype=torch.float64)

    def run(x, ts, hx, *params):
        z, last = torch.func.functional_call(core, dict(zip(names, params, strict=True)), (x, hx, ts))
        return z, last

    inputs = (
        x.requires_grad_(),
        ts.requires_grad_(),
        hx.requires_grad_(),
        *(p.detach().clone().requires_grad_() for p in core.parameters()),
    )
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6)


def test_the_fused_kernel_gradients_equal_autograd_through_the_loop():
    core = _core(8, inputs=15, units=6, channels=5, modes=4)
    x, ts = _series(8, 3, 25, 15)
    x.requires_grad_()
    ts.requires_grad_()
    grads = {}
    for fused in (True, False):
        core.zero_grad()
        x.grad = ts.grad = None
        z = core.state_sequence(x, ts, fused=fused)
        xr, xi = core.mode_sequence(x, ts, fused=fused)
        (z.tanh().square().sum() + (xr * xi).mean()).backward()
        grads[fused] = [x.grad.clone(), ts.grad.clone(), *(p.grad.clone() for p in core.parameters())]
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_it_learns_a_low_pass_filter_of_an_irregularly_sampled_input():
    # Target: the exact first-order low-pass (tau 0.15 s) of a held input sampled at irregular
    # times; a constant predictor's error is the target's variance.
    g = torch.Generator().manual_seed(0)

    def batch(n):
        u = torch.randn(n, 80, 1, generator=g)
        dt = 0.005 + 0.045 * torch.rand(n, 80, generator=g)
        decay = torch.exp(-dt / 0.15)
        y, ys = torch.zeros(n), []
        for k in range(80):
            y = decay[:, k] * y + (1 - decay[:, k]) * u[:, k, 0]
            ys.append(y)
        return u, dt, torch.stack(ys, 1)[..., None]

    torch.manual_seed(0)
    core = LiquidS4(1, units=8, channels=4, modes=4)
    readout = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam([*core.parameters(), *readout.parameters()], lr=1e-2)
    for _ in range(100):  # about 0.02 of the variance by then (0.15 after 50 steps)
        u, dt, y = batch(16)
        loss = torch.nn.functional.mse_loss(readout(core.state_sequence(u, dt))[:, 10:], y[:, 10:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    u, dt, y = batch(64)
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(readout(core.state_sequence(u, dt))[:, 10:], y[:, 10:]).item()
    constant = y[:, 10:].var().item()
    assert mse < 0.1 * constant, (mse, constant)


def _policy():
    torch.manual_seed(0)
    spec = EncoderSpec(image_width=32, image_height=24, channels=(4, 8), camera_features=6)
    core = LiquidS4(spec.core_inputs, units=7, channels=5, modes=3)
    with torch.no_grad():
        core.b_im.normal_(0.0, 0.3)
    return LiquidPolicy(spec, core, outputs=2, imu_mean=(0.0, 0.1, 9.8), imu_std=(0.5, 1.0, 1.0)).eval()


def test_a_liquid_s4_policy_round_trips_and_streams_like_its_forward(tmp_path):
    policy = _policy()
    path = tmp_path / "s4.safetensors"
    save_model(
        path,
        policy,
        policy.sensor_spec(),
        OutputSpec(("linear.x", "angular.z"), ("m/s", "rad/s"), ((0.0, 1.0), (-1.5, 1.5))),
    )
    loaded, config = load_model(path)
    assert config.network == NetworkSpec("liquid_s4", 9, units=7, options={"channels": 5, "modes": 3, "liquid": True})
    assert isinstance(loaded.core, LiquidS4)
    rng = np.random.default_rng(0)
    frames = rng.random((1, 4, 24, 32, 3)).astype(np.float32)
    frame_index = np.repeat(np.arange(4), 5)[None]
    imu = rng.normal(size=(1, 20, 3)) + np.array([0.0, 0.1, 9.8])
    dt = rng.uniform(0.003, 0.04, size=(1, 20))
    args = (
        torch.tensor(frames),
        torch.tensor(frame_index),
        torch.tensor(imu, dtype=torch.float32),
        torch.tensor(dt, dtype=torch.float32),
    )
    with torch.no_grad():
        ref = policy(*args)[0].numpy()
        assert np.array_equal(loaded(*args)[0].numpy(), ref)
    # The running form's core and readout on the camera features the torch encoder gives (how a
    # frame reaches the encoder is the runtime's business, tested with the CfC policies).
    with torch.no_grad():
        features = loaded.camera(args[0][0]).double().numpy()
    run = loaded.streamer()
    state = run.initial_state()
    assert state.size == 7 + 2 * 5 * 3
    out = []
    for t in range(20):
        cam = features[frame_index[0, t]]
        out.append(run.step(cam, run.normalize_imu(imu[0, t]), state, float(dt[0, t])).copy())
    np.testing.assert_allclose(np.array(out), ref, atol=2e-5)
    run.check()


def test_the_streaming_kernel_follows_weight_changes_and_travels_as_arrays():
    import json

    core = _core(9)
    x = np.array([0.3, -1.0, 2.0])
    before = core.step(x, core.initial_state(), 0.02)[0].copy()
    with torch.no_grad():
        core.c_re.add_(0.5)  # in place, as an optimizer step does
    after = core.step(x, core.initial_state(), 0.02)[0].copy()
    with torch.no_grad():
        ref = core.state_sequence(torch.tensor(x)[None, None], torch.full((1, 1), 0.02, dtype=torch.float64))
    assert np.abs(after - before).max() > 1e-6
    np.testing.assert_allclose(after, ref[0, 0].numpy(), atol=1e-12)
    copy = FusedLiquidS4._from_arrays(json.loads(json.dumps(core.fused().to_arrays())))
    assert np.array_equal(copy.step(x, copy.initial_state(), 0.02)[0], after)


def test_bad_configurations_and_inputs_are_refused():
    core = LiquidS4(3, 4, 2, 2)
    with pytest.raises(ValueError, match="dt"):
        core.step(np.zeros(3), core.initial_state(), math.nan)
    with pytest.raises(ValueError, match="shape"):
        core.step(np.zeros(2), core.initial_state(), 0.01)
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        core.state_sequence(torch.zeros(1, 4, 2), torch.ones(1, 4))
    with pytest.raises(ValueError, match="init"):
        LiquidS4(3, 4, init="legs")
    with pytest.raises(ValueError, match="positive"):
        LiquidS4(3, 0)
    with pytest.raises(ValueError, match="fully connected"):
        NetworkSpec("liquid_s4", 5, wiring={"class": "FullyConnected", "units": 4})
    with pytest.raises(ValueError, match="unknown liquid_s4 options"):
        NetworkSpec("liquid_s4", 5, units=4, options={"mode": "pure"})
    spec = NetworkSpec("liquid_s4", 5, units=4, options={"channels": 3, "modes": 2, "liquid": False})
    built = spec.build()
    assert NetworkSpec.of(built) == spec and built.state_len == 4 + 12
