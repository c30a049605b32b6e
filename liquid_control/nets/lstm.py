"""The memory cell of `mixed_memory=True` networks (Lechner & Hasani 2020): an LSTM cell run before
the liquid cell on every step. Parameter names follow ncps (`input_map`, `recurrent_map`)."""

from __future__ import annotations

import torch
from torch import nn


class LSTMCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.input_map = nn.Linear(input_size, 4 * hidden_size, bias=True)
        self.recurrent_map = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        for w in self.input_map.parameters():
            if w.dim() == 1:
                nn.init.uniform_(w, -0.1, 0.1)
            else:
                nn.init.xavier_uniform_(w)
        for w in self.recurrent_map.parameters():
            if w.dim() == 1:
                nn.init.uniform_(w, -0.1, 0.1)
            else:
                nn.init.orthogonal_(w)

    def forward(
        self, inputs: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = states
        z = self.input_map(inputs) + self.recurrent_map(h)
        i, ig, fg, og = z.chunk(4, 1)
        # The +1 on the forget gate is ncps's: remember by default at initialisation.
        c = c * torch.sigmoid(fg + 1.0) + torch.tanh(i) * torch.sigmoid(ig)
        h = torch.tanh(c) * torch.sigmoid(og)
        return h, c
