"""The LSTM and GRU baselines' streaming steps (batch 1, float64, torch-free): `lstm_step`,
`gru_step` and `FusedRecurrent`."""

from __future__ import annotations

import math

import numba
import numpy as np

from ..kernels import DT_SCALE, _sigmoid
from ..stream import FusedStep


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
