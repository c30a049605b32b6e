"""The LTC's streaming step (batch 1, float64, torch-free): `ltc_step` over the synapses the masks
keep, in the arrays of `layout.py`, and `FusedLTC`, which an LTC module builds with `fused()`."""

from __future__ import annotations

import numba
import numpy as np

from ..kernels import _lstm_update, _sigmoid
from ..stream import FusedStep, Packer, pack_lstm
from .layout import (
    _MAP_B,
    _MAP_W,
    _N_CM,
    _N_GLEAK,
    _N_VLEAK,
    _SYN_DEST,
    _SYN_EREV,
    _SYN_LEN,
    _SYN_MU,
    _SYN_SIGMA,
    _SYN_SRC,
    _SYN_W,
)


@numba.njit(cache=True)
def ltc_step(x, state, dt, unfolds, eps, neuron, syn_s, syn, out_map, io, out, tau, work):
    """One LTC step (fused semi-implicit Euler, `unfolds` sub-steps) in place on `state`.

    neuron (n, 3), syn_s / syn (k, 6), io (2, n_in) and out_map (2, motors): columns and rows as
    the _N_, _SYN_ and _MAP_ names above say.
    """
    n = neuron.shape[0]
    num_s = work[0:n]
    den_s = work[n : 2 * n]
    num = work[2 * n : 3 * n]
    den = work[3 * n : 4 * n]
    for i in range(n):
        num_s[i] = 0.0
        den_s[i] = 0.0
    for k in range(syn_s.shape[0]):
        src = int(syn_s[k, _SYN_SRC])
        dest = int(syn_s[k, _SYN_DEST])
        xin = x[src] * io[_MAP_W, src] + io[_MAP_B, src]
        a = syn_s[k, _SYN_W] * _sigmoid(syn_s[k, _SYN_SIGMA] * (xin - syn_s[k, _SYN_MU]))
        num_s[dest] += a * syn_s[k, _SYN_EREV]
        den_s[dest] += a
    h = dt / unfolds
    v = state
    for _ in range(unfolds):
        for i in range(n):
            num[i] = num_s[i]
            den[i] = den_s[i]
        for k in range(syn.shape[0]):
            src = int(syn[k, _SYN_SRC])
            dest = int(syn[k, _SYN_DEST])
            a = syn[k, _SYN_W] * _sigmoid(syn[k, _SYN_SIGMA] * (v[src] - syn[k, _SYN_MU]))
            num[dest] += a * syn[k, _SYN_EREV]
            den[dest] += a
        # All neurons update from the same previous v (the sums above are done first).
        for i in range(n):
            cm_t = neuron[i, _N_CM] / h
            v[i] = (cm_t * v[i] + neuron[i, _N_GLEAK] * neuron[i, _N_VLEAK] + num[i]) / (
                cm_t + neuron[i, _N_GLEAK] + den[i] + eps
            )
    for i in range(n):
        # The liquid time constant: cm over the leak plus the synaptic conductances now open.
        tau[i] = neuron[i, _N_CM] / max(neuron[i, _N_GLEAK] + den[i], 1e-9)
    for j in range(out.shape[0]):
        out[j] = v[j] * out_map[_MAP_W, j] + out_map[_MAP_B, j]


def _synapses(w, mu, sigma, erev, mask) -> np.ndarray:
    """One _SYN_ row (src, dest, w*mask, mu, sigma, erev) for every synapse the mask keeps."""
    src, dest = np.nonzero(mask)
    rows = np.empty((src.size, _SYN_LEN), dtype=np.float64)
    rows[:, _SYN_SRC] = src
    rows[:, _SYN_DEST] = dest
    rows[:, _SYN_W] = w[src, dest] * mask[src, dest]
    rows[:, _SYN_MU] = mu[src, dest]
    rows[:, _SYN_SIGMA] = sigma[src, dest]
    rows[:, _SYN_EREV] = erev[src, dest]
    return rows


class FusedLTC(FusedStep):
    """An LTC network (any wiring, mappings, mixed memory) as one fused step over its synapses."""

    def __init__(
        self,
        cell_arrays: dict,
        input_size: int,
        state_size: int,
        mixed: bool,
        lstm_params: np.ndarray | None,
        unfolds: int,
        eps: float,
    ) -> None:
        self.__dict__.update(cell_arrays)
        self.input_size = input_size
        self.state_size = state_size
        self.state_len = state_size * (2 if mixed else 1)
        self.mixed = mixed
        self.lstm_params = lstm_params
        self.unfolds = unfolds
        self.eps = eps
        self.out = np.zeros(self.out_map.shape[1], dtype=np.float64)
        self.tau = np.zeros(state_size, dtype=np.float64)
        self.work = np.zeros(4 * state_size, dtype=np.float64)
        self.lstm_work = np.zeros(4 * state_size, dtype=np.float64) if mixed else None

    ARRAYS = ("neuron", "syn_s", "syn", "io", "out_map")

    def to_arrays(self) -> dict:
        return {
            "kind": "ltc",
            **self._named_arrays(),
            "input_size": self.input_size,
            "state_size": self.state_size,
            "mixed": self.mixed,
            "lstm_params": None if self.lstm_params is None else self.lstm_params.tolist(),
            "unfolds": self.unfolds,
            "eps": self.eps,
        }

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedLTC:
        arrays = cls._arrays_of(d)
        lstm = None if d["lstm_params"] is None else np.array(d["lstm_params"], dtype=np.float64)
        return cls(
            arrays,
            int(d["input_size"]),
            int(d["state_size"]),
            bool(d["mixed"]),
            lstm,
            int(d["unfolds"]),
            float(d["eps"]),
        )

    @classmethod
    def from_module(cls, ltc) -> FusedLTC:
        cell = ltc.rnn_cell

        def get(name: str, positive: bool = False) -> np.ndarray:
            value = getattr(cell, name).detach()
            if positive:
                value = cell.make_positive_fn(value)
            return value.double().numpy()

        n, s, m = cell.state_size, cell.sensory_size, cell.motor_size
        # Stacked in the order of the _MAP_ rows and _N_ columns.
        io = np.stack(
            [
                get("input_w") if hasattr(cell, "input_w") else np.ones(s),
                get("input_b") if hasattr(cell, "input_b") else np.zeros(s),
            ]
        )
        out_map = np.stack(
            [
                get("output_w") if hasattr(cell, "output_w") else np.ones(m),
                get("output_b") if hasattr(cell, "output_b") else np.zeros(m),
            ]
        )
        arrays = {
            "neuron": np.stack([get("cm", True), get("gleak", True), get("vleak")], axis=1),
            "syn_s": _synapses(
                get("sensory_w", True),
                get("sensory_mu"),
                get("sensory_sigma"),
                get("sensory_erev"),
                get("sensory_sparsity_mask"),
            ),
            "syn": _synapses(get("w", True), get("mu"), get("sigma"), get("erev"), get("sparsity_mask")),
            "io": np.ascontiguousarray(io, dtype=np.float64),
            "out_map": np.ascontiguousarray(out_map, dtype=np.float64),
        }
        lstm = None
        if ltc.use_mixed:
            packer = Packer()
            pack_lstm(packer, ltc.lstm)
            lstm = packer.vector()
        return cls(arrays, ltc.input_size, n, ltc.use_mixed, lstm, cell._ode_unfolds, cell._epsilon)

    @property
    def synapses(self) -> int:
        return int(self.syn.shape[0] + self.syn_s.shape[0])

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        if self.mixed:
            _lstm_update(x, state, self.input_size, self.state_size, self.lstm_params, 0, self.lstm_work)
        ltc_step(
            x,
            state,
            float(dt),
            self.unfolds,
            self.eps,
            self.neuron,
            self.syn_s,
            self.syn,
            self.out_map,
            self.io,
            self.out,
            self.tau,
            self.work,
        )
        return self.out, state
