"""Fused streaming kernels: one CfC, LTC, Liquid-S4, LSTM, GRU or feedforward step at batch 1 in a
single compiled loop, with numpy and numba only (no torch: the ONNX backend streams every core here,
rebuilt by `FusedStep.from_arrays` from what `to_arrays` put in the exported file).

A controller steps its network hundreds of times a second with one sample, where torch's per-op
dispatch costs far more than the arithmetic. These kernels take a snapshot of a module's weights,
fold the sparsity masks in, concatenate each layer's heads into one matrix (CfC) or list only the
existing synapses (LTC), and run the step with numba: no autograd, no allocation per call. The torch
modules stay the reference; tests hold the two paths equal.

`FusedStep` (the input check, `initial_state`) and `_sigmoid` are shared by every kernel, so every
fused step refuses bad input the same way. The modules (nets/cfc.py, ltc.py, liquid_s4.py,
recurrent.py, feedforward.py) build their kernel with `fused()`.

Precision: float64 throughout, so the fused step is at least as exact as the float32 torch path.
"""

from __future__ import annotations

import math

import numba
import numpy as np

DT_SCALE = 0.01  # seconds: the discrete baselines' elapsed-time input is dt / DT_SCALE (about 0.5 at 200 Hz)
ACT_IDS = {"lecun_tanh": 0, "silu": 1, "relu": 2, "tanh": 3, "gelu": 4}
MODE_IDS = {"default": 0, "pure": 1, "no_gate": 2}

# The CfC table: int64 slots that tell `cfc_step` the network's shape and where each weight block
# starts in the flat float64 parameter vector p (offset 0 of p is a dummy, so an offset 0 means
# "none"). Three parts, in this order:
#
#   header, _HEADER_LEN slots at 0:
#     _H_LAYERS     layers (1 unless wired; wired: one per wiring layer, motor last)
#     _H_MODE       MODE_IDS[mode]
#     _H_MIXED      1 when a mixed-memory LSTM runs before the cell
#     _H_BACKBONE   backbone Linear layers (0: none; never when wired)
#     _H_ACT        ACT_IDS[backbone activation]
#     _H_PROJ       projection size (0: no projection, the output is the last layer's neurons)
#     _H_IN         input size
#     _H_STATE      state size (all neurons, without the LSTM's c)
#     8 to 11       spare, zero
#     _H_PROJ_B     offset of the projection bias (fc.bias)
#     _H_PROJ_W     offset of the projection weight (fc.weight, proj x units)
#     _H_MAX_COLS   longest layer input: where the work buffer splits into z and g
#     _H_LSTM       offset of the LSTM weights (the block `_lstm_update` reads)
#   one row per layer, _ROW_LEN slots at _HEADER_LEN + layer * _ROW_LEN:
#     _ROW_IN       the layer's input width (x for the first layer, the previous layer after)
#     _ROW_UNITS    its neurons
#     _ROW_STATE    where its neurons sit in the state vector
#     _ROW_W        offset of its heads' weights, concatenated (units or 4 units x cols)
#     _ROW_B        offset of their biases
#     _ROW_TAU      (pure mode) offset of w_tau
#     _ROW_A        (pure mode) offset of A
#     7             spare, zero
#   one record per backbone Linear, _BACKBONE_LEN slots each, after the last layer row:
#     _BB_W, _BB_B  offsets of its weight (rows x cols) and bias
#     _BB_ROWS      out_features
#     _BB_COLS      in_features
_H_LAYERS, _H_MODE, _H_MIXED, _H_BACKBONE, _H_ACT, _H_PROJ, _H_IN, _H_STATE = range(8)
_H_PROJ_B, _H_PROJ_W, _H_MAX_COLS, _H_LSTM = range(12, 16)
_HEADER_LEN = 16
_ROW_IN, _ROW_UNITS, _ROW_STATE, _ROW_W, _ROW_B, _ROW_TAU, _ROW_A = range(7)
_ROW_LEN = 8
_BB_W, _BB_B, _BB_ROWS, _BB_COLS = range(4)
_BACKBONE_LEN = 4
_BACKBONE_ROOM = 8  # backbone records the table has room for before it must grow

# LTC arrays, by column (`ltc_step` takes them as 2-D float64 arrays, not one table):
#   neuron, one row per neuron:        _N_CM, _N_GLEAK (both made positive), _N_VLEAK
#   syn_s / syn, one row per synapse:  _SYN_SRC, _SYN_DEST (indices), _SYN_W (made positive, masked),
#                                      _SYN_MU, _SYN_SIGMA, _SYN_EREV
#   io (by input) / out_map (by motor neuron), two rows:  _MAP_W, _MAP_B (the affine mapping)
_N_CM, _N_GLEAK, _N_VLEAK = range(3)
_SYN_SRC, _SYN_DEST, _SYN_W, _SYN_MU, _SYN_SIGMA, _SYN_EREV = range(6)
_SYN_LEN = 6
_MAP_W, _MAP_B = range(2)


# The cores whose arrays (to_arrays) this module can stream without torch: what the ONNX backend runs.
STREAMED_KINDS = (
    "cfc",
    "ltc",
    "liquid_s4",
    "mlp",
    "lstm",
    "gru",
)  # what from_arrays rebuilds: the ONNX backend's cores


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
    z = work[: 4 * n]
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
        _lstm_update(x, state, n_in, n_state, p, t[_H_LSTM], work)
    # work: [z (max cols) | g (max 4 units) | lstm scratch shares the front]
    max_cols = t[_H_MAX_COLS]
    z = work[:max_cols]
    g = work[max_cols:]
    inp_off = -1  # -1: the layer input is x; otherwise state[inp_off : inp_off + in_dim]
    for layer in range(n_layers):
        row = _HEADER_LEN + layer * _ROW_LEN
        in_dim, units, s_off = t[row + _ROW_IN], t[row + _ROW_UNITS], t[row + _ROW_STATE]
        w_off, b_off = t[row + _ROW_W], t[row + _ROW_B]
        for k in range(in_dim):
            z[k] = x[k] if inp_off < 0 else state[inp_off + k]
        for k in range(units):
            z[in_dim + k] = state[s_off + k]
        cols = in_dim + units
        if n_backbone > 0:
            # Backbone layers: one record each after the layer rows.
            for bl in range(n_backbone):
                rec = _HEADER_LEN + n_layers * _ROW_LEN + bl * _BACKBONE_LEN
                rows, bcols = t[rec + _BB_ROWS], t[rec + _BB_COLS]
                _matvec(p, t[rec + _BB_W], rows, bcols, z, t[rec + _BB_B], g)
                for r in range(rows):
                    z[r] = _activate(g[r], act)
                cols = rows
        if mode == 1:  # pure
            _matvec(p, w_off, units, cols, z, b_off, g)
            tau_off, a_off = t[row + _ROW_TAU], t[row + _ROW_A]
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
    last = _HEADER_LEN + (n_layers - 1) * _ROW_LEN
    units, s_off = t[last + _ROW_UNITS], t[last + _ROW_STATE]
    if proj > 0:
        _matvec(p, t[_H_PROJ_W], proj, units, state[s_off : s_off + units], t[_H_PROJ_B], out)
    else:
        for j in range(min(units, out.size)):  # from_module refuses a mismatch; never past `out`
            out[j] = state[s_off + j]


class _Packer:
    """Appends float64 blocks to one flat parameter vector and hands back their offsets."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def add(self, array) -> int:
        if hasattr(array, "detach"):  # a torch tensor (torch is imported only by from_module's callers)
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
    of dt (the "liquid" part: it moves with the input; NaN for a discrete cell, which has none).
    Every step runs `_check` first: the kernels index without bounds checks."""

    input_size: int
    state_len: int
    out: np.ndarray

    def initial_state(self) -> np.ndarray:
        return np.zeros(self.state_len, dtype=np.float64)

    def to_arrays(self) -> dict:
        """Everything the kernel needs, as plain numbers and lists (JSON; float64 repr is exact):
        how an exported model carries its core to a runtime without torch (`from_arrays`)."""
        raise NotImplementedError

    ARRAYS: tuple[str, ...] = ()  # the float64 arrays that to_arrays writes by name (shape and data)

    def _named_arrays(self) -> dict:
        return {
            k: {"shape": list(getattr(self, k).shape), "data": getattr(self, k).ravel().tolist()} for k in self.ARRAYS
        }

    @classmethod
    def _arrays_of(cls, d: dict) -> dict[str, np.ndarray]:
        return {
            k: np.ascontiguousarray(np.array(d[k]["data"], dtype=np.float64).reshape(d[k]["shape"])) for k in cls.ARRAYS
        }

    @staticmethod
    def from_arrays(data: dict) -> FusedStep:
        kinds = {
            "cfc": FusedCfC,
            "ltc": FusedLTC,
            "liquid_s4": FusedLiquidS4,
            "mlp": FusedFeedforward,
            "lstm": FusedRecurrent,
            "gru": FusedRecurrent,
        }
        if data.get("kind") not in kinds:
            raise ValueError(f"no fused kernel of kind {data.get('kind')!r}; known: {sorted(kinds)}")
        return kinds[data["kind"]]._from_arrays(data)

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

    def __init__(
        self,
        params: np.ndarray,
        table: np.ndarray,
        input_size: int,
        state_size: int,
        mixed: bool,
        out_size: int,
        work_size: int,
    ) -> None:
        self.params = params
        self.table = table
        self.input_size = input_size
        self.state_size = state_size
        self.state_len = state_size * (2 if mixed else 1)
        self.out = np.zeros(out_size, dtype=np.float64)
        self.tau = np.zeros(state_size, dtype=np.float64)
        self.work = np.zeros(work_size, dtype=np.float64)

    def to_arrays(self) -> dict:
        return {
            "kind": "cfc",
            "params": self.params.tolist(),
            "table": self.table.tolist(),
            "input_size": self.input_size,
            "state_size": self.state_size,
            "mixed": self.state_len != self.state_size,
            "out_size": int(self.out.size),
            "work_size": int(self.work.size),
        }

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedCfC:
        return cls(
            np.array(d["params"], dtype=np.float64),
            np.array(d["table"], dtype=np.int64),
            int(d["input_size"]),
            int(d["state_size"]),
            bool(d["mixed"]),
            int(d["out_size"]),
            int(d["work_size"]),
        )

    @classmethod
    def from_module(cls, cfc) -> FusedCfC:
        import torch

        packer = _Packer()
        packer.add(np.zeros(1))  # offset 0 stays unused so that 0 can mean "none"
        cell = cfc.rnn_cell
        cells = list(cell._layers) if cfc.wired else [cell]
        table = np.zeros(_HEADER_LEN + len(cells) * _ROW_LEN + _BACKBONE_ROOM * _BACKBONE_LEN, dtype=np.int64)
        table[_H_LAYERS] = len(cells)
        table[_H_MODE] = MODE_IDS[cfc.mode]
        table[_H_MIXED] = int(cfc.use_mixed)
        table[_H_IN] = cfc.input_size
        table[_H_STATE] = cfc.state_size
        max_cols, max_rows = 1, 1
        in_dim, s_off = cfc.input_size, 0
        for index, c in enumerate(cells):
            row = _HEADER_LEN + index * _ROW_LEN
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
            table[row + _ROW_IN] = in_dim
            table[row + _ROW_UNITS] = units
            table[row + _ROW_STATE] = s_off
            table[row + _ROW_W] = packer.add(w)
            table[row + _ROW_B] = packer.add(b)
            if c.mode == "pure":
                table[row + _ROW_TAU] = packer.add(c.w_tau.reshape(-1))
                table[row + _ROW_A] = packer.add(c.A.reshape(-1))
            max_cols = max(max_cols, in_dim + units, w.shape[1])
            max_rows = max(max_rows, w.shape[0])
            in_dim, s_off = units, s_off + units
        if not cfc.wired and cell.backbone is not None:
            linears = [m for m in cell.backbone if isinstance(m, torch.nn.Linear)]
            table[_H_BACKBONE] = len(linears)
            table[_H_ACT] = ACT_IDS[cell.backbone_activation]
            # Not wired: one layer row, then the backbone records.
            needed = _HEADER_LEN + _ROW_LEN + _BACKBONE_LEN * len(linears)
            if table.size < needed:
                table = np.concatenate([table, np.zeros(needed - table.size, dtype=np.int64)])
            for k, lin in enumerate(linears):
                rec = _HEADER_LEN + _ROW_LEN + _BACKBONE_LEN * k
                table[rec + _BB_W] = packer.add(lin.weight)
                table[rec + _BB_B] = packer.add(lin.bias)
                table[rec + _BB_ROWS] = lin.out_features
                table[rec + _BB_COLS] = lin.in_features
                max_cols = max(max_cols, lin.in_features, lin.out_features)
                max_rows = max(max_rows, lin.out_features)
        out_size = cfc.out_features
        if cfc.proj_size is None and cells[-1].hidden_size != out_size:
            # The kernel writes the last layer's neurons as the output (ncps does the same: a
            # FullyConnected wiring's CfC outputs every neuron, not output_dim of them).
            raise ValueError(
                f"the CfC's last layer has {cells[-1].hidden_size} neurons but it declares "
                f"{out_size} outputs (a wiring without a motor layer of that size): not streamable"
            )
        if cfc.proj_size is not None:
            table[_H_PROJ] = cfc.proj_size
            table[_H_PROJ_W] = packer.add(cfc.fc.weight)
            table[_H_PROJ_B] = packer.add(cfc.fc.bias)
        if cfc.use_mixed:
            table[_H_LSTM] = _pack_lstm(packer, cfc.lstm)
            max_rows = max(max_rows, 4 * cfc.state_size)
        table[_H_MAX_COLS] = max_cols
        return cls(packer.vector(), table, cfc.input_size, cfc.state_size, cfc.use_mixed, out_size, max_cols + max_rows)

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        cfc_step(x, state, float(dt), self.params, self.table, self.out, self.tau, self.work)
        return self.out, state


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


# --- Liquid-S4 (nets/liquid_s4.py: the module, its equations and its training kernel) ------------
_GELU_K = math.sqrt(2.0 / math.pi)


@numba.njit(cache=True)
def liquid_s4_step(
    x, state, dt, w_in, b_in, scale, a_re, a_im, b_re, b_im, c_re, c_im, d, w_out, b_out, liquid, out, mode_tau, work
):
    """One Liquid-S4 step in place on state = [z | Re xi | Im xi]; z also goes to `out`, each mode's
    time constant 1 / (s |Re lambda|) at this input to `mode_tau`."""
    n_ch, n_modes = a_re.shape
    n_in = x.shape[0]
    units = out.shape[0]
    j_all = n_ch * n_modes
    y = work[:n_ch]
    g = work[n_ch : n_ch + 2 * units]
    for h in range(n_ch):
        u = b_in[h]
        for k in range(n_in):
            u += w_in[h, k] * x[k]
        phi = math.tanh(u) if liquid else 0.0
        s = scale[h]
        acc = d[h] * u
        for m in range(n_modes):
            lr = a_re[h, m] + b_re[h, m] * phi
            li = a_im[h, m] + b_im[h, m] * phi
            zr = s * lr * dt
            zi = s * li * dt
            ea = math.exp(zr)
            cz, sz = math.cos(zi), math.sin(zi)
            er, ei = ea * cz, ea * sz
            half = math.sin(0.5 * zi)
            em1r = math.expm1(zr) * cz - 2.0 * half * half  # Re(E - 1) without cancellation
            den = lr * lr + li * li
            qr = (em1r * lr + ei * li) / den  # (E - 1) / lambda
            qi = (ei * lr - em1r * li) / den
            fr = (qr * b_re[h, m] - qi * b_im[h, m]) * u
            fi = (qr * b_im[h, m] + qi * b_re[h, m]) * u
            j = units + h * n_modes + m
            pr, pi = state[j], state[j + j_all]
            nr = er * pr - ei * pi + fr
            ni = er * pi + ei * pr + fi
            state[j] = nr
            state[j + j_all] = ni
            acc += c_re[h, m] * nr - c_im[h, m] * ni
            mode_tau[h * n_modes + m] = 1.0 / (s * -lr)
        y[h] = 0.5 * acc * (1.0 + math.tanh(_GELU_K * (acc + 0.044715 * acc * acc * acc)))  # GELU (tanh form)
    for o in range(2 * units):
        acc = b_out[o]
        for h in range(n_ch):
            acc += w_out[o, h] * y[h]
        g[o] = acc
    for f in range(units):
        v = g[f] * _sigmoid(g[units + f])  # GLU
        state[f] = v
        out[f] = v


class FusedLiquidS4(FusedStep):
    """Batch-1 streaming step of a LiquidS4 (float64, allocation-free after construction).

    `tau` is NaN: the readout's features are not ODE states. `mode_tau` holds each mode's
    effective (liquid) time constant at the last step, in the units of dt."""

    ARRAYS = ("w_in", "b_in", "scale", "a_re", "a_im", "b_re", "b_im", "c_re", "c_im", "d", "w_out", "b_out")

    def __init__(self, arrays: dict[str, np.ndarray], liquid: bool) -> None:
        for name in self.ARRAYS:
            setattr(self, name, np.ascontiguousarray(arrays[name], dtype=np.float64))
        self.liquid = bool(liquid)
        channels, modes = self.a_re.shape
        self.input_size = self.w_in.shape[1]
        self.state_size = self.w_out.shape[0] // 2
        self.state_len = self.state_size + 2 * channels * modes
        self.out = np.zeros(self.state_size, dtype=np.float64)
        self.tau = np.full(self.state_size, np.nan)
        self.mode_tau = np.zeros(channels * modes, dtype=np.float64)
        self.work = np.zeros(channels + 2 * self.state_size, dtype=np.float64)

    @classmethod
    def from_module(cls, core) -> FusedLiquidS4:
        import torch  # a LiquidS4 module's weights; the runtime without torch uses _from_arrays

        with torch.no_grad():
            arrays = {k: v.detach().cpu().numpy() for k, v in core.continuous_parameters(torch.float64).items()}
        arrays.update(
            w_in=core.in_proj.weight.detach().cpu().double().numpy(),
            b_in=core.in_proj.bias.detach().cpu().double().numpy(),
            w_out=core.out_proj.weight.detach().cpu().double().numpy(),
            b_out=core.out_proj.bias.detach().cpu().double().numpy(),
        )
        return cls(arrays, core.liquid)

    def to_arrays(self) -> dict:
        return {"kind": "liquid_s4", "liquid": self.liquid, **self._named_arrays()}

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedLiquidS4:
        return cls(cls._arrays_of(d), bool(d["liquid"]))

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        liquid_s4_step(
            x,
            state,
            float(dt),
            self.w_in,
            self.b_in,
            self.scale,
            self.a_re,
            self.a_im,
            self.b_re,
            self.b_im,
            self.c_re,
            self.c_im,
            self.d,
            self.w_out,
            self.b_out,
            self.liquid,
            self.out,
            self.mode_tau,
            self.work,
        )
        return self.out, state


# --- the feedforward baseline (nets/feedforward.py: the module) ----------------------------------
FF_ACTIVATIONS = ("relu", "tanh", "silu")  # hidden layers (ids from ACT_IDS); the last layer is tanh

# One row of the layer table per Linear, in order: where its weight (rows x cols, row-major) and
# bias start in the flat float64 parameter vector, and its shape.
_L_ROWS, _L_COLS, _L_W, _L_B = range(4)


@numba.njit(cache=True)
def mlp_step(x, dt, time_input, p, table, act, work, state, out):
    """One step: out = the MLP of [x (, dt / DT_SCALE)], also written to state (the readout reads
    it there). work (2, widest layer) holds the layers' inputs and outputs in turn."""
    n_in = x.shape[0]
    for k in range(n_in):
        work[1, k] = x[k]
    if time_input:
        work[1, n_in] = dt / DT_SCALE
    n_layers = table.shape[0]
    for layer in range(n_layers):
        rows, cols = table[layer, _L_ROWS], table[layer, _L_COLS]
        w_off, b_off = table[layer, _L_W], table[layer, _L_B]
        src, dst = (layer + 1) % 2, layer % 2
        last = layer == n_layers - 1
        for r in range(rows):
            acc = p[b_off + r]
            base = w_off + r * cols
            for k in range(cols):
                acc += p[base + k] * work[src, k]
            if last:
                out[r] = math.tanh(acc)
            else:
                work[dst, r] = _activate(acc, act)
    for j in range(out.shape[0]):
        state[j] = out[j]


class FusedFeedforward(FusedStep):
    """Batch-1 streaming step of a Feedforward core (float64, allocation-free after construction).

    `tau` is NaN: a memoryless map has no time constant."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str, time_input: bool) -> None:
        if activation not in FF_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FF_ACTIVATIONS}, got {activation!r}")
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64) for b in biases]
        self.activation, self.time_input = activation, bool(time_input)
        self.act = ACT_IDS[activation]
        table, chunks, offset = [], [], 0
        for w, b in zip(self.weights, self.biases, strict=True):
            table.append((w.shape[0], w.shape[1], offset, offset + w.size))
            chunks += [w.ravel(), b]
            offset += w.size + b.size
        self.p = np.concatenate(chunks)
        self.table = np.array(table, dtype=np.int64)
        self.input_size = self.weights[0].shape[1] - int(self.time_input)
        self.state_size = self.state_len = self.weights[-1].shape[0]
        self.out = np.zeros(self.state_size, dtype=np.float64)
        self.tau = np.full(self.state_size, np.nan)
        self.work = np.zeros((2, max(max(w.shape) for w in self.weights)), dtype=np.float64)

    @classmethod
    def from_module(cls, core) -> FusedFeedforward:
        as64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        return cls(
            [as64(layer.weight) for layer in core.layers],
            [as64(layer.bias) for layer in core.layers],
            core.activation,
            core.time_input,
        )

    def to_arrays(self) -> dict:
        return {
            "kind": "mlp",
            "activation": self.activation,
            "time_input": self.time_input,
            "weights": [{"shape": list(w.shape), "data": w.ravel().tolist()} for w in self.weights],
            "biases": [b.tolist() for b in self.biases],
        }

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedFeedforward:
        weights = [np.array(w["data"], dtype=np.float64).reshape(w["shape"]) for w in d["weights"]]
        return cls(
            weights, [np.array(b, dtype=np.float64) for b in d["biases"]], d["activation"], bool(d["time_input"])
        )

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        mlp_step(x, float(dt), self.time_input, self.p, self.table, self.act, self.work, state, self.out)
        return self.out, state


# --- the LSTM and GRU baselines (nets/recurrent.py: the modules) ------------------------------------
@numba.njit(cache=True)
def _gates(w_ih, b_ih, w_hh, b_hh, z, h, gates_x, gates_h):
    rows, cols = w_ih.shape
    n = w_hh.shape[1]
    for r in range(rows):
        acc = b_ih[r]
        for k in range(cols):
            acc += w_ih[r, k] * z[k]
        gates_x[r] = acc
        acc = b_hh[r]
        for k in range(n):
            acc += w_hh[r, k] * h[k]
        gates_h[r] = acc


@numba.njit(cache=True)
def lstm_step(z, state, w_ih, b_ih, w_hh, b_hh, gx, gh):
    """nn.LSTMCell in place: state[:n] is h, state[n:] is c."""
    n = w_hh.shape[1]
    _gates(w_ih, b_ih, w_hh, b_hh, z, state[:n], gx, gh)
    for j in range(n):
        i = _sigmoid(gx[j] + gh[j])
        f = _sigmoid(gx[n + j] + gh[n + j])
        g = math.tanh(gx[2 * n + j] + gh[2 * n + j])
        o = _sigmoid(gx[3 * n + j] + gh[3 * n + j])
        c = f * state[n + j] + i * g
        state[n + j] = c
        state[j] = o * math.tanh(c)


@numba.njit(cache=True)
def gru_step(z, state, w_ih, b_ih, w_hh, b_hh, gx, gh):
    """nn.GRUCell in place on state (h)."""
    n = w_hh.shape[1]
    _gates(w_ih, b_ih, w_hh, b_hh, z, state, gx, gh)
    for j in range(n):
        r = _sigmoid(gx[j] + gh[j])
        u = _sigmoid(gx[n + j] + gh[n + j])
        cand = math.tanh(gx[2 * n + j] + r * gh[2 * n + j])
        state[j] = (1.0 - u) * cand + u * state[j]


class FusedRecurrent(FusedStep):
    """Batch-1 streaming step of a Recurrent core (float64, allocation-free after construction).

    `tau` is NaN: a discrete cell has no time constant to report."""

    ARRAYS = ("w_ih", "b_ih", "w_hh", "b_hh")

    def __init__(self, arrays: dict[str, np.ndarray], cell: str, time_input: bool) -> None:
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be lstm or gru, got {cell!r}")
        for name in self.ARRAYS:
            setattr(self, name, np.ascontiguousarray(arrays[name], dtype=np.float64))
        self.cell, self.time_input = cell, bool(time_input)
        self.kernel = lstm_step if cell == "lstm" else gru_step
        self.state_size = self.w_hh.shape[1]
        self.input_size = self.w_ih.shape[1] - int(self.time_input)
        self.state_len = self.state_size * (2 if cell == "lstm" else 1)
        self.z = np.zeros(self.w_ih.shape[1], dtype=np.float64)
        self.gx = np.zeros(self.w_ih.shape[0], dtype=np.float64)
        self.gh = np.zeros(self.w_ih.shape[0], dtype=np.float64)
        self.tau = np.full(self.state_size, np.nan)

    @classmethod
    def from_module(cls, core) -> FusedRecurrent:
        cell = core.rnn_cell
        as64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        return cls(
            {
                "w_ih": as64(cell.weight_ih),
                "b_ih": as64(cell.bias_ih),
                "w_hh": as64(cell.weight_hh),
                "b_hh": as64(cell.bias_hh),
            },
            core.cell,
            core.time_input,
        )

    def to_arrays(self) -> dict:
        return {"kind": self.cell, "time_input": self.time_input, **self._named_arrays()}

    @classmethod
    def _from_arrays(cls, d: dict) -> FusedRecurrent:
        return cls(cls._arrays_of(d), d["kind"], bool(d["time_input"]))

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        self._check(x, state, dt)
        self.z[: self.input_size] = x
        if self.time_input:
            self.z[-1] = dt / DT_SCALE
        self.kernel(self.z, state, self.w_ih, self.b_ih, self.w_hh, self.b_hh, self.gx, self.gh)
        return state[: self.state_size], state
