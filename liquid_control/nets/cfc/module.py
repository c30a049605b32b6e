"""Closed-form continuous-time (CfC) networks (Hasani et al. 2022, Nature Machine Intelligence).

The cell solves the liquid ODE in closed form instead of unrolling a solver:

    x(t) = sigma(-f(x, I) t) * g(x, I) + (1 - sigma(-f(x, I) t)) * h(x, I)       (paper eq. 10)

implemented as in ncps 1.0.1 with `ff1` = g, `ff2` = h and the time gate sigma(t_a * t + t_b).
Same constructor arguments and `state_dict()` keys as `ncps.torch.CfC`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base import LiquidRNN
from ..wirings import Wiring

MODES = ("default", "pure", "no_gate")


class LeCun(nn.Module):
    """LeCun's scaled tanh, 1.7159 tanh(0.666 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(0.666 * x)


ACTIVATIONS = {
    "lecun_tanh": LeCun,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


class CfCCell(nn.Module):
    """One CfC step on (batch, features) inputs, with an optional backbone and sparsity mask."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: str = "default",
        backbone_activation: str = "lecun_tanh",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_dropout: float = 0.0,
        sparsity_mask: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown CfC mode {mode!r}, expected one of {MODES}")
        if backbone_activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {backbone_activation!r}, expected one of {sorted(ACTIVATIONS)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.mode = mode
        self.backbone_activation = backbone_activation
        self.backbone_layers = backbone_layers
        # A parameter (not a buffer) without gradient: that is where ncps keeps it in state_dict.
        self.sparsity_mask = (
            None
            if sparsity_mask is None
            else nn.Parameter(torch.from_numpy(np.abs(sparsity_mask.T).astype(np.float32)), requires_grad=False)
        )
        self.backbone = None
        if backbone_layers > 0:
            act = ACTIVATIONS[backbone_activation]
            layers: list[nn.Module] = [nn.Linear(input_size + hidden_size, backbone_units), act()]
            for _ in range(1, backbone_layers):
                layers += [nn.Linear(backbone_units, backbone_units), act()]
                # ncps puts dropout after the 2nd and later layers only; the Sequential indices
                # (and so the state_dict keys) depend on it.
                if backbone_dropout > 0.0:
                    layers.append(nn.Dropout(backbone_dropout))
            self.backbone = nn.Sequential(*layers)
        cat_shape = hidden_size + input_size if backbone_layers == 0 else backbone_units
        self.ff1 = nn.Linear(cat_shape, hidden_size)
        if mode == "pure":
            self.w_tau = nn.Parameter(torch.zeros(1, hidden_size))
            self.A = nn.Parameter(torch.ones(1, hidden_size))
        else:
            self.ff2 = nn.Linear(cat_shape, hidden_size)
            self.time_a = nn.Linear(cat_shape, hidden_size)
            self.time_b = nn.Linear(cat_shape, hidden_size)
        for w in self.parameters():
            if w.dim() == 2 and w.requires_grad:
                nn.init.xavier_uniform_(w)

    def _masked(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.sparsity_mask is None:
            return layer(x)
        return F.linear(x, layer.weight * self.sparsity_mask, layer.bias)

    def forward(self, input: torch.Tensor, hx: torch.Tensor, ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([input, hx], 1)
        if self.backbone is not None:
            x = self.backbone(x)
        ff1 = self._masked(self.ff1, x)
        if self.mode == "pure":
            # Direct solution of the liquid ODE (paper eq. 3 approximation).
            new_hidden = -self.A * torch.exp(-ts * (torch.abs(self.w_tau) + torch.abs(ff1))) * ff1 + self.A
        else:
            ff1 = torch.tanh(ff1)
            ff2 = torch.tanh(self._masked(self.ff2, x))
            t_interp = torch.sigmoid(self.time_a(x) * ts + self.time_b(x))
            if self.mode == "no_gate":
                new_hidden = ff1 + t_interp * ff2
            else:
                new_hidden = ff1 * (1.0 - t_interp) + t_interp * ff2
        return new_hidden, new_hidden


class WiredCfCCell(nn.Module):
    """A CfC over a wiring: one CfCCell per wiring layer, masked by the wiring's synapses."""

    def __init__(self, input_size: int | None, wiring: Wiring, mode: str = "default") -> None:
        super().__init__()
        if input_size is not None:
            wiring.build(input_size)
        if not wiring.is_built():
            raise ValueError("the wiring has no input size: pass input_size or call wiring.build()")
        self._wiring = wiring
        self._layers: list[CfCCell] = []
        in_features = wiring.input_dim
        for index in range(wiring.num_layers):
            neurons = wiring.get_neurons_of_layer(index)
            if index == 0:
                mask = wiring.sensory_adjacency_matrix[:, neurons]
            else:
                previous = wiring.get_neurons_of_layer(index - 1)
                mask = wiring.adjacency_matrix[:, neurons][previous, :]
            # Within a layer the recurrence is dense (as in ncps).
            mask = np.concatenate([mask, np.ones((len(neurons), len(neurons)))], axis=0)
            cell = CfCCell(
                in_features,
                len(neurons),
                mode,
                backbone_activation="lecun_tanh",
                backbone_units=0,
                backbone_layers=0,
                backbone_dropout=0.0,
                sparsity_mask=mask,
            )
            self.register_module(f"layer_{index}", cell)
            self._layers.append(cell)
            in_features = len(neurons)

    @property
    def layer_sizes(self) -> list[int]:
        return [len(self._wiring.get_neurons_of_layer(i)) for i in range(self._wiring.num_layers)]

    @property
    def state_size(self) -> int:
        return self._wiring.units

    @property
    def output_size(self) -> int:
        return self._wiring.output_dim

    def forward(self, input: torch.Tensor, hx: torch.Tensor, ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.split(hx, self.layer_sizes, dim=1)
        new_states = []
        h = input
        for cell, state in zip(self._layers, states, strict=True):
            h, _ = cell(h, state, ts)
            new_states.append(h)
        return h, torch.cat(new_states, dim=1)


class CfC(LiquidRNN):
    """A CfC network over sequences, fully connected (`units` an int) or wired (a Wiring).

    >>> rnn = CfC(20, AutoNCP(19, 2))
    >>> y, h = rnn(torch.randn(4, 50, 20), timespans=torch.rand(4, 50))
    """

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        proj_size: int | None = None,
        return_sequences: bool = True,
        batch_first: bool = True,
        mixed_memory: bool = False,
        mode: str = "default",
        activation: str = "lecun_tanh",
        backbone_units: int | None = None,
        backbone_layers: int | None = None,
        backbone_dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.wiring_or_units = units
        self.proj_size = proj_size
        self.batch_first = batch_first
        self.return_sequences = return_sequences
        self.mode = mode
        self.activation = activation
        if isinstance(units, Wiring):
            for name, value in (
                ("backbone_units", backbone_units),
                ("backbone_layers", backbone_layers),
                ("backbone_dropout", backbone_dropout),
            ):
                if value is not None:
                    raise ValueError(f"{name} cannot be used with a wiring")
            self.wired = True
            self.wiring = units
            self.state_size = units.units
            self.output_size = units.output_dim
            self.rnn_cell = WiredCfCCell(input_size, units, mode)
        else:
            self.wired = False
            self.wiring = None
            self.backbone_units = 128 if backbone_units is None else backbone_units
            self.backbone_layers = 1 if backbone_layers is None else backbone_layers
            self.backbone_dropout = 0.0 if backbone_dropout is None else backbone_dropout
            self.state_size = units
            self.output_size = units
            self.rnn_cell = CfCCell(
                input_size,
                units,
                mode,
                activation,
                self.backbone_units,
                self.backbone_layers,
                self.backbone_dropout,
            )
        self._init_memory(input_size, mixed_memory)
        self.fc = nn.Identity() if proj_size is None else nn.Linear(self.output_size, proj_size)

    @property
    def out_features(self) -> int:
        """Width of the network's output (proj_size when projected)."""
        return self.output_size if self.proj_size is None else self.proj_size

    def _cell(self, x, h, ts):
        return self.rnn_cell(x, h, ts)

    def _readout(self, out: torch.Tensor) -> torch.Tensor:
        return self.fc(out)

    def _build_fused(self):
        from .stream import FusedCfC

        return FusedCfC.from_module(self)

    @property
    def _masked_per_synapse(self) -> int:
        return 1 if self.mode == "pure" else 2

    def config(self) -> dict[str, Any]:
        options = {"mode": self.mode, "mixed_memory": self.use_mixed}
        if self.proj_size is not None:
            options["proj_size"] = self.proj_size
        if not self.wired:
            options.update(
                activation=self.activation,
                backbone_units=self.backbone_units,
                backbone_layers=self.backbone_layers,
                backbone_dropout=self.backbone_dropout,
            )
        return self._config("cfc", options)

    def _kernel_support(self) -> str | None:
        """None when the training kernel (`train.py`) computes this CfC's `_cell` loop, else why not."""
        from ..kernels import MODE_IDS
        from ..lstm import LSTMCell

        if type(self)._cell is not CfC._cell:
            return "a subclass with its own _cell"
        cell = self.rnn_cell
        if self.wired:
            if type(cell) is not WiredCfCCell or any(type(c) is not CfCCell for c in cell._layers):
                return "a replaced cell module"
        else:
            if type(cell) is not CfCCell:
                return "a replaced cell module"
            if cell.backbone is not None:
                for m in cell.backbone:
                    if isinstance(m, nn.Dropout):
                        if m.p > 0.0 and m.training:
                            return "backbone dropout in training mode (random masks)"
                    elif type(m) is not nn.Linear and type(m) is not ACTIVATIONS[cell.backbone_activation]:
                        return f"an unexpected backbone layer {type(m).__name__}"
                    elif isinstance(m, nn.GELU) and m.approximate != "none":
                        return "tanh-approximated GELU"
        if self.mode not in MODE_IDS:
            return f"mode {self.mode!r}"
        if self.use_mixed and type(self.lstm) is not LSTMCell:
            return "a replaced memory cell"
        return None

    def _sequence_kernel(self):
        from .train import kernel

        return kernel(self)
