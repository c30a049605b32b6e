"""Our CfC/LTC/wirings against ncps 1.0.1 itself: same wirings, same state_dict keys, same outputs."""

import numpy as np
import pytest
import torch

from liquid_control import nets

ncps_torch = pytest.importorskip("ncps.torch")
ncps_wirings = pytest.importorskip("ncps.wirings")

TOL = 1e-5


def _wiring_pair(name):
    if name == "autoncp":
        return ncps_wirings.AutoNCP(19, 2, seed=31), nets.AutoNCP(19, 2, seed=31)
    if name == "ncp":
        args = (8, 6, 3, 4, 3, 5, 4)
        return ncps_wirings.NCP(*args, seed=5), nets.NCP(*args, seed=5)
    return 12, 12  # fully connected


CFC_CASES = [
    ("autoncp", {}),
    ("autoncp", {"mode": "pure"}),
    ("autoncp", {"mode": "no_gate"}),
    ("autoncp", {"mixed_memory": True}),
    ("ncp", {"proj_size": 3}),
    ("fc", {}),
    ("fc", {"mode": "pure"}),
    ("fc", {"mode": "no_gate", "activation": "gelu"}),
    ("fc", {"backbone_layers": 3, "backbone_units": 20, "backbone_dropout": 0.2, "activation": "silu"}),
    ("fc", {"backbone_layers": 0, "proj_size": 2}),
    ("fc", {"mixed_memory": True, "activation": "relu"}),
]
LTC_CASES = [
    ("autoncp", {}),
    ("autoncp", {"implicit_param_constraints": False}),
    ("autoncp", {"mixed_memory": True}),
    ("ncp", {"ode_unfolds": 3, "input_mapping": "linear", "output_mapping": None}),
    ("fc", {}),
    ("fc", {"epsilon": 1e-6}),
]


def _pair(cell, wiring_name, kwargs, input_size=7):
    ref_wiring, our_wiring = _wiring_pair(wiring_name)
    torch.manual_seed(0)
    if cell == "cfc":
        ref, ours = ncps_torch.CfC(input_size, ref_wiring, **kwargs), nets.CfC(input_size, our_wiring, **kwargs)
    else:
        ref, ours = ncps_torch.LTC(input_size, ref_wiring, **kwargs), nets.LTC(input_size, our_wiring, **kwargs)
    return ref.eval(), ours.eval()


def _state(h):
    return h[0] if isinstance(h, tuple) else h


@pytest.mark.parametrize("wiring_name", ["autoncp", "ncp", "fc"])
def test_wirings_are_the_same_circuits(wiring_name):
    if wiring_name == "fc":
        ref, ours = ncps_wirings.FullyConnected(9, 3, erev_init_seed=4), nets.FullyConnected(9, 3, erev_init_seed=4)
    else:
        ref, ours = _wiring_pair(wiring_name)
    ref.build(11)
    ours.build(11)
    np.testing.assert_array_equal(ref.adjacency_matrix, ours.adjacency_matrix)
    np.testing.assert_array_equal(ref.sensory_adjacency_matrix, ours.sensory_adjacency_matrix)
    assert ours.synapse_count == ref.synapse_count > 0
    for layer in range(ref.num_layers):
        assert ref.get_neurons_of_layer(layer) == ours.get_neurons_of_layer(layer)


@pytest.mark.parametrize("seed", [1, 22222, 12345])
def test_autoncp_seeds_differ_and_match_ncps(seed):
    ref, ours = (
        ncps_wirings.AutoNCP(24, 4, sparsity_level=0.3, seed=seed),
        nets.AutoNCP(24, 4, sparsity_level=0.3, seed=seed),
    )
    ref.build(16)
    ours.build(16)
    np.testing.assert_array_equal(ref.adjacency_matrix, ours.adjacency_matrix)
    np.testing.assert_array_equal(ref.sensory_adjacency_matrix, ours.sensory_adjacency_matrix)


@pytest.mark.parametrize(
    "cell,wiring_name,kwargs", [("cfc", w, k) for w, k in CFC_CASES] + [("ltc", w, k) for w, k in LTC_CASES]
)
def test_ncps_weights_load_unchanged_and_give_the_same_outputs(cell, wiring_name, kwargs):
    ref, ours = _pair(cell, wiring_name, kwargs)
    ref_state = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_state)
    # Fresh weights on our side, then ncps's weights loaded strictly.
    ours.load_state_dict(ref_state, strict=True)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 30, 7, generator=gen) * 2.0
    timespans = torch.rand(1, 30, generator=gen) * 0.5 + 0.01  # irregular sampling
    with torch.no_grad():
        y_ref, h_ref = ref(x, timespans=timespans)
        y_ours, h_ours = ours(x, timespans=timespans)
    assert y_ours.shape == y_ref.shape
    assert (y_ours - y_ref).abs().max().item() <= TOL
    assert (_state(h_ours) - _state(h_ref)).abs().max().item() <= TOL


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_per_sample_timespans_at_batch_above_one_match_ncps_run_per_sample(cell):
    # ncps 1.0.1 squeezes (batch, time) spans to (batch,) and broadcasts them across neurons, which
    # is wrong for batch > 1; the right answer is each sample run on its own.
    ref, ours = _pair(cell, "autoncp", {})
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 25, 7, generator=gen)
    timespans = torch.rand(3, 25, 1, generator=gen) + 0.05
    with torch.no_grad():
        batched, _ = ours(x, timespans=timespans)
        for b in range(3):
            alone, _ = ref(x[b : b + 1], timespans=timespans[b : b + 1, :, 0])
            assert (batched[b] - alone[0]).abs().max().item() <= TOL


def test_time_major_and_unbatched_inputs_match_batch_first():
    torch.manual_seed(1)
    model = nets.CfC(5, nets.AutoNCP(12, 2, seed=2)).eval()
    tm = nets.CfC(5, nets.AutoNCP(12, 2, seed=2), batch_first=False).eval()
    tm.load_state_dict(model.state_dict())
    x = torch.randn(2, 9, 5)
    ts = torch.rand(2, 9) + 0.1
    with torch.no_grad():
        y, _ = model(x, timespans=ts)
        y_tm, _ = tm(x.transpose(0, 1), timespans=ts.transpose(0, 1))
        y_single, h_single = model(x[1], timespans=ts[1])
    torch.testing.assert_close(y_tm.transpose(0, 1), y)
    torch.testing.assert_close(y_single, y[1])
    assert h_single.shape == (12,)


def test_bad_timespans_shape_is_a_clear_error():
    model = nets.CfC(4, 8)
    with pytest.raises(ValueError, match="does not match"):
        model(torch.randn(2, 5, 4), timespans=torch.ones(2, 6))
