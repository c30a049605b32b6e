"""Liquid-S4 (Hasani, Lechner, Wang, Chahine, Amini, Rus: "Liquid Structural State-Space Models",
ICLR 2023, arXiv:2209.12951) as a policy core: a diagonal (S4D) state-space layer whose state
transition depends on the input, stepped in real, irregular time.

The paper's model is the linearised LTC state-space model, per input channel u:

    dx/dt = [A + B u(t)] x(t) + B u(t),        y(t) = C x(t)  (+ D u(t))

and its bilinear discretisation x_k = (A_bar + B_bar u_k) x_{k-1} + B_bar u_k. Unrolled, the output
is the S4 convolution K_bar * u plus liquid kernels acting on products of inputs: at order 2,
C A_bar^(k-i-1) B_bar^2 u_i u_j terms, the "input correlations". The paper (and its code,
raminmh/liquid-s4, src/models/sequence/ss/s4.py) computes these only in convolution mode and only
approximately: the "KB" kernel (C A_bar^l B_bar^2 convolved with u_k u_{k-1}) and the "PB" kernel
(C B_bar^p times the correlations, the A_bar powers dropped), because an input-dependent transition
is not a time-invariant convolution.

Here there is no convolution (the inputs come at irregular, per-sample times), so nothing forces
the approximation: this module runs the recurrence the kernels approximate, with every correlation
order, solved exactly over each step. What it implements, per channel h and complex mode n, with
the input x_k held over the step of dt_k seconds that ends at event k (as every core here does):

    u_k         = W_in x_k + b_in                                         (H channels)
    lambda_k    = A + B tanh(u_k)                                         (complex, per mode)
    xi_k        = exp(s dt_k lambda_k) xi_{k-1} + (exp(s dt_k lambda_k) - 1) / lambda_k * B u_k
    y_k         = sum_n Re(C xi_k) + D u_k                                (H channels)
    z_k         = GLU(W_out GELU(y_k) + b_out)                            (`units` features)

The xi update is the exact solution of dxi/dt = s [(A + B tanh u) xi + B u] for an input held over
the step: zero-order hold, with the liquid term inside the exponent. Without the liquid term
(liquid=False, or B tanh(u) = 0) it is S4D's ZOH, A_bar = exp(s dt A), B_bar = (A_bar - 1)/A B.
Expanding exp(s dt (A + B tanh u_k)) = A_bar (1 + s dt B tanh u_k + ...) shows the paper's liquid
term: xi_k = A_bar xi_{k-1} + B_bar u_k + s dt_k A_bar B tanh(u_k) xi_{k-1} + ..., and with
xi_{k-1} = B_bar u_{k-1} + ... the order-2 correlation s dt_k A_bar B B_bar u_k u_{k-1}
(the paper's B_bar^2 u_k u_{k-1} with B_bar ~ s dt B); test_liquid_s4 checks that coefficient.

Where this departs from the paper, and why:
  * tanh(u) in the transition instead of u: the paper's linear f = B u makes Re(lambda) unbounded
    in the input, so a large input makes the state grow without bound; a controller must stay
    stable whatever its sensors say. tanh is the reference code's `lcontract="tanh"` option (it
    contracts the correlation term); tanh(u) ~ u for small inputs.
  * Re(A) = -(RHO_MIN + exp(a_log) + |Re B|): with |tanh| < 1, Re(lambda) <= -(RHO_MIN + exp(a_log))
    < 0 for every input, so |exp(s dt lambda)| < 1: stable by construction, for any input and dt.
    Every (A, B) of the paper's model that is stable for all |tanh u| <= 1 is reachable.
  * ZOH on the real dt instead of the bilinear transform on a learned step: exact for held
    inputs, so dt is split exactly: two steps of dt/2 on the same input are one step of dt (the
    whole state update is linear in xi for a held input; test_liquid_s4 checks it). The learned
    log step of S4 becomes `log_step`, a per-channel time scale s = exp(log_step) in 1/s.
  * A single layer, one input projection (the inputs are a handful of features, not a sequence
    model's width), the S4 block's GELU (in its tanh form: ONNX Runtime has no float64 Erf, and the
    exported streaming graph runs in float64) and GLU output mixing, no dropout or normalisation.

What the policy's readout sees: `state_sequence` returns z (batch, time, units), the layer's
output, and `state_size` = units. The streaming state is [z | Re xi | Im xi] (units + 2 H M
float64): the readout reads its first `state_size` entries, as it reads an LSTM's h before c. z is a
function of (xi_k, u_k): it carries no memory of its own.

Initialisation as S4D (Gu, Gupta, Goel, Re 2022, "On the Parameterization and Initialization of
Diagonal State Space Models"): Re A = -1/2, Im A = pi n ("lin", S4D-Lin) or
(N/pi) (N/(2n+1) - 1) with N = 2 modes ("inv", S4D-Inv); C complex normal, D normal, B = 1/4
(B = 1 in S4D; smaller here so that Re A = -1/2 has room for |Re B|: the decay rate moves between
1/4 and 3/4 of s with the input at the start); log_step uniform in log over `rate_range`.

Training (`state_sequence`): torch runs the input projection (u for the whole window) and the
GELU / GLU output; between them one numba call runs the modes over the whole batch and window
(`train.py`: `_sequence_forward`: y = sum Re(C xi) + D u) and its hand-written backward (`_sequence_backward`),
in float64 whatever the module's dtype, with exp, sin and cos in plain arithmetic. The backward
pass, per step (complex, G = dL/dRe + i dL/dIm; E = exp(s dt lambda), Q = (E - 1) / lambda,
xi_k = E xi_{k-1} + Q B u; a = G of xi_k, carried back in time):
    a     = conj(E_{k+1}) a_{k+1} + G_y C*  (+ G of xi_k itself),   G_E = a conj(xi_{k-1}),
    G_Q   = a conj(B u),  G_lambda = G_E conj(s dt E) + G_Q conj((s dt E - Q) / lambda),
    G_sdt = Re(G_E conj(lambda E) + G_Q conj(E)),  G_A += G_lambda,  G_B += tanh(u) G_lambda + u a conj(Q),
    dL/du = Re(a conj(Q) conj(B)) + Re(G_lambda conj(B)) (1 - tanh^2 u) + G_y D,  and s, dt by sdt = s dt.
fused=False runs the reference loop through `_cell` (the same real arithmetic as the streaming
kernel, in torch). Streaming (`fused()`): `liquid_s4_step`, float64, batch 1, in `stream.py`
(torch-free, so the ONNX backend streams this core without torch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import StreamingModule

if TYPE_CHECKING:
    from .stream import FusedLiquidS4

INITS = ("lin", "inv")
RHO_MIN = 1e-3  # the slowest decay rate Re(lambda) may reach, before the time scale s


def _glu(v: torch.Tensor) -> torch.Tensor:
    return F.glu(v, dim=-1)


def _gelu(y: torch.Tensor) -> torch.Tensor:
    return F.gelu(y, approximate="tanh")


class LiquidS4(StreamingModule):
    """A Liquid-S4 core: `channels` input channels of `modes` complex modes each, `units` output
    features (what a policy's readout reads). See the module docstring for the equations.

    liquid=False drops the liquid term (plain S4D with ZOH on the real dt); init "lin" or "inv"
    (S4D-Lin, S4D-Inv); rate_range (1/s): the per-channel time scales s start log-uniform in it
    (with Re A = -1/2, decay rates from rate_range[0] / 2 to rate_range[1] / 2 per second).

    >>> core = LiquidS4(15, units=19, channels=16, modes=8)
    >>> z = core.state_sequence(torch.randn(4, 50, 15), torch.rand(4, 50) * 0.03)   # (4, 50, 19)
    """

    wiring = None
    wired = False
    use_mixed = False
    # The default of state_sequence's `fused` (None: the numba kernel on the CPU unless
    # LIQUID_CONTROL_SEQUENCE=loop; False: the reference loop).
    fused_sequence: bool | None = None

    def __init__(
        self,
        input_size: int,
        units: int = 19,
        channels: int = 16,
        modes: int = 8,
        liquid: bool = True,
        init: str = "lin",
        rate_range: tuple[float, float] = (1.0, 100.0),
    ) -> None:
        super().__init__()
        if min(input_size, units, channels, modes) < 1:
            raise ValueError(
                f"input_size, units, channels and modes must be positive, got "
                f"{input_size}, {units}, {channels}, {modes}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        lo, hi = (float(r) for r in rate_range)
        if not 0.0 < lo <= hi:
            raise ValueError(f"rate_range must be 0 < min <= max (1/s), got {rate_range}")
        self.input_size, self.channels, self.modes, self.liquid = input_size, channels, modes, bool(liquid)
        self.state_size = self.output_size = self.out_features = units
        self.in_proj = nn.Linear(input_size, channels)
        self.log_step = nn.Parameter(torch.empty(channels).uniform_(math.log(lo), math.log(hi)))
        n = torch.arange(modes, dtype=torch.float32)
        a_im = math.pi * n if init == "lin" else (2 * modes / math.pi) * (2 * modes / (2 * n + 1) - 1)
        self.a_im = nn.Parameter(a_im.repeat(channels, 1))
        self.b_re = nn.Parameter(torch.full((channels, modes), 0.25))
        self.b_im = nn.Parameter(torch.zeros(channels, modes))
        # Re A = -1/2 at the start: RHO_MIN + exp(a_log) + |Re B| = 1/2 (|Re B| only when liquid).
        extra = 0.5 - RHO_MIN - (0.25 if self.liquid else 0.0)
        self.a_log = nn.Parameter(torch.full((channels, modes), math.log(extra)))
        self.c_re = nn.Parameter(torch.randn(channels, modes) * math.sqrt(0.5))
        self.c_im = nn.Parameter(torch.randn(channels, modes) * math.sqrt(0.5))
        self.d = nn.Parameter(torch.randn(channels))
        self.out_proj = nn.Linear(channels, 2 * units)

    @property
    def state_len(self) -> int:
        """Length of the streaming state: the units, then Re and Im of every mode."""
        return self.state_size + 2 * self.channels * self.modes

    # --- the continuous-time system ------------------------------------------------------------
    def continuous_parameters(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """scale s (channels,), Re/Im A, Re/Im B, Re/Im C (channels, modes), D (channels,); computed
        in `dtype` from the weights when given (the streaming kernel takes them in float64)."""
        w = {
            name: (t if dtype is None else t.to(dtype))
            for name, t in (
                ("log_step", self.log_step),
                ("a_log", self.a_log),
                ("a_im", self.a_im),
                ("b_re", self.b_re),
                ("b_im", self.b_im),
                ("c_re", self.c_re),
                ("c_im", self.c_im),
                ("d", self.d),
            )
        }
        a_re = -(RHO_MIN + torch.exp(w["a_log"]) + (w["b_re"].abs() if self.liquid else 0.0))
        return {
            "scale": torch.exp(w["log_step"]),
            "a_re": a_re,
            "a_im": w["a_im"],
            "b_re": w["b_re"],
            "b_im": w["b_im"],
            "c_re": w["c_re"],
            "c_im": w["c_im"],
            "d": w["d"],
        }

    def _transition(self, u: torch.Tensor, dt: torch.Tensor, p: dict[str, torch.Tensor]):
        """E = exp(s dt lambda(u)) and F = (E - 1) / lambda * B u, real and imaginary parts, for u
        (..., channels) and dt broadcastable to (..., 1): each (..., channels, modes)."""
        phi = torch.tanh(u)[..., None] if self.liquid else torch.zeros_like(u)[..., None]
        lr = p["a_re"] + p["b_re"] * phi
        li = p["a_im"] + p["b_im"] * phi
        sdt = p["scale"][:, None] * dt[..., None]
        zr, zi = sdt * lr, sdt * li
        ea, cz, sz = torch.exp(zr), torch.cos(zi), torch.sin(zi)
        er, ei = ea * cz, ea * sz
        # Re(E - 1) without cancellation, with expm1(zr) = 2 tanh(zr/2) / (1 - tanh(zr/2)) (zr <= 0):
        # torch's ONNX exporter has neither expm1 nor sinh
        th = torch.tanh(0.5 * zr)
        em1r = 2.0 * th / (1.0 - th) * cz - 2.0 * torch.sin(0.5 * zi) ** 2
        den = lr * lr + li * li
        qr = (em1r * lr + ei * li) / den
        qi = (ei * lr - em1r * li) / den
        ub = u[..., None]
        fr = (qr * p["b_re"] - qi * p["b_im"]) * ub
        fi = (qr * p["b_im"] + qi * p["b_re"]) * ub
        return er, ei, fr, fi

    def _features(self, xr: torch.Tensor, xi: torch.Tensor, u: torch.Tensor, p: dict[str, torch.Tensor]):
        """z = GLU(W_out GELU(sum_n Re(C xi) + D u) + b_out)."""
        y = (p["c_re"] * xr - p["c_im"] * xi).sum(-1) + p["d"] * u
        return _glu(self.out_proj(_gelu(y)))

    # --- one step (reference loop, export) -----------------------------------------------------
    def _cell(self, x: torch.Tensor, state: torch.Tensor, ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on (batch, features) inputs and (batch, state_len) streaming states, real
        arithmetic only: (z, new state)."""
        p = self.continuous_parameters()
        j = self.channels * self.modes
        n = self.state_size
        dt = (ts if isinstance(ts, torch.Tensor) else torch.as_tensor(ts, dtype=x.dtype, device=x.device)).reshape(
            -1, 1
        )
        u = self.in_proj(x)
        er, ei, fr, fi = self._transition(u, dt, p)
        shape = (x.shape[0], self.channels, self.modes)
        pr, pi = state[:, n : n + j].reshape(shape), state[:, n + j :].reshape(shape)
        xr = er * pr - ei * pi + fr
        xi = er * pi + ei * pr + fi
        z = self._features(xr, xi, u, p)
        return z, torch.cat([z, xr.reshape(-1, j), xi.reshape(-1, j)], dim=1)

    # --- sequences ------------------------------------------------------------------------------
    def _sequence(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: torch.Tensor | None, fused: bool | None, modes: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, T, units) and Re xi, Im xi (B, T, channels * modes) after each step (the fused
        kernel leaves the modes empty unless `modes`)."""
        if fused is None:
            fused = self.fused_sequence
        if fused is None:
            from ..sequence import loop_forced

            fused = x.device.type == "cpu" and not loop_forced()
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be (batch, time, {self.input_size}), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        if t == 0:
            raise ValueError("x has no time steps")
        timespans = torch.as_tensor(timespans, dtype=x.dtype, device=x.device).reshape(b, t)
        j, n = self.channels * self.modes, self.state_size
        if hx is None:
            hx = torch.zeros(b, self.state_len, dtype=x.dtype, device=x.device)
        if tuple(hx.shape) != (b, self.state_len):
            raise ValueError(f"hx must be (batch, {self.state_len}) streaming states, got {tuple(hx.shape)}")
        if not fused:
            state, zs, mode_states = hx, [], []
            for k in range(t):
                z, state = self._cell(x[:, k], state, timespans[:, k])
                zs.append(z)
                mode_states.append(state[:, n:])
            m = torch.stack(mode_states, dim=1)
            return torch.stack(zs, dim=1), m[..., :j], m[..., j:]
        if x.device.type != "cpu":
            raise ValueError("the fused sequence kernel runs on the CPU; pass fused=False")
        p = self.continuous_parameters(torch.float64)  # as the streaming kernel has them
        u = self.in_proj(x)
        from .train import _Sequence

        y, xr, xi = _Sequence.apply(
            self.liquid,
            modes,
            u,
            timespans,
            p["scale"],
            p["a_re"],
            p["a_im"],
            p["b_re"],
            p["b_im"],
            p["c_re"],
            p["c_im"],
            p["d"],
            hx[:, n : n + j],
            hx[:, n + j :],
        )
        return _glu(self.out_proj(_gelu(y))), xr, xi

    def mode_sequence(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: torch.Tensor | None = None, fused: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Re xi, Im xi) after each step, each (B, T, channels, modes)."""
        _, xr, xi = self._sequence(x, timespans, hx, fused)
        shape = (*x.shape[:2], self.channels, self.modes)
        return xr.reshape(shape), xi.reshape(shape)

    def state_sequence(
        self, x: torch.Tensor, timespans: torch.Tensor, hx: torch.Tensor | None = None, fused: bool | None = None
    ) -> torch.Tensor:
        """What a policy's readout reads after each step of a batch-first sequence: x (B, T,
        input_size), timespans (B, T) seconds -> z (B, T, units). hx: initial streaming states
        (B, state_len), zeros when None (only their modes matter). fused None: the numba kernel on
        the CPU unless LIQUID_CONTROL_SEQUENCE=loop (or this module's `fused_sequence`); True: the
        kernel; False: the reference loop through `_cell`."""
        return self._sequence(x, timespans, hx, fused, modes=False)[0]

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None, timespans: Any = None):
        """(batch, time, features) -> (z, final streaming state), batch first; spans 1.0 when None."""
        b, t = input.shape[:2]
        ts = torch.ones(b, t, dtype=input.dtype) if timespans is None else timespans
        z, xr, xi = self._sequence(input, ts, hx, None)
        return z, torch.cat([z[:, -1], xr[:, -1], xi[:, -1]], dim=1)

    def config(self) -> dict[str, Any]:
        options = {"channels": self.channels, "modes": self.modes, "liquid": self.liquid}
        return {"cell": "liquid_s4", "units": self.state_size, "options": options}

    def _build_fused(self) -> FusedLiquidS4:
        from .stream import FusedLiquidS4

        return FusedLiquidS4.from_module(self)

    def _watched_tensors(self):
        return self.parameters()  # a few tensors: walking them sees a replaced Parameter too
