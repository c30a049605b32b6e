"""Discrete-time baselines for the liquid cores: LSTM and GRU with the streaming interface of
LiquidRNN (`state_sequence` for training, `fused`/`initial_state`/`step` for running), so a
LiquidPolicy, the controller and the model file take them exactly as they take CfC and LTC.

A plain LSTM or GRU steps once per event and cannot know how much time passed between events;
with `time_input=True` (the default) the elapsed time, divided by `DT_SCALE`, is one more input,
so the baseline sees what the liquid cores see. Weights and gate order are PyTorch's
(`nn.LSTMCell`: i, f, g, o; `nn.GRUCell`: r, z, n), and training runs on those cells.

The streaming step shares its input check (`FusedStep`), its sigmoid and the `fused()` cache
(`StreamingModule`) with the liquid cores, so all cores take and refuse the same input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from .base import StreamingModule
from .fused import FusedStep, _sigmoid

DT_SCALE = 0.01  # seconds: the elapsed-time input is dt / DT_SCALE (about 0.5 at 200 Hz)
CELLS = ("lstm", "gru")


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

    def __init__(self, core: Recurrent) -> None:
        as64 = lambda t: np.ascontiguousarray(t.detach().cpu().double().numpy())  # noqa: E731
        cell = core.rnn_cell
        self.w_ih, self.b_ih = as64(cell.weight_ih), as64(cell.bias_ih)
        self.w_hh, self.b_hh = as64(cell.weight_hh), as64(cell.bias_hh)
        self.kernel = lstm_step if core.cell == "lstm" else gru_step
        self.input_size, self.state_size = core.input_size, core.state_size
        self.state_len = core.state_size * (2 if core.cell == "lstm" else 1)
        self.time_input = core.time_input
        self.z = np.zeros(core.input_size + int(core.time_input), dtype=np.float64)
        self.gx = np.zeros(self.w_ih.shape[0], dtype=np.float64)
        self.gh = np.zeros(self.w_ih.shape[0], dtype=np.float64)
        self.tau = np.full(core.state_size, np.nan)

    def step(self, x: np.ndarray, state: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        self._check(x, state, dt)
        self.z[: self.input_size] = x
        if self.time_input:
            self.z[-1] = dt / DT_SCALE
        self.kernel(self.z, state, self.w_ih, self.b_ih, self.w_hh, self.b_hh, self.gx, self.gh)
        return state[: self.state_size], state


class Recurrent(StreamingModule):
    """An LSTM or GRU core with `units` cells; its output is its hidden state h."""

    wiring = None
    wired = False
    use_mixed = False

    def __init__(self, input_size: int, units: int, cell: str = "lstm", time_input: bool = True) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if input_size < 1 or units < 1:
            raise ValueError(f"input_size and units must be positive, got {input_size} and {units}")
        self.cell, self.time_input = cell, bool(time_input)
        self.input_size = input_size
        self.state_size = self.output_size = self.out_features = units
        cls = nn.LSTMCell if cell == "lstm" else nn.GRUCell
        self.rnn_cell = cls(input_size + int(self.time_input), units)

    def _inputs(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, ts / DT_SCALE], dim=-1) if self.time_input else x

    def state_sequence(self, x: torch.Tensor, timespans: torch.Tensor) -> torch.Tensor:
        """x (B, T, input_size), timespans (B, T) seconds -> hidden state after each step (B, T, units)."""
        b = x.shape[0]
        h = torch.zeros(b, self.state_size, dtype=x.dtype)
        c = torch.zeros_like(h)
        states = []
        for t in range(x.shape[1]):
            z = self._inputs(x[:, t], timespans[:, t].unsqueeze(-1))
            if self.cell == "lstm":
                h, c = self.rnn_cell(z, (h, c))
            else:
                h = self.rnn_cell(z, h)
            states.append(h)
        return torch.stack(states, dim=1)

    def forward(self, input: torch.Tensor, hx: Any = None, timespans: Any = None):
        """(batch, time, features) -> (hidden states, final h), batch first, for parity with the
        liquid cores' sequence API (no initial state: sequences start from zero)."""
        if hx is not None:
            raise ValueError("Recurrent.forward starts from a zero state; pass hx=None")
        ts = torch.ones(input.shape[:2], dtype=input.dtype) if timespans is None else torch.as_tensor(
            timespans, dtype=input.dtype).reshape(input.shape[:2])
        out = self.state_sequence(input, ts)
        return out, out[:, -1]

    def _build_fused(self) -> FusedRecurrent:
        return FusedRecurrent(self)

    def _watched_tensors(self) -> Iterable[torch.Tensor]:
        # One cell with four parameters: walking them on every step is cheap, and it also sees a
        # Parameter object replaced without refresh=True (the liquid cores' snapshot does not).
        return self.parameters()
