"""Liquid time-constant (LTC) networks (Hasani et al. 2021, AAAI).

Each neuron follows the liquid ODE

    cm dv/dt = gleak (vleak - v) + sum_j w_j sigma(sigma_j (v_j - mu_j)) (erev_j - v)

solved with the fused semi-implicit Euler step of the paper, unfolded `ode_unfolds` times per
step. Parameters that must stay positive (w, sensory_w, cm, gleak) go through a softplus when
`implicit_param_constraints` is true, else they are clamped at zero after each optimizer step by
`apply_weight_constraints()`, as in ncps. Same arguments and `state_dict()` keys as `ncps.torch.LTC`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..base import LiquidRNN
from ..wirings import FullyConnected, Wiring

INIT_RANGES = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3, 8),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3, 8),
    "sensory_mu": (0.3, 0.8),
}
MAPPINGS = ("affine", "linear", None)


class LTCCell(nn.Module):
    def __init__(
        self,
        wiring: Wiring,
        in_features: int | None = None,
        input_mapping: str | None = "affine",
        output_mapping: str | None = "affine",
        ode_unfolds: int = 6,
        epsilon: float = 1e-8,
        implicit_param_constraints: bool = False,
    ) -> None:
        super().__init__()
        if in_features is not None:
            wiring.build(in_features)
        if not wiring.is_built():
            raise ValueError("the wiring has no input size: pass in_features or call wiring.build()")
        if ode_unfolds < 1:
            raise ValueError(f"ode_unfolds must be >= 1, got {ode_unfolds}")
        for name, mapping in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if mapping not in MAPPINGS:
                raise ValueError(f"{name} must be one of {MAPPINGS}, got {mapping!r}")
        self._wiring = wiring
        self._input_mapping = input_mapping
        self._output_mapping = output_mapping
        self._ode_unfolds = ode_unfolds
        self._epsilon = epsilon
        self._implicit_param_constraints = implicit_param_constraints
        self.make_positive_fn = nn.Softplus() if implicit_param_constraints else nn.Identity()
        n, s = wiring.units, wiring.input_dim

        def init(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            lo, hi = INIT_RANGES[name]
            return torch.rand(*shape) * (hi - lo) + lo

        # Registration order is ncps's, so seeded initialisations draw the same numbers.
        self.gleak = nn.Parameter(init("gleak", (n,)))
        self.vleak = nn.Parameter(init("vleak", (n,)))
        self.cm = nn.Parameter(init("cm", (n,)))
        self.sigma = nn.Parameter(init("sigma", (n, n)))
        self.mu = nn.Parameter(init("mu", (n, n)))
        self.w = nn.Parameter(init("w", (n, n)))
        self.erev = nn.Parameter(torch.Tensor(wiring.erev_initializer()))
        self.sensory_sigma = nn.Parameter(init("sensory_sigma", (s, n)))
        self.sensory_mu = nn.Parameter(init("sensory_mu", (s, n)))
        self.sensory_w = nn.Parameter(init("sensory_w", (s, n)))
        self.sensory_erev = nn.Parameter(torch.Tensor(wiring.sensory_erev_initializer()))
        self.sparsity_mask = nn.Parameter(torch.Tensor(np.abs(wiring.adjacency_matrix)), requires_grad=False)
        self.sensory_sparsity_mask = nn.Parameter(
            torch.Tensor(np.abs(wiring.sensory_adjacency_matrix)), requires_grad=False
        )
        if input_mapping in ("affine", "linear"):
            self.input_w = nn.Parameter(torch.ones(s))
        if input_mapping == "affine":
            self.input_b = nn.Parameter(torch.zeros(s))
        if output_mapping in ("affine", "linear"):
            self.output_w = nn.Parameter(torch.ones(wiring.output_dim))
        if output_mapping == "affine":
            self.output_b = nn.Parameter(torch.zeros(wiring.output_dim))

    @property
    def state_size(self) -> int:
        return self._wiring.units

    @property
    def sensory_size(self) -> int:
        return self._wiring.input_dim

    @property
    def motor_size(self) -> int:
        return self._wiring.output_dim

    @staticmethod
    def _sigmoid(v_pre: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(sigma * (v_pre.unsqueeze(-1) - mu))

    def _ode_solver(self, inputs: torch.Tensor, state: torch.Tensor, elapsed_time: Any) -> torch.Tensor:
        positive = self.make_positive_fn
        v_pre = state
        # Sensory synapses do not depend on v: computed once per step.
        sensory_w_act = positive(self.sensory_w) * self._sigmoid(inputs, self.sensory_mu, self.sensory_sigma)
        sensory_w_act = sensory_w_act * self.sensory_sparsity_mask
        w_numerator_sensory = torch.sum(sensory_w_act * self.sensory_erev, dim=1)
        w_denominator_sensory = torch.sum(sensory_w_act, dim=1)
        cm_t = positive(self.cm) / (elapsed_time / self._ode_unfolds)
        w_param = positive(self.w)
        gleak = positive(self.gleak)
        for _ in range(self._ode_unfolds):
            w_act = w_param * self._sigmoid(v_pre, self.mu, self.sigma) * self.sparsity_mask
            w_numerator = torch.sum(w_act * self.erev, dim=1) + w_numerator_sensory
            w_denominator = torch.sum(w_act, dim=1) + w_denominator_sensory
            numerator = cm_t * v_pre + gleak * self.vleak + w_numerator
            denominator = cm_t + gleak + w_denominator
            v_pre = numerator / (denominator + self._epsilon)
        return v_pre

    def _map_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._input_mapping in ("affine", "linear"):
            inputs = inputs * self.input_w
        if self._input_mapping == "affine":
            inputs = inputs + self.input_b
        return inputs

    def _map_outputs(self, state: torch.Tensor) -> torch.Tensor:
        output = state[:, : self.motor_size]
        if self._output_mapping in ("affine", "linear"):
            output = output * self.output_w
        if self._output_mapping == "affine":
            output = output + self.output_b
        return output

    def apply_weight_constraints(self) -> None:
        """Clamp the positive parameters at zero (explicit constraints; call after optimizer.step)."""
        if not self._implicit_param_constraints:
            with torch.no_grad():
                for p in (self.w, self.sensory_w, self.cm, self.gleak):
                    p.clamp_(min=0.0)

    def forward(self, inputs: torch.Tensor, states: torch.Tensor, elapsed_time: Any = 1.0):
        next_state = self._ode_solver(self._map_inputs(inputs), states, elapsed_time)
        return self._map_outputs(next_state), next_state


class LTC(LiquidRNN):
    """An LTC network over sequences, fully connected (`units` an int) or wired (a Wiring)."""

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        return_sequences: bool = True,
        batch_first: bool = True,
        mixed_memory: bool = False,
        input_mapping: str | None = "affine",
        output_mapping: str | None = "affine",
        ode_unfolds: int = 6,
        epsilon: float = 1e-8,
        implicit_param_constraints: bool = True,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.wiring_or_units = units
        self.batch_first = batch_first
        self.return_sequences = return_sequences
        self.wired = isinstance(units, Wiring)
        self.wiring = units if self.wired else FullyConnected(units)
        self.rnn_cell = LTCCell(
            wiring=self.wiring,
            in_features=input_size,
            input_mapping=input_mapping,
            output_mapping=output_mapping,
            ode_unfolds=ode_unfolds,
            epsilon=epsilon,
            implicit_param_constraints=implicit_param_constraints,
        )
        self.state_size = self.wiring.units
        self.output_size = self.wiring.output_dim
        self._init_memory(input_size, mixed_memory)

    @property
    def out_features(self) -> int:
        return self.output_size

    def _cell(self, x, h, ts):
        return self.rnn_cell(x, h, ts)

    def apply_weight_constraints(self) -> None:
        self.rnn_cell.apply_weight_constraints()

    def _build_fused(self):
        from .stream import FusedLTC

        return FusedLTC.from_module(self)

    def config(self) -> dict[str, Any]:
        c = self.rnn_cell
        options = {
            "mixed_memory": self.use_mixed,
            "input_mapping": c._input_mapping,
            "output_mapping": c._output_mapping,
            "ode_unfolds": c._ode_unfolds,
            "epsilon": c._epsilon,
            "implicit_param_constraints": c._implicit_param_constraints,
        }
        return self._config("ltc", options)

    def _kernel_support(self) -> str | None:
        """None when the training kernel (`train.py`) computes this LTC's `_cell` loop, else why not."""
        from ..lstm import LSTMCell

        if type(self)._cell is not LTC._cell:
            return "a subclass with its own _cell"
        cell = self.rnn_cell
        if type(cell) is not LTCCell:
            return "a replaced cell module"
        if cell.sparsity_mask.requires_grad or cell.sensory_sparsity_mask.requires_grad:
            return "trainable sparsity masks (the kernel visits only the synapses the mask keeps)"
        if self.use_mixed and type(self.lstm) is not LSTMCell:
            return "a replaced memory cell"
        return None

    def _sequence_kernel(self):
        from .train import kernel

        return kernel(self)
