"""The CfC's streaming step (batch 1, float64, torch-free): `cfc_step` over the table of `layout.py`,
and `FusedCfC`, which a CfC module builds with `fused()` and an export carries as arrays."""

from __future__ import annotations

import math

import numba
import numpy as np

from ..kernels import _activate, _lstm_update, _matvec, _sigmoid
from ..stream import FusedStep, Packer
from .layout import (
    _BACKBONE_LEN,
    _BB_B,
    _BB_COLS,
    _BB_ROWS,
    _BB_W,
    _H_ACT,
    _H_BACKBONE,
    _H_IN,
    _H_LAYERS,
    _H_LSTM,
    _H_MAX_COLS,
    _H_MIXED,
    _H_MODE,
    _H_PROJ,
    _H_PROJ_B,
    _H_PROJ_W,
    _H_STATE,
    _HEADER_LEN,
    _ROW_A,
    _ROW_B,
    _ROW_IN,
    _ROW_LEN,
    _ROW_STATE,
    _ROW_TAU,
    _ROW_UNITS,
    _ROW_W,
    cells,
    pack,
)


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
        packer = Packer()
        packer.add(np.zeros(1))  # offset 0 stays unused so that 0 can mean "none"
        table, sizes = pack(cfc, packer.add)
        last = cells(cfc)[-1]
        out_size = cfc.out_features
        if cfc.proj_size is None and last.hidden_size != out_size:
            # The kernel writes the last layer's neurons as the output (ncps does the same: a
            # FullyConnected wiring's CfC outputs every neuron, not output_dim of them).
            raise ValueError(
                f"the CfC's last layer has {last.hidden_size} neurons but it declares "
                f"{out_size} outputs (a wiring without a motor layer of that size): not streamable"
            )
        rows = max(sizes["max_rows"], 4 * cfc.state_size if cfc.use_mixed else 1)  # the LSTM's gates share g
        work = sizes["max_cols"] + rows
        return cls(packer.vector(), table, cfc.input_size, cfc.state_size, cfc.use_mixed, out_size, work)

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        self._check(x, state, dt)
        cfc_step(x, state, float(dt), self.params, self.table, self.out, self.tau, self.work)
        return self.out, state
