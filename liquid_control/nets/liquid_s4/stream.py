"""Liquid-S4's streaming step (batch 1, float64, torch-free): `liquid_s4_step` and `FusedLiquidS4`."""

from __future__ import annotations

import math

import numba
import numpy as np

from ..kernels import _sigmoid
from ..stream import FusedStep

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
