"""Discrete-time baselines for the liquid cores: LSTM and GRU with the streaming interface of
LiquidRNN (`state_sequence` for training, `fused`/`initial_state`/`step` for running), so a
LiquidPolicy, the controller and the model file take them exactly as they take CfC and LTC.

A plain LSTM or GRU steps once per event and cannot know how much time passed between events;
with `time_input=True` (the default) the elapsed time, divided by `DT_SCALE`, is one more input,
so the baseline sees what the liquid cores see. Weights and gate order are PyTorch's
(`nn.LSTMCell`: i, f, g, o; `nn.GRUCell`: r, z, n), and training runs on those cells.

The streaming step (`FusedRecurrent`, `lstm_step`, `gru_step` in `stream.py`: numpy and numba only,
so the ONNX backend streams these cores without torch) shares its input check (`FusedStep`), its
sigmoid and the `fused()` cache (`StreamingModule`) with the liquid cores, so all cores take and
refuse the same input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..base import StreamingModule
from ..kernels import DT_SCALE  # noqa: F401 - re-exported
from .stream import FusedRecurrent

CELLS = ("lstm", "gru")


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
        ts = (
            torch.ones(input.shape[:2], dtype=input.dtype)
            if timespans is None
            else torch.as_tensor(timespans, dtype=input.dtype).reshape(input.shape[:2])
        )
        out = self.state_sequence(input, ts)
        return out, out[:, -1]

    def config(self) -> dict[str, Any]:
        return {"cell": self.cell, "units": self.state_size, "options": {"time_input": self.time_input}}

    @classmethod
    def from_config(
        cls,
        input_size: int,
        cell: str,
        units: int | None = None,
        wiring: dict | None = None,
        options: dict | None = None,
    ) -> Recurrent:
        return cls(input_size, units, cell=cell, **(options or {}))

    def export_step(self, x: torch.Tensor, state: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        z = self._inputs(x, dt.reshape(1, 1))
        n = self.state_size
        if self.cell == "lstm":
            h, c = self.rnn_cell(z, (state[None, :n], state[None, n:]))
            return torch.cat([h, c], dim=-1)[0]
        return self.rnn_cell(z, state[None])[0]

    def _build_fused(self) -> FusedRecurrent:
        return FusedRecurrent.from_module(self)

    def _watched_tensors(self) -> Iterable[torch.Tensor]:
        # One cell with four parameters: walking them on every step is cheap, and it also sees a
        # Parameter object replaced without refresh=True (the liquid cores' snapshot does not).
        return self.parameters()
