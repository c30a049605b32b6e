"""Fused streaming kernels: one CfC or LTC step at batch 1 in a single compiled loop.

A controller steps its network hundreds of times a second with one sample, where torch's per-op
dispatch costs far more than the arithmetic. These kernels take a snapshot of a module's weights,
fold the sparsity masks in, concatenate each layer's heads into one matrix (CfC) or list only the
existing synapses (LTC), and run the step with numba: no autograd, no allocation per call. The torch
modules stay the reference; tests hold the two paths equal.

Precision: float64 throughout, so the fused step is at least as exact as the float32 torch path.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

ACT_IDS = {"lecun_tanh": 0, "silu": 1, "relu": 2, "tanh": 3, "gelu": 4}
MODE_IDS = {"default": 0, "pure": 1, "no_gate": 2}

# CfC table layout: one header, then one row per layer.
_H_LAYERS, _H_MODE, _H_MIXED, _H_BACKBONE, _H_ACT, _H_PROJ, _H_IN, _H_STATE, _H_OUT = range(9)
_HEADER = 16
_ROW = 8  # in_dim, units, state_off, w_off, b_off, (pure) tau_off, A_off, spare


@numba.njit(cache=True, inline="always")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True)
def _activate(x, act):
    if act == 0:
        return 1.7159 * math.tanh(0.666 * x)
    if act == 1:
        return x * _sigmoid(x)
    if act == 2:
        return x if x > 0.0 else 0.0
    if act == 3:
        return math.tanh(x)
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@numba.njit(cache=True)
def _matvec(p, w_off, rows, cols, z, b_off, out):
    """out[:rows] = W z + b, W stored row-major at p[w_off:], b at p[b_off:]."""
    for r in range(rows):
        acc = p[b_off + r]
        base = w_off + r * cols
        for k in range(cols):
            acc += p[base + k] * z[k]
        out[r] = acc


@numba.njit(cache=True)
def _lstm_update(x, state, n_in, n, p, off, work):
    """The mixed-memory LSTM cell, in place on state[:n] (h) and state[n:2n] (c).

    p[off:] holds input_map.weight (4n x n_in), input_map.bias (4n), recurrent_map.weight (4n x n).
    """
    z = work[:4 * n]
    wi, bi, wr = off, off + 4 * n * n_in, off + 4 * n * n_in + 4 * n
    for r in range(4 * n):
        acc = p[bi + r]
        for k in range(n_in):
            acc += p[wi + r * n_in + k] * x[k]
        for k in range(n):
            acc += p[wr + r * n + k] * state[k]
        z[r] = acc
    for j in range(n):
        c = state[n + j] * _sigmoid(z[2 * n + j] + 1.0) + math.tanh(z[j]) * _sigmoid(z[n + j])
        state[n + j] = c
        state[j] = math.tanh(c) * _sigmoid(z[3 * n + j])


@numba.njit(cache=True)
def cfc_step(x, state, dt, p, t, out, tau, work):
    """One CfC step in place on `state`; the (projected) output goes to `out`, and each neuron's
    effective time constant (the time scale of its liquid gate at this input) to `tau`."""
    n_layers, mode, mixed = t[_H_LAYERS], t[_H_MODE], t[_H_MIXED]
    n_backbone, act, proj = t[_H_BACKBONE], t[_H_ACT], t[_H_PROJ]
    n_in, n_state = t[_H_IN], t[_H_STATE]
    if mixed:
        _lstm_update(x, state, n_in, n_state, p, t[_HEADER - 1], work)
    # work: [z (max cols) | g (max 4 units) | lstm scratch shares the front]
    max_cols = t[_HEADER - 2]
    z = work[:max_cols]
    g = work[max_cols:]
    inp_off = -1  # -1: the layer input is x; otherwise state[inp_off : inp_off + in_dim]
    for layer in range(n_layers):
        row = _HEADER + layer * _ROW
        in_dim, units, s_off, w_off, b_off = t[row], t[row + 1], t[row + 2], t[row + 3], t[row + 4]
        for k in range(in_dim):
            z[k] = x[k] if inp_off < 0 else state[inp_off + k]
        for k in range(units):
            z[in_dim + k] = state[s_off + k]
        cols = in_dim + units
        if n_backbone > 0:
            # Backbone layers: (w_off, b_off, rows, cols) records after the layer rows.
            brow = _HEADER + n_layers * _ROW
            for bl in range(n_backbone):
                bw, bb, rows, bcols = t[brow + 4 * bl], t[brow + 4 * bl + 1], t[brow + 4 * bl + 2], t[brow + 4 * bl + 3]
                _matvec(p, bw, rows, bcols, z, bb, g)
                for r in range(rows):
                    z[r] = _activate(g[r], act)
                cols = rows
        if mode == 1:  # pure
            _matvec(p, w_off, units, cols, z, b_off, g)
            tau_off, a_off = t[row + 5], t[row + 6]
            for j in range(units):
                ff1 = g[j]
                a = p[a_off + j]
                rate = abs(p[tau_off + j]) + abs(ff1)
                state[s_off + j] = -a * math.exp(-dt * rate) * ff1 + a
                tau[s_off + j] = 1.0 / max(rate, 1e-6)
        else:
            _matvec(p, w_off, 4 * units, cols, z, b_off, g)
            for j in range(units):
                ff1 = math.tanh(g[j])
                ff2 = math.tanh(g[units + j])
                ti = _sigmoid(g[2 * units + j] * dt + g[3 * units + j])
                tau[s_off + j] = 1.0 / max(abs(g[2 * units + j]), 1e-6)
                if mode == 2:
                    state[s_off + j] = ff1 + ti * ff2
                else:
                    state[s_off + j] = ff1 * (1.0 - ti) + ti * ff2
        inp_off = s_off
    # The output is the last layer's neurons (wired: the motor layer), then the projection.
    last = _HEADER + (n_layers - 1) * _ROW
    units, s_off = t[last + 1], t[last + 2]
    if proj > 0:
        _matvec(p, t[_HEADER - 3], proj, units, state[s_off:s_off + units], t[_HEADER - 4], out)
    else:
        for j in range(units):
            out[j] = state[s_off + j]


class _Packer:
    """Appends float64 blocks to one flat parameter vector and hands back their offsets."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def add(self, array) -> int:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().double().numpy()
        block = np.ascontiguousarray(array, dtype=np.float64).ravel()
        offset = self.size
        self.blocks.append(block)
        self.size += block.size
        return offset

    def vector(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(1)


def _pack_lstm(packer: _Packer, lstm) -> int:
    off = packer.add(lstm.input_map.weight)
    packer.add(lstm.input_map.bias)
    packer.add(lstm.recurrent_map.weight)
    return off


class FusedStep:
    """Common streaming interface: `initial_state()` and `step(x, state, dt) -> (y, state)`.

    After a step, `tau` holds each neuron's effective time constant at that step, in the units
    of dt (the "liquid" part: it moves with the input)."""

    input_size: int
    state_len: int
    out: np.ndarray

    def initial_state(self) -> np.ndarray:
        return np.zeros(self.state_len, dtype=np.float64)

    def _check(self, x: np.ndarray, state: np.ndarray, dt: float) -> None:
        if not dt > 0.0 or not math.isfinite(dt):
            raise ValueError(f"dt must be a finite positive number of seconds, got {dt}")
        if x.shape != (self.input_size,):
            raise ValueError(f"input must have shape ({self.input_size},), got {x.shape}")
        if state.shape != (self.state_len,) or state.dtype != np.float64:
            raise ValueError(
                f"state must be float64 of shape ({self.state_len},) from initial_state(), "
                f"got {state.dtype} {state.shape}"
            )


class FusedCfC(FusedStep):
    """A CfC (any mode, wired or with backbone, mixed memory, projection) as one fused step."""

    def __init__(self, params: np.ndarray, table: np.ndarray, input_size: int, state_size: int,
                 mixed: bool, out_size: int, work_size: int) -> None:
        self.params = params
        self.table = table
        self.input_size = input_size
        self.state_size = state_size
        self.state_len = state_size * (2 if mixed else 1)
        self.out = np.zeros(out_size, dtype=np.float64)
        self.tau = np.zeros(state_size, dtype=np.float64)
        self.work = np.zeros(work_size, dtype=np.float64)

    @classmethod
    def from_module(cls, cfc) -> FusedCfC:
        packer = _Packer()
        packer.add(np.zeros(1))  # offset 0 stays unused so that 0 can mean "none"
        cell = cfc.rnn_cell
        cells = list(cell._layers) if cfc.wired else [cell]
        table = np.zeros(_HEADER + len(cells) * _ROW + 4 * 8, dtype=np.int64)
        table[_H_LAYERS] = len(cells)
        table[_H_MODE] = MODE_IDS[cfc.mode]
        table[_H_MIXED] = int(cfc.use_mixed)
        table[_H_IN] = cfc.input_size
        table[_H_STATE] = cfc.state_size
        max_cols, max_rows = 1, 1
        in_dim, s_off = cfc.input_size, 0
        for index, c in enumerate(cells):
            row = _HEADER + index * _ROW
            units = c.hidden_size
            mask = None if c.sparsity_mask is None else c.sparsity_mask.detach().double()
            heads = [c.ff1] if c.mode == "pure" else [c.ff1, c.ff2, c.time_a, c.time_b]
            weights = []
            for k, head in enumerate(heads):
                w = head.weight.detach().double()
                # ncps masks the two value heads; the time gates stay dense.
                if mask is not None and k < 2:
                    w = w * mask
                weights.append(w)
            w = torch.cat(weights, 0)
            b = torch.cat([h.bias.detach().double() for h in heads], 0)
            table[row:row + 5] = (in_dim, units, s_off, packer.add(w), packer.add(b))
            if c.mode == "pure":
                table[row + 5] = packer.add(c.w_tau.reshape(-1))
                table[row + 6] = packer.add(c.A.reshape(-1))
            max_cols = max(max_cols, in_dim + units, w.shape[1])
            max_rows = max(max_rows, w.shape[0])
            in_dim, s_off = units, s_off + units
        if not cfc.wired and cell.backbone is not None:
            linears = [m for m in cell.backbone if isinstance(m, torch.nn.Linear)]
            table[_H_BACKBONE] = len(linears)
            table[_H_ACT] = ACT_IDS[cell.backbone_activation]
            needed = _HEADER + _ROW + 4 * len(linears)
            if table.size < needed:
                table = np.concatenate([table, np.zeros(needed - table.size, dtype=np.int64)])
            for k, lin in enumerate(linears):
                base = _HEADER + _ROW + 4 * k
                table[base:base + 4] = (packer.add(lin.weight), packer.add(lin.bias),
                                        lin.out_features, lin.in_features)
                max_cols = max(max_cols, lin.in_features, lin.out_features)
                max_rows = max(max_rows, lin.out_features)
        out_size = cfc.out_features
        if cfc.proj_size is not None:
            table[_H_PROJ] = cfc.proj_size
            table[_HEADER - 3] = packer.add(cfc.fc.weight)
            table[_HEADER - 4] = packer.add(cfc.fc.bias)
        if cfc.use_mixed:
            table[_HEADER - 1] = _pack_lstm(packer, cfc.lstm)
            max_rows = max(max_rows, 4 * cfc.state_size)
        table[_HEADER - 2] = max_cols
        return cls(packer.vector(), table, cfc.input_size, cfc.state_size, cfc.use_mixed,
                   out_size, max_cols + max_rows)

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        cfc_step(x, state, float(dt), self.params, self.table, self.out, self.tau, self.work)
        return self.out, state


@numba.njit(cache=True)
def ltc_step(x, state, dt, unfolds, eps, neuron, syn_s, syn, out_map, io, out, tau, work):
    """One LTC step (fused semi-implicit Euler, `unfolds` sub-steps) in place on `state`.

    neuron: (n, 3) cm, gleak, vleak (positivity applied); syn_s / syn: (k, 6) rows of
    src, dest, w (positive, masked), mu, sigma, erev; io: input w/b (2, n_in); out_map: (2, motors).
    """
    n = neuron.shape[0]
    num_s = work[0:n]
    den_s = work[n:2 * n]
    num = work[2 * n:3 * n]
    den = work[3 * n:4 * n]
    for i in range(n):
        num_s[i] = 0.0
        den_s[i] = 0.0
    for k in range(syn_s.shape[0]):
        src = int(syn_s[k, 0])
        dest = int(syn_s[k, 1])
        xin = x[src] * io[0, src] + io[1, src]
        a = syn_s[k, 2] * _sigmoid(syn_s[k, 4] * (xin - syn_s[k, 3]))
        num_s[dest] += a * syn_s[k, 5]
        den_s[dest] += a
    h = dt / unfolds
    v = state
    for _ in range(unfolds):
        for i in range(n):
            num[i] = num_s[i]
            den[i] = den_s[i]
        for k in range(syn.shape[0]):
            src = int(syn[k, 0])
            dest = int(syn[k, 1])
            a = syn[k, 2] * _sigmoid(syn[k, 4] * (v[src] - syn[k, 3]))
            num[dest] += a * syn[k, 5]
            den[dest] += a
        # All neurons update from the same previous v (the sums above are done first).
        for i in range(n):
            cm_t = neuron[i, 0] / h
            v[i] = (cm_t * v[i] + neuron[i, 1] * neuron[i, 2] + num[i]) / (
                cm_t + neuron[i, 1] + den[i] + eps
            )
    for i in range(n):
        # The liquid time constant: cm over the leak plus the synaptic conductances now open.
        tau[i] = neuron[i, 0] / max(neuron[i, 1] + den[i], 1e-9)
    for j in range(out.shape[0]):
        out[j] = v[j] * out_map[0, j] + out_map[1, j]


def _synapses(w, mu, sigma, erev, mask) -> np.ndarray:
    """(k, 6) rows src, dest, w*mask, mu, sigma, erev for every synapse the mask keeps."""
    src, dest = np.nonzero(mask)
    return np.stack(
        [src, dest, w[src, dest] * mask[src, dest], mu[src, dest], sigma[src, dest], erev[src, dest]],
        axis=1,
    ).astype(np.float64).reshape(-1, 6)


class FusedLTC(FusedStep):
    """An LTC network (any wiring, mappings, mixed memory) as one fused step over its synapses."""

    def __init__(self, cell_arrays: dict, input_size: int, state_size: int, mixed: bool,
                 lstm_params: np.ndarray | None, unfolds: int, eps: float) -> None:
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

    @classmethod
    def from_module(cls, ltc) -> FusedLTC:
        cell = ltc.rnn_cell

        def get(name: str, positive: bool = False) -> np.ndarray:
            value = getattr(cell, name).detach()
            if positive:
                value = cell.make_positive_fn(value)
            return value.double().numpy()

        n, s, m = cell.state_size, cell.sensory_size, cell.motor_size
        io = np.stack([
            get("input_w") if hasattr(cell, "input_w") else np.ones(s),
            get("input_b") if hasattr(cell, "input_b") else np.zeros(s),
        ])
        out_map = np.stack([
            get("output_w") if hasattr(cell, "output_w") else np.ones(m),
            get("output_b") if hasattr(cell, "output_b") else np.zeros(m),
        ])
        arrays = {
            "neuron": np.stack([get("cm", True), get("gleak", True), get("vleak")], axis=1),
            "syn_s": _synapses(get("sensory_w", True), get("sensory_mu"), get("sensory_sigma"),
                               get("sensory_erev"), get("sensory_sparsity_mask")),
            "syn": _synapses(get("w", True), get("mu"), get("sigma"), get("erev"),
                             get("sparsity_mask")),
            "io": np.ascontiguousarray(io, dtype=np.float64),
            "out_map": np.ascontiguousarray(out_map, dtype=np.float64),
        }
        lstm = None
        if ltc.use_mixed:
            packer = _Packer()
            _pack_lstm(packer, ltc.lstm)
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
        ltc_step(x, state, float(dt), self.unfolds, self.eps, self.neuron, self.syn_s, self.syn,
                 self.out_map, self.io, self.out, self.tau, self.work)
        return self.out, state
