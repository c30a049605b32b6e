"""Fused sequence kernels for training: a whole CfC or LTC window, whole batch, in one compiled call,
forward and backward, as a `torch.autograd.Function`.

The Python time loop of `LiquidRNN.state_sequence` dispatches a dozen small torch ops per step and
as many again in the backward pass; at 19 neurons that dispatch is the whole cost. Here torch does
only what is done once per call: it masks the weights, makes the LTC's positive parameters positive
(softplus or identity), gathers the LTC's synapses and packs everything into one float64 vector
`p`, all as ordinary autograd ops. The kernel then runs the recurrence over (batch, time) in numba
and its hand-written backward returns dL/dp, dL/dx, dL/dtimespans and dL/d(initial state); torch's
autograd takes dL/dp back through the packing to every parameter, so masked weights get the zero
gradient the mask gives them, and the parameters get gradients in their own dtype.

Backward, per step t, per sample (g_v = dL/dv, carried backwards in time):

CfC (each layer; z = [layer input, h_prev], heads a_k = W_k z + b_k, W_1, W_2 masked):
    f1 = tanh a1, f2 = tanh a2, s = sigmoid(a3 * ts + a4),  h' = f1 (1 - s) + s f2 ("default";
    "no_gate": h' = f1 + s f2)
    g_f1 = g_h' (1 - s),  g_f2 = g_h' s,  g_s = g_h' (f2 - f1)          (no_gate: g_f1 = g_h', g_s = g_h' f2)
    g_a1 = g_f1 (1 - f1^2),  g_a2 = g_f2 (1 - f2^2),  g_u = g_s s (1 - s),  g_a3 = g_u ts,  g_a4 = g_u,
    g_ts += g_u a3
    "pure": h' = A - A e a1 with e = exp(-ts (|w_tau| + |a1|)):
    g_a1 = -g_h' A e (1 - ts |a1|),  g_A = g_h' (1 - e a1),  g_w_tau = g_h' A a1 e ts sign(w_tau),
    g_ts += g_h' A a1 e (|w_tau| + |a1|)
    then for every head g_W += g_a z^T, g_b += g_a, g_z = sum_k W_k^T g_a; g_z splits into the
    layer input (x, or the previous layer's new state at the same t) and h_prev (carried to t - 1).
    A backbone (fully connected CfC) sits between z and the heads: g_pre = g_out act'(pre), then
    the same linear rule through each of its layers.

LTC (unfold j = U-1 .. 0 of v^{j+1} = N^j / D^j, N = cm_t v^j + gl vl + num_s + num(v^j),
D = cm_t + gl + den_s + den(v^j) + eps, cm_t = cm U / ts, synapse a = w sigmoid(sigma (v_src - mu))):
    g_N = g_v / D,  g_D = -g_v v^{j+1} / D
    g_v^j = g_N cm_t + sum over synapses from that neuron of g_q sigma,
      with g_a = g_N[dest] erev + g_D[dest],  g_q = g_a w s (1 - s)  (s the synapse's sigmoid)
    g_erev += g_N[dest] a,  g_w += g_a s,  g_sigma += g_q (v_src - mu),  g_mu -= g_q sigma
    g_cm_t += g_N v^j + g_D,  g_gl += g_N vl + g_D,  g_vl += g_N gl,  g_num_s += g_N,  g_den_s += g_D
    after the unfolds: g_cm += g_cm_t U / ts,  g_ts -= g_cm_t cm U / ts^2, and the sensory synapses
    (computed once per step from the mapped input xm = x w_in + b_in) by the same synapse rule.

Mixed memory (an LSTM cell on (h, c) before the liquid cell, both kinds): the standard LSTM backward,
c' = c sigmoid(f + 1) + tanh(i) sigmoid(g), h' = tanh(c') sigmoid(o).

Layout and speed: the batch runs in chunks (one per thread, one by default), each chunk's samples
innermost in every array ("lanes"), so each step is a handful of loops over (neuron, lane) with
the same weight or synapse for all lanes. exp, sigmoid and tanh are written in plain arithmetic
(libm's calls were most of a step's time). What the backward pass needs is stored per step
(head values; LTC: v before each unfold, 1 / denominator, synapse sigmoids) in buffers reused
across calls once their autograd node is gone; nothing is stored when no gradient is wanted
(validation under no_grad).

Precision: everything runs in float64 whatever the module's dtype: a float32 module gives the
float64 answer for its float32 weights, rounded to float32 once at the end.

Supported: CfC (wired or fully connected with any backbone, every mode and activation, mixed
memory; backbone dropout only in eval mode) and LTC (any wiring, mappings, constraints, unfolds,
mixed memory), float32 / float64 on the CPU. `fused_support(module, ...)` says why a configuration
has no kernel (None when it has one); `LiquidRNN.state_sequence` then runs the reference loop.
LIQUID_CONTROL_SEQUENCE=loop (or `module.fused_sequence = False`) forces the loop everywhere.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from torch import nn

from .fused import ACT_IDS, MODE_IDS

# Reassociation lets LLVM vectorise the dot products (a rounding change of 1e-16 in float64);
# no "nnan"/"ninf": a NaN must still come out as a NaN.
_FM = {"reassoc", "contract"}

# error_model numpy: x / 0 is inf, no Python check; nogil: chunks of a batch run on threads of their own.
_JIT = {"cache": True, "fastmath": _FM, "error_model": "numpy", "nogil": True}

ENV = "LIQUID_CONTROL_SEQUENCE"  # "loop" (or "reference") forces the Python loop everywhere


def loop_forced() -> bool:
    """True when the environment asks for the reference loop (LIQUID_CONTROL_SEQUENCE=loop)."""
    return os.environ.get(ENV, "").strip().lower() in ("loop", "reference", "0", "off")


# --- shared numba pieces -----------------------------------------------------------------------
# exp, sigmoid and tanh in plain arithmetic: libm's are calls (8 and 16 ns here) that the loop
# vectoriser cannot touch, and they were most of the time of a step. Cody-Waite reduction
# exp(x) = 2^n exp(r), |r| <= ln2 / 2, and exp(r) by its Taylor series to r^13 (remainder < 1e-17
# relative): within 1 ulp of libm over the whole range (the tests compare against torch). x is
# clamped to [-708, 709], so exp never overflows to inf nor underflows below 3e-308 (sigmoid and tanh
# saturate long before that); NaN stays NaN.


@intrinsic
def _bits_as_f64(typingctx, bits):
    """The float64 whose IEEE bits are this int64 (LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_C = tuple(1.0 / math.factorial(k) for k in range(14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C[2:]


@numba.njit(inline="always", **_JIT)
def _exp(x):
    if x < -708.0:
        x = -708.0
    if x > 709.0:
        x = 709.0
    n = math.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    q = _C13
    q = q * r + _C12
    q = q * r + _C11
    q = q * r + _C10
    q = q * r + _C9
    q = q * r + _C8
    q = q * r + _C7
    q = q * r + _C6
    q = q * r + _C5
    q = q * r + _C4
    q = q * r + _C3
    q = q * r + _C2
    q = q * r + 1.0
    q = q * r + 1.0
    e = q * _bits_as_f64((np.int64(n) + 1023) << 52)
    return e if x == x else x  # NaN: never trust the integer conversion of a NaN


@numba.njit(inline="always", **_JIT)
def _sig(x):
    return 1.0 / (1.0 + _exp(-x))


@numba.njit(inline="always", **_JIT)
def _tanh(x):
    e = _exp(-2.0 * abs(x))
    return math.copysign((1.0 - e) / (1.0 + e), x)


@numba.njit(**_JIT)
def _tanh_range(a, lo, hi):
    """a[lo:hi] = tanh(a[lo:hi]) in place (one array, so the loop vectorises)."""
    for r in range(lo, hi):
        a[r] = _tanh(a[r])


@numba.njit(**_JIT)
def _sig_range(a, lo, hi):
    for r in range(lo, hi):
        a[r] = _sig(a[r])


@numba.njit(**_JIT)
def _exp_range(a, lo, hi):
    for r in range(lo, hi):
        a[r] = _exp(a[r])


@numba.njit(**_JIT)
def _act_range(a, n, act):
    """a[:n] = act(a[:n]) in place, one loop per activation."""
    if act == 0:
        for r in range(n):
            a[r] = 0.666 * a[r]
        _tanh_range(a, 0, n)
        for r in range(n):
            a[r] = 1.7159 * a[r]
    elif act == 1:
        for r in range(n):
            a[r] = a[r] * _sig(a[r])
    elif act == 2:
        for r in range(n):
            a[r] = a[r] if a[r] > 0.0 else 0.0
    elif act == 3:
        _tanh_range(a, 0, n)
    else:
        for r in range(n):
            a[r] = 0.5 * a[r] * (1.0 + math.erf(a[r] / math.sqrt(2.0)))


@numba.njit(**_JIT)
def _act_grad(pre, post, act):
    """d act / d pre, from the pre-activation and the activation's value."""
    if act == 0:  # 1.7159 tanh(0.666 x)
        t = post / 1.7159
        return 1.7159 * 0.666 * (1.0 - t * t)
    if act == 1:  # silu
        s = _sig(pre)
        return s * (1.0 + pre * (1.0 - s))
    if act == 2:  # relu (torch: 0 at 0)
        return 1.0 if pre > 0.0 else 0.0
    if act == 3:
        return 1.0 - post * post
    # exact gelu: Phi(x) + x phi(x)
    return 0.5 * (1.0 + math.erf(pre / math.sqrt(2.0))) + pre * math.exp(-0.5 * pre * pre) / math.sqrt(2.0 * math.pi)


# Lanes: the kernels run a chunk of the batch at once, the sample index innermost in every array
# ("lanes", L of them), so that each operation of the recurrence is one vector operation across
# the chunk's samples: the same weight, the same synapse indices, contiguous data. A vector v of
# the cell (n values per sample) is the flat block v[i * L + l].


@numba.njit(**_JIT)
def _copy(dst, d0, src, s0, m):
    for k in range(m):
        dst[d0 + k] = src[s0 + k]


@numba.njit(**_JIT)
def _matvec(p, w_off, rows, cols, z, b_off, out, L):
    """out[r] = W[r] . z + b[r] for every lane (W row-major at p[w_off:], b at p[b_off:])."""
    for r in range(rows):
        o = r * L
        bias = p[b_off + r]
        for lane in range(L):
            out[o + lane] = bias
        base = w_off + r * cols
        for k in range(cols):
            w = p[base + k]
            zo = k * L
            for lane in range(L):
                out[o + lane] += w * z[zo + lane]


@numba.njit(**_JIT)
def _linear_back(p, dp, w_off, b_off, rows, cols, z, dg, dz, L):
    """Backward of out = W z + b: dW += dg z^T, db += dg (per lane: dp is (params, L)), and
    dz = W^T dg (overwritten)."""
    for k in range(cols * L):
        dz[k] = 0.0
    for r in range(rows):
        go = r * L
        bo = (b_off + r) * L
        for lane in range(L):
            dp[bo + lane] += dg[go + lane]
        base = w_off + r * cols
        for k in range(cols):
            w = p[base + k]
            zo = k * L
            for lane in range(L):
                dz[zo + lane] += w * dg[go + lane]
        for k in range(cols):
            wo = (base + k) * L
            zo = k * L
            for lane in range(L):
                dp[wo + lane] += dg[go + lane] * z[zo + lane]


@numba.njit(**_JIT)
def _lstm_fwd(x, h, c, p, off, n_in, n, lw, L):
    """The mixed-memory LSTM cell in place on h and c (n x L each, x n_in x L); lw (7n x L) gets
    [tanh i, sig ig, sig(fg+1), sig og, c', tanh c', h']. p[off:] holds input_map.weight,
    input_map.bias, recurrent_map.weight."""
    wi, bi, wr = off, off + 4 * n * n_in, off + 4 * n * n_in + 4 * n
    for r in range(4 * n):
        o = r * L
        bias = p[bi + r] + (1.0 if 2 * n <= r < 3 * n else 0.0)  # ncps's forget bias
        for lane in range(L):
            lw[o + lane] = bias
        for k in range(n_in):
            w = p[wi + r * n_in + k]
            for lane in range(L):
                lw[o + lane] += w * x[k * L + lane]
        for k in range(n):
            w = p[wr + r * n + k]
            for lane in range(L):
                lw[o + lane] += w * h[k * L + lane]
    _tanh_range(lw, 0, n * L)
    _sig_range(lw, n * L, 4 * n * L)
    for e in range(n * L):
        cn = c[e] * lw[2 * n * L + e] + lw[e] * lw[n * L + e]
        lw[4 * n * L + e] = cn
        lw[5 * n * L + e] = cn
        c[e] = cn
    _tanh_range(lw, 5 * n * L, 6 * n * L)
    for e in range(n * L):
        hn = lw[5 * n * L + e] * lw[3 * n * L + e]
        lw[6 * n * L + e] = hn
        h[e] = hn


@numba.njit(**_JIT)
def _lstm_back(x, hprev, cprev, p, dp, off, n_in, n, lw, gh, gc, dx, dh, dz4, L):
    """Backward of `_lstm_fwd`: gh = dL/dh', gc = dL/dc' (in: from later; out: dL/dc); dx += the
    input's gradient; dh = dL/dh (overwritten)."""
    wi, bi, wr = off, off + 4 * n * n_in, off + 4 * n * n_in + 4 * n
    nl = n * L
    for e in range(nl):
        ti, si, sf, so = lw[e], lw[nl + e], lw[2 * nl + e], lw[3 * nl + e]
        tc = lw[5 * nl + e]
        g = gh[e]
        gcn = gc[e] + g * so * (1.0 - tc * tc)
        dz4[e] = gcn * si * (1.0 - ti * ti)
        dz4[nl + e] = gcn * ti * si * (1.0 - si)
        dz4[2 * nl + e] = gcn * cprev[e] * sf * (1.0 - sf)
        dz4[3 * nl + e] = g * tc * so * (1.0 - so)
        gc[e] = gcn * sf
    for e in range(nl):
        dh[e] = 0.0
    for r in range(4 * n):
        go = r * L
        bo = (bi + r) * L
        for lane in range(L):
            dp[bo + lane] += dz4[go + lane]
        for k in range(n_in):
            w = p[wi + r * n_in + k]
            for lane in range(L):
                dx[k * L + lane] += w * dz4[go + lane]
        for k in range(n):
            w = p[wr + r * n + k]
            for lane in range(L):
                dh[k * L + lane] += w * dz4[go + lane]
        for k in range(n_in):
            wo = (wi + r * n_in + k) * L
            for lane in range(L):
                dp[wo + lane] += dz4[go + lane] * x[k * L + lane]
        for k in range(n):
            wo = (wr + r * n + k) * L
            for lane in range(L):
                dp[wo + lane] += dz4[go + lane] * hprev[k * L + lane]


# --- CfC ---------------------------------------------------------------------------------------
# Table (int64): a header, one row per layer, one record per backbone Linear.
_T_LAYERS, _T_MODE, _T_BACKBONE, _T_ACT, _T_IN, _T_STATE, _T_MAXCOLS, _T_MAXROWS = range(8)
_T_GLEN, _T_BBLEN, _T_MIXED, _T_LSTM = range(8, 12)
_HEADER = 12
# Per layer: input width, neurons, first state index, heads' weights / biases (concatenated,
# rows ff1, ff2, time_a, time_b, or ff1 alone in pure mode), pure mode's w_tau and A, and where the
# layer's stored head values start in a step's record (f1, f2, s, time_a; pure: a1, e).
_R_IN, _R_UNITS, _R_SOFF, _R_W, _R_B, _R_TAU, _R_A, _R_G = range(8)
_ROW = 8
# Per backbone Linear: weight, bias, out / in features, where its pre-activations are stored in a
# step's record (its activations follow them).
_B_W, _B_B, _B_ROWS, _B_COLS, _B_OFF = range(5)
_BBREC = 5

# One chunk of L samples per call, every array flat with the lane innermost: x (T, inputs, L),
# ts (T, L), h0 / c0 (state, L), S (T, state, L), the stored records G (T, glen, L), BB (T, bblen, L),
# M (T, 7 state, L); the parameter gradient per lane, dp (params, L).


@numba.njit(**_JIT)
def _cfc_fwd_chunk(xc, tsc, h0c, c0c, p, tb, Sc, Gc, BBc, Mc, store, L):
    n_steps = tsc.size // L
    n_layers, mode, n_bb, act = tb[_T_LAYERS], tb[_T_MODE], tb[_T_BACKBONE], tb[_T_ACT]
    n_in, n, mixed = tb[_T_IN], tb[_T_STATE], tb[_T_MIXED]
    glen, bblen = tb[_T_GLEN], tb[_T_BBLEN]
    z = np.empty(tb[_T_MAXCOLS] * L)
    zb = np.empty(tb[_T_MAXCOLS] * L)
    g = np.empty(2 * tb[_T_MAXROWS] * L)
    h = h0c.copy()
    c = c0c.copy()
    hn = np.empty(n * L)
    xt = np.empty(n_in * L)
    lw = np.empty(7 * n * L if mixed else 1)
    for tt in range(n_steps):
        to = tt * L
        xo = tt * n_in * L
        if mixed:
            _copy(xt, 0, xc, xo, n_in * L)
            _lstm_fwd(xt, h, c, p, tb[_T_LSTM], n_in, n, lw, L)
            if store:
                _copy(Mc, tt * 7 * n * L, lw, 0, 7 * n * L)
        for layer in range(n_layers):
            row = _HEADER + layer * _ROW
            in_dim, units, s_off = tb[row + _R_IN], tb[row + _R_UNITS], tb[row + _R_SOFF]
            if layer == 0:
                _copy(z, 0, xc, xo, in_dim * L)
            else:
                _copy(z, 0, hn, tb[row - _ROW + _R_SOFF] * L, in_dim * L)
            _copy(z, in_dim * L, h, s_off * L, units * L)
            cols = in_dim + units
            src = z
            if n_bb > 0:
                for kb in range(n_bb):
                    rec = _HEADER + n_layers * _ROW + kb * _BBREC
                    rows_b, cols_b = tb[rec + _B_ROWS], tb[rec + _B_COLS]
                    bo = (tt * bblen + tb[rec + _B_OFF]) * L
                    _matvec(p, tb[rec + _B_W], rows_b, cols_b, src, tb[rec + _B_B], g, L)
                    if store:
                        _copy(BBc, bo, g, 0, rows_b * L)
                    _act_range(g, rows_b * L, act)
                    _copy(zb, 0, g, 0, rows_b * L)
                    if store:
                        _copy(BBc, bo + rows_b * L, g, 0, rows_b * L)
                    src = zb
                    cols = rows_b
            w_off, b_off = tb[row + _R_W], tb[row + _R_B]
            go = (tt * glen + tb[row + _R_G]) * L
            ul = units * L
            if mode == 1:  # pure: h' = A - A e a1, e = exp(-ts (|w_tau| + |a1|))
                _matvec(p, w_off, units, cols, src, b_off, g, L)
                tau_off, a_off = tb[row + _R_TAU], tb[row + _R_A]
                for j in range(units):
                    wt = abs(p[tau_off + j])
                    for lane in range(L):
                        g[ul + j * L + lane] = -tsc[to + lane] * (wt + abs(g[j * L + lane]))
                _exp_range(g, ul, 2 * ul)
                for j in range(units):
                    big_a = p[a_off + j]
                    for lane in range(L):
                        e = j * L + lane
                        hn[s_off * L + e] = -big_a * g[ul + e] * g[e] + big_a
                if store:
                    _copy(Gc, go, g, 0, 2 * ul)
            else:
                _matvec(p, w_off, 4 * units, cols, src, b_off, g, L)
                if store:
                    _copy(Gc, go + 3 * ul, g, 2 * ul, ul)
                for j in range(units):
                    for lane in range(L):
                        e = j * L + lane
                        g[2 * ul + e] = g[2 * ul + e] * tsc[to + lane] + g[3 * ul + e]
                _tanh_range(g, 0, 2 * ul)
                _sig_range(g, 2 * ul, 3 * ul)
                if mode == 2:
                    for e in range(ul):
                        hn[s_off * L + e] = g[e] + g[2 * ul + e] * g[ul + e]
                else:
                    for e in range(ul):
                        s = g[2 * ul + e]
                        hn[s_off * L + e] = g[e] * (1.0 - s) + s * g[ul + e]
                if store:
                    _copy(Gc, go, g, 0, 3 * ul)
        _copy(h, 0, hn, 0, n * L)
        _copy(Sc, tt * n * L, hn, 0, n * L)


@numba.njit(**_JIT)
def _cfc_bwd_chunk(xc, tsc, h0c, c0c, p, tb, Sc, Gc, BBc, Mc, gSc, dp, dXc, dTSc, dH0c, dC0c, L):
    n_steps = tsc.size // L
    n_layers, mode, n_bb, act = tb[_T_LAYERS], tb[_T_MODE], tb[_T_BACKBONE], tb[_T_ACT]
    n_in, n, mixed = tb[_T_IN], tb[_T_STATE], tb[_T_MIXED]
    glen, bblen = tb[_T_GLEN], tb[_T_BBLEN]
    width = max(tb[_T_MAXCOLS], tb[_T_MAXROWS]) * L
    nl = n * L
    z = np.empty(width)
    zb = np.empty(width)
    dz = np.empty(width)
    dg = np.empty(width)
    dts = np.empty(L)
    carry = np.zeros(nl)
    carry_c = np.zeros(nl)
    gh = np.empty(nl)
    ghp = np.empty(nl)
    hp = np.empty(nl)  # the cell's h input: h' of the LSTM when mixed, else the previous state
    hprev = np.empty(nl)
    cprev = np.empty(nl)
    xt = np.empty(n_in * L)
    dxt = np.empty(n_in * L)
    lw = np.empty(7 * nl if mixed else 1)
    dz4 = np.empty(4 * nl if mixed else 1)
    for tt in range(n_steps - 1, -1, -1):
        to = tt * L
        xo, so = tt * n_in * L, tt * nl
        if tt == 0:
            _copy(hprev, 0, h0c, 0, nl)
        else:
            _copy(hprev, 0, Sc, so - nl, nl)
        if mixed:
            mo = tt * 7 * nl
            _copy(lw, 0, Mc, mo, 7 * nl)
            _copy(hp, 0, lw, 6 * nl, nl)
            if tt == 0:
                _copy(cprev, 0, c0c, 0, nl)
            else:
                _copy(cprev, 0, Mc, mo - 7 * nl + 4 * nl, nl)
        else:
            _copy(hp, 0, hprev, 0, nl)
        for e in range(nl):
            gh[e] = gSc[so + e] + carry[e]
            ghp[e] = 0.0
        for lane in range(L):
            dts[lane] = 0.0
        for layer in range(n_layers - 1, -1, -1):
            row = _HEADER + layer * _ROW
            in_dim, units, s_off = tb[row + _R_IN], tb[row + _R_UNITS], tb[row + _R_SOFF]
            w_off, b_off = tb[row + _R_W], tb[row + _R_B]
            go = (tt * glen + tb[row + _R_G]) * L
            ul = units * L
            prev = tb[row - _ROW + _R_SOFF] if layer > 0 else 0
            if layer == 0:
                _copy(z, 0, xc, xo, in_dim * L)
            else:
                _copy(z, 0, Sc, so + prev * L, in_dim * L)
            _copy(z, in_dim * L, hp, s_off * L, ul)
            cols = in_dim + units
            # the heads' gradient
            if mode == 1:
                rows = units
                tau_off, a_off = tb[row + _R_TAU], tb[row + _R_A]
                for j in range(units):
                    big_a = p[a_off + j]
                    wt = p[tau_off + j]
                    sgn = 1.0 if wt > 0.0 else (-1.0 if wt < 0.0 else 0.0)
                    for lane in range(L):
                        e = j * L + lane
                        gj = gh[s_off * L + e]
                        a1 = Gc[go + e]
                        ex = Gc[go + ul + e]
                        dt = tsc[to + lane]
                        dg[e] = -gj * big_a * ex * (1.0 - dt * abs(a1))
                        dp[(a_off + j) * L + lane] += gj * (1.0 - ex * a1)
                        dp[(tau_off + j) * L + lane] += gj * big_a * a1 * ex * dt * sgn
                        dts[lane] += gj * big_a * a1 * ex * (abs(wt) + abs(a1))
            else:
                rows = 4 * units
                for j in range(units):
                    for lane in range(L):
                        e = j * L + lane
                        gj = gh[s_off * L + e]
                        f1 = Gc[go + e]
                        f2 = Gc[go + ul + e]
                        s = Gc[go + 2 * ul + e]
                        ta = Gc[go + 3 * ul + e]
                        if mode == 2:
                            df1, ds = gj, gj * f2
                        else:
                            df1, ds = gj * (1.0 - s), gj * (f2 - f1)
                        du = ds * s * (1.0 - s)
                        dg[e] = df1 * (1.0 - f1 * f1)
                        dg[ul + e] = gj * s * (1.0 - f2 * f2)
                        dg[2 * ul + e] = du * tsc[to + lane]
                        dg[3 * ul + e] = du
                        dts[lane] += du * ta
            if n_bb > 0:
                last = _HEADER + n_layers * _ROW + (n_bb - 1) * _BBREC
                hrows = tb[last + _B_ROWS]
                _copy(zb, 0, BBc, (tt * bblen + tb[last + _B_OFF] + hrows) * L, hrows * L)
                _linear_back(p, dp, w_off, b_off, rows, hrows, zb, dg, dz, L)
                for kb in range(n_bb - 1, -1, -1):
                    rec = _HEADER + n_layers * _ROW + kb * _BBREC
                    rows_b, cols_b = tb[rec + _B_ROWS], tb[rec + _B_COLS]
                    bo = (tt * bblen + tb[rec + _B_OFF]) * L
                    for e in range(rows_b * L):
                        dg[e] = dz[e] * _act_grad(BBc[bo + e], BBc[bo + rows_b * L + e], act)
                    if kb == 0:
                        src = z
                    else:
                        prec = rec - _BBREC
                        prows = tb[prec + _B_ROWS]
                        _copy(zb, 0, BBc, (tt * bblen + tb[prec + _B_OFF] + prows) * L, prows * L)
                        src = zb
                    _linear_back(p, dp, tb[rec + _B_W], tb[rec + _B_B], rows_b, cols_b, src, dg, dz, L)
            else:
                _linear_back(p, dp, w_off, b_off, rows, cols, z, dg, dz, L)
            if layer == 0:
                _copy(dXc, xo, dz, 0, in_dim * L)
            else:
                for e in range(in_dim * L):
                    gh[prev * L + e] += dz[e]
            for e in range(ul):
                ghp[s_off * L + e] += dz[in_dim * L + e]
        _copy(dTSc, to, dts, 0, L)
        if mixed:
            _copy(xt, 0, xc, xo, n_in * L)
            for e in range(n_in * L):
                dxt[e] = 0.0
            _lstm_back(xt, hprev, cprev, p, dp, tb[_T_LSTM], n_in, n, lw, ghp, carry_c, dxt, carry, dz4, L)
            for e in range(n_in * L):
                dXc[xo + e] += dxt[e]
        else:
            _copy(carry, 0, ghp, 0, nl)
    _copy(dH0c, 0, carry, 0, nl)
    _copy(dC0c, 0, carry_c, 0, nl)


@numba.njit(**_JIT)
def _cfc_fwd_serial(x, ts, h0, c0, p, tb, S, G, BB, M, store, L):
    for b in range(x.shape[0]):
        _cfc_fwd_chunk(x[b], ts[b], h0[b], c0[b], p, tb, S[b], G[b], BB[b], M[b], store, L)


@numba.njit(**_JIT)
def _cfc_bwd_serial(x, ts, h0, c0, p, tb, S, G, BB, M, gS, dP, dX, dTS, dH0, dC0, L):
    for b in range(x.shape[0]):
        _cfc_bwd_chunk(
            x[b], ts[b], h0[b], c0[b], p, tb, S[b], G[b], BB[b], M[b], gS[b], dP[b], dX[b], dTS[b], dH0[b], dC0[b], L
        )


# --- LTC ---------------------------------------------------------------------------------------
# Table (int64). p holds, from the offsets: cm, gleak (both positive), vleak (n each); the synapses
# as four rows of their count (w positive and masked, sigma, mu, erev); the sensory synapses
# likewise; input_w, input_b (ones and zeros without a mapping); the LSTM's weights when mixed.
# Stored per step (lanes innermost, as for the CfC): v before each unfold (V: unfolds x n), each
# unfold's reciprocal denominator (DEN: unfolds x n), each synapse's sigmoid per unfold
# (SIGR: unfolds x synapses), the sensory sigmoids (SIGS: sensory synapses).
_L_N, _L_IN, _L_SYN, _L_SSYN, _L_UNFOLDS, _L_NEURON, _L_OSYN, _L_OSSYN, _L_IO, _L_MIXED, _L_LSTM = range(11)
_L_LEN = 11


@numba.njit(**_JIT)
def _ltc_fwd_chunk(xc, tsc, h0c, c0c, p, tb, eps, rsrc, rdst, ssrc, sdst, Sc, Vc, DENc, SIGRc, SIGSc, Mc, store, L):
    n_steps = tsc.size // L
    n, n_in, n_syn, n_ssyn, unfolds = tb[_L_N], tb[_L_IN], tb[_L_SYN], tb[_L_SSYN], tb[_L_UNFOLDS]
    o_cm = tb[_L_NEURON]
    o_gl, o_vl = o_cm + n, o_cm + 2 * n
    o_syn, o_ssyn, o_iw = tb[_L_OSYN], tb[_L_OSSYN], tb[_L_IO]
    o_ib = o_iw + n_in
    mixed = tb[_L_MIXED]
    nl = n * L
    v = h0c.copy()
    c = c0c.copy()
    vn = np.empty(nl)
    cmt = np.empty(nl)
    num_s = np.empty(nl)
    den_s = np.empty(nl)
    num = np.empty(nl)
    den = np.empty(nl)
    xm = np.empty(n_in * L)
    sg = np.empty(max(n_syn, n_ssyn, 1) * L)
    lw = np.empty(7 * nl if mixed else 1)
    for tt in range(n_steps):
        to = tt * L
        xo = tt * n_in * L
        if mixed:
            _copy(xm, 0, xc, xo, n_in * L)
            _lstm_fwd(xm, v, c, p, tb[_L_LSTM], n_in, n, lw, L)
            if store:
                _copy(Mc, tt * 7 * nl, lw, 0, 7 * nl)
        for s in range(n_in):
            w, b = p[o_iw + s], p[o_ib + s]
            for lane in range(L):
                xm[s * L + lane] = xc[xo + s * L + lane] * w + b
        for k in range(n_ssyn):
            q = o_ssyn + k
            sig, mu = p[q + n_ssyn], p[q + 2 * n_ssyn]
            src = ssrc[k] * L
            for lane in range(L):
                sg[k * L + lane] = sig * (xm[src + lane] - mu)
        _sig_range(sg, 0, n_ssyn * L)
        if store:
            _copy(SIGSc, tt * n_ssyn * L, sg, 0, n_ssyn * L)
        for e in range(nl):
            num_s[e] = 0.0
            den_s[e] = 0.0
        for k in range(n_ssyn):
            q = o_ssyn + k
            w, er = p[q], p[q + 3 * n_ssyn]
            d = sdst[k] * L
            for lane in range(L):
                a = w * sg[k * L + lane]
                num_s[d + lane] += a * er
                den_s[d + lane] += a
        for i in range(n):
            for lane in range(L):
                cmt[i * L + lane] = p[o_cm + i] / (tsc[to + lane] / unfolds)
        for j in range(unfolds):
            vo = (tt * unfolds + j) * nl
            if store:
                _copy(Vc, vo, v, 0, nl)
            for k in range(n_syn):
                q = o_syn + k
                sig, mu = p[q + n_syn], p[q + 2 * n_syn]
                src = rsrc[k] * L
                for lane in range(L):
                    sg[k * L + lane] = sig * (v[src + lane] - mu)
            _sig_range(sg, 0, n_syn * L)
            if store:
                _copy(SIGRc, (tt * unfolds + j) * n_syn * L, sg, 0, n_syn * L)
            _copy(num, 0, num_s, 0, nl)
            _copy(den, 0, den_s, 0, nl)
            for k in range(n_syn):
                q = o_syn + k
                w, er = p[q], p[q + 3 * n_syn]
                d = rdst[k] * L
                for lane in range(L):
                    a = w * sg[k * L + lane]
                    num[d + lane] += a * er
                    den[d + lane] += a
            for i in range(n):
                gl, glvl = p[o_gl + i], p[o_gl + i] * p[o_vl + i]
                for lane in range(L):
                    e = i * L + lane
                    r = 1.0 / (cmt[e] + gl + den[e] + eps)
                    den[e] = r
                    vn[e] = (cmt[e] * v[e] + glvl + num[e]) * r
            if store:
                _copy(DENc, vo, den, 0, nl)
            _copy(v, 0, vn, 0, nl)
        _copy(Sc, tt * nl, v, 0, nl)


@numba.njit(**_JIT)
def _syn_back(p, dp, q0, m, dst, src, gnum, gden, pre, sgc, so, gq_sig, L):
    """Backward through m synapses a = w sigmoid(sig (pre[src] - mu)) (parameter rows w, sig, mu, er
    at p[q0:], m apart) summed into num += a er and den += a at dst, given dL/dnum and dL/dden
    (the sigmoids at sgc[so:]): the parameter gradients accumulate in dp; gq_sig gets each
    synapse's part of dL/dpre[src] (the caller scatters it)."""
    for k in range(m):
        q = q0 + k
        w, sig, mu, er = p[q], p[q + m], p[q + 2 * m], p[q + 3 * m]
        d = dst[k] * L
        sr = src[k] * L
        ko = k * L
        for lane in range(L):
            s = sgc[so + ko + lane]
            gn = gnum[d + lane]
            ga = gn * er + gden[d + lane]
            gq = ga * w * s * (1.0 - s)
            dp[q * L + lane] += ga * s
            dp[(q + m) * L + lane] += gq * (pre[sr + lane] - mu)
            dp[(q + 2 * m) * L + lane] -= gq * sig
            dp[(q + 3 * m) * L + lane] += gn * w * s
            gq_sig[ko + lane] = gq * sig


@numba.njit(**_JIT)
def _ltc_bwd_chunk(
    xc,
    tsc,
    h0c,
    c0c,
    p,
    tb,
    eps,
    rsrc,
    rdst,
    ssrc,
    sdst,
    Sc,
    Vc,
    DENc,
    SIGRc,
    SIGSc,
    Mc,
    gSc,
    dp,
    dXc,
    dTSc,
    dH0c,
    dC0c,
    L,
):
    n_steps = tsc.size // L
    n, n_in, n_syn, n_ssyn, unfolds = tb[_L_N], tb[_L_IN], tb[_L_SYN], tb[_L_SSYN], tb[_L_UNFOLDS]
    o_cm = tb[_L_NEURON]
    o_gl, o_vl = o_cm + n, o_cm + 2 * n
    o_syn, o_ssyn, o_iw = tb[_L_OSYN], tb[_L_OSSYN], tb[_L_IO]
    o_ib = o_iw + n_in
    mixed = tb[_L_MIXED]
    nl = n * L
    carry = np.zeros(nl)
    carry_c = np.zeros(nl)
    gv = np.empty(nl)
    gvn = np.empty(nl)
    cmt = np.empty(nl)
    vj = np.empty(nl)
    vj1 = np.empty(nl)
    g_num = np.empty(nl)
    g_den = np.empty(nl)
    g_num_s = np.empty(nl)
    g_den_s = np.empty(nl)
    g_cmt = np.empty(nl)
    g_xm = np.empty(n_in * L)
    xm = np.empty(n_in * L)
    dts = np.empty(L)
    gq_sig = np.empty(max(n_syn, n_ssyn, 1) * L)
    hprev = np.empty(nl)
    cprev = np.empty(nl)
    lw = np.empty(7 * nl if mixed else 1)
    dh = np.empty(nl)
    dz4 = np.empty(4 * nl if mixed else 1)
    for tt in range(n_steps - 1, -1, -1):
        to = tt * L
        xo, so = tt * n_in * L, tt * nl
        for i in range(n):
            for lane in range(L):
                cmt[i * L + lane] = p[o_cm + i] / (tsc[to + lane] / unfolds)
        for e in range(nl):
            gv[e] = gSc[so + e] + carry[e]
            g_num_s[e] = 0.0
            g_den_s[e] = 0.0
            g_cmt[e] = 0.0
        for j in range(unfolds - 1, -1, -1):
            vo = (tt * unfolds + j) * nl
            _copy(vj, 0, Vc, vo, nl)
            if j == unfolds - 1:
                _copy(vj1, 0, Sc, so, nl)
            else:
                _copy(vj1, 0, Vc, vo + nl, nl)
            for i in range(n):
                gl, vl = p[o_gl + i], p[o_vl + i]
                for lane in range(L):
                    e = i * L + lane
                    gn = gv[e] * DENc[vo + e]
                    gd = -gn * vj1[e]
                    g_num[e] = gn
                    g_den[e] = gd
                    gvn[e] = gn * cmt[e]
                    g_cmt[e] += gn * vj[e] + gd
                    dp[(o_gl + i) * L + lane] += gn * vl + gd
                    dp[(o_vl + i) * L + lane] += gn * gl
                    g_num_s[e] += gn
                    g_den_s[e] += gd
            _syn_back(
                p, dp, o_syn, n_syn, rdst, rsrc, g_num, g_den, vj, SIGRc, (tt * unfolds + j) * n_syn * L, gq_sig, L
            )
            for k in range(n_syn):
                sr = rsrc[k] * L
                for lane in range(L):
                    gvn[sr + lane] += gq_sig[k * L + lane]
            _copy(gv, 0, gvn, 0, nl)
        for lane in range(L):
            dts[lane] = 0.0
        for i in range(n):
            for lane in range(L):
                e = i * L + lane
                inv_h = unfolds / tsc[to + lane]
                dp[(o_cm + i) * L + lane] += g_cmt[e] * inv_h
                dts[lane] -= g_cmt[e] * cmt[e] / tsc[to + lane]
        _copy(dTSc, to, dts, 0, L)
        for s in range(n_in):
            w, b = p[o_iw + s], p[o_ib + s]
            for lane in range(L):
                xm[s * L + lane] = xc[xo + s * L + lane] * w + b
                g_xm[s * L + lane] = 0.0
        _syn_back(p, dp, o_ssyn, n_ssyn, sdst, ssrc, g_num_s, g_den_s, xm, SIGSc, tt * n_ssyn * L, gq_sig, L)
        for k in range(n_ssyn):
            sr = ssrc[k] * L
            for lane in range(L):
                g_xm[sr + lane] += gq_sig[k * L + lane]
        for s in range(n_in):
            w = p[o_iw + s]
            for lane in range(L):
                e = s * L + lane
                dXc[xo + e] = g_xm[e] * w
                dp[(o_iw + s) * L + lane] += g_xm[e] * xc[xo + e]
                dp[(o_ib + s) * L + lane] += g_xm[e]
        if mixed:
            mo = tt * 7 * nl
            _copy(lw, 0, Mc, mo, 7 * nl)
            if tt == 0:
                _copy(hprev, 0, h0c, 0, nl)
                _copy(cprev, 0, c0c, 0, nl)
            else:
                _copy(hprev, 0, Sc, so - nl, nl)
                _copy(cprev, 0, Mc, mo - 7 * nl + 4 * nl, nl)
            _copy(xm, 0, xc, xo, n_in * L)
            for e in range(n_in * L):
                g_xm[e] = 0.0
            _lstm_back(xm, hprev, cprev, p, dp, tb[_L_LSTM], n_in, n, lw, gv, carry_c, g_xm, dh, dz4, L)
            for e in range(n_in * L):
                dXc[xo + e] += g_xm[e]
            _copy(carry, 0, dh, 0, nl)
        else:
            _copy(carry, 0, gv, 0, nl)
    _copy(dH0c, 0, carry, 0, nl)
    _copy(dC0c, 0, carry_c, 0, nl)


@numba.njit(**_JIT)
def _ltc_fwd_serial(x, ts, h0, c0, p, tb, eps, rsrc, rdst, ssrc, sdst, S, V, DEN, SIGR, SIGS, M, store, L):
    for b in range(x.shape[0]):
        _ltc_fwd_chunk(
            x[b],
            ts[b],
            h0[b],
            c0[b],
            p,
            tb,
            eps,
            rsrc,
            rdst,
            ssrc,
            sdst,
            S[b],
            V[b],
            DEN[b],
            SIGR[b],
            SIGS[b],
            M[b],
            store,
            L,
        )


@numba.njit(**_JIT)
def _ltc_bwd_serial(
    x, ts, h0, c0, p, tb, eps, rsrc, rdst, ssrc, sdst, S, V, DEN, SIGR, SIGS, M, gS, dP, dX, dTS, dH0, dC0, L
):
    for b in range(x.shape[0]):
        _ltc_bwd_chunk(
            x[b],
            ts[b],
            h0[b],
            c0[b],
            p,
            tb,
            eps,
            rsrc,
            rdst,
            ssrc,
            sdst,
            S[b],
            V[b],
            DEN[b],
            SIGR[b],
            SIGS[b],
            M[b],
            gS[b],
            dP[b],
            dX[b],
            dTS[b],
            dH0[b],
            dC0[b],
            L,
        )


# --- torch side --------------------------------------------------------------------------------

_POOLS: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="liquid-sequence")
    return _POOLS[threads]


THREADS_ENV = "LIQUID_CONTROL_SEQUENCE_THREADS"  # threads for one call (default 1)


def _threads(batch: int) -> int:
    """Threads for this call, one chunk of the batch each: LIQUID_CONTROL_SEQUENCE_THREADS (default 1),
    at most torch's setting, one per sample and one per core. One by default: on the 2-core machine
    this was measured on, shared with other jobs, handing a chunk to a second thread cost more than
    it saved (bench/train_step.py --threads 2 measures it where cores are free)."""
    try:
        wanted = int(os.environ.get(THREADS_ENV, "1"))
    except ValueError:
        wanted = 1
    return max(1, min(wanted, torch.get_num_threads(), os.cpu_count() or 1, batch))


class _Pack:
    """Collects torch tensors into the flat parameter vector and hands back their offsets."""

    def __init__(self) -> None:
        self.pieces: list[torch.Tensor] = []
        self.size = 1  # offset 0 is a dummy, as in fused.py

    def add(self, tensor: torch.Tensor) -> int:
        flat = tensor.reshape(-1)
        offset = self.size
        self.pieces.append(flat)
        self.size += flat.numel()
        return offset

    def vector(self) -> torch.Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.float64), *self.pieces])


def _as64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def _lanes(a: np.ndarray, chunks: int, lanes: int, fill: float) -> np.ndarray:
    """(B, ...) -> (chunks, ... x lanes): the batch padded with `fill` to chunks x lanes, each
    chunk's samples innermost (the kernels' layout)."""
    b = a.shape[0]
    if chunks * lanes != b:
        a = np.concatenate([a, np.full((chunks * lanes - b, *a.shape[1:]), fill)])
    return np.ascontiguousarray(a.reshape(chunks, lanes, -1).transpose(0, 2, 1)).reshape(chunks, -1)


def _unlanes(a: np.ndarray, batch: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `_lanes`: (chunks, ... x lanes) -> (batch, *shape)."""
    chunks = a.shape[0]
    a = a.reshape(chunks, -1, a.shape[1] // int(np.prod(shape))).transpose(0, 2, 1)
    return np.ascontiguousarray(a.reshape(-1, *shape)[:batch])


# Storage for the backward pass, reused: page-faulting fresh buffers in (megabytes per call) cost
# as much as the LTC's whole forward pass. A set returns to the pool only when the autograd node
# holding it is gone (so no graph that could still run backward ever shares it).
_POOL: list[tuple[tuple, tuple[np.ndarray, ...]]] = []
_POOL_BYTES = 128 * 2**20  # at most this much kept free
_POOL_LOCK = threading.Lock()


class _Stored:
    """One forward pass's storage, from the pool or new; back to the pool when garbage."""

    __slots__ = ("key", "arrays")

    def __init__(self, shapes: tuple) -> None:
        self.key = shapes
        with _POOL_LOCK:
            for i, (key, arrays) in enumerate(_POOL):
                if key == shapes:
                    del _POOL[i]
                    self.arrays = arrays
                    return
        self.arrays = tuple(np.empty(shape) for shape in shapes)

    def __del__(self) -> None:
        try:
            with _POOL_LOCK:
                _POOL.append((self.key, self.arrays))
                while sum(a.nbytes for _, arrays in _POOL for a in arrays) > _POOL_BYTES:
                    del _POOL[0]
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _Kernel:
    """A compiled sequence kernel with the static parts of one module's packing: `forward` and
    `backward` on float64 numpy arrays x (B, T, inputs), ts (B, T), h0, c0 (B, state), p."""

    n: int
    stored: tuple[int, ...]  # floats stored per step and lane, one entry per stored array

    def _static(self) -> tuple:
        return ()

    def _run(self, fn, chunks: int, *args) -> None:
        """fn over all chunks: in this thread, or one chunk per thread of the pool (the kernels
        release the GIL). Every argument with a leading chunk axis is split along it."""
        if chunks == 1:
            fn(*args)
            return
        pool = _pool(chunks)
        parts = [
            [a[c : c + 1] if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[0] == chunks else a for a in args]
            for c in range(chunks)
        ]
        for future in [pool.submit(fn, *part) for part in parts]:
            future.result()

    @staticmethod
    def _split(batch: int) -> tuple[int, int]:
        chunks = _threads(batch)
        return chunks, -(-batch // chunks)

    def forward(self, x, ts, h0, c0, p, store):
        b, t = x.shape[:2]
        chunks, lanes = self._split(b)
        S = np.empty((chunks, t * self.n * lanes))
        if store:
            saved = _Stored(tuple((chunks, t * size * lanes) for size in self.stored))
            arrays = saved.arrays
        else:
            saved, arrays = None, tuple(np.empty((chunks, 1)) for _ in self.stored)
        self._run(
            self.fwd,
            chunks,
            _lanes(x, chunks, lanes, 0.0),
            _lanes(ts, chunks, lanes, 1.0),
            _lanes(h0, chunks, lanes, 0.0),
            _lanes(c0, chunks, lanes, 0.0),
            p,
            *self._static(),
            S,
            *arrays,
            store,
            lanes,
        )
        # the layout goes with the storage: the thread count may change before the backward pass
        return _unlanes(S, b, (t, self.n)), (saved, S, chunks, lanes)

    def backward(self, x, ts, h0, c0, p, saved, gS):
        b, t = x.shape[:2]
        stored, S, chunks, lanes = saved
        dP = np.zeros((chunks, p.shape[0] * lanes))
        dX = np.empty((chunks, x[0].size * lanes))
        dTS = np.empty((chunks, t * lanes))
        dH0, dC0 = np.empty((chunks, self.n * lanes)), np.empty((chunks, self.n * lanes))
        self._run(
            self.bwd,
            chunks,
            _lanes(x, chunks, lanes, 0.0),
            _lanes(ts, chunks, lanes, 1.0),
            _lanes(h0, chunks, lanes, 0.0),
            _lanes(c0, chunks, lanes, 0.0),
            p,
            *self._static(),
            S,
            *stored.arrays,
            _lanes(gS, chunks, lanes, 0.0),
            dP,
            dX,
            dTS,
            dH0,
            dC0,
            lanes,
        )
        dp = dP.reshape(chunks, -1, lanes).sum(axis=(0, 2))
        return (
            dp,
            _unlanes(dX, b, x.shape[1:]),
            _unlanes(dTS, b, (t,)),
            _unlanes(dH0, b, (self.n,)),
            _unlanes(dC0, b, (self.n,)),
        )


class _CfCKernel(_Kernel):
    fwd = staticmethod(_cfc_fwd_serial)
    bwd = staticmethod(_cfc_bwd_serial)

    def __init__(self, table: np.ndarray, glen: int, bblen: int, n: int, mixed: bool) -> None:
        self.table, self.n = table, n
        # per step: head values, backbone pre-activations and activations, the LSTM's gates
        self.stored = (max(glen, 1), max(bblen, 1), 7 * n if mixed else 1)

    def _static(self) -> tuple:
        return (self.table,)


class _LTCKernel(_Kernel):
    fwd = staticmethod(_ltc_fwd_serial)
    bwd = staticmethod(_ltc_bwd_serial)

    def __init__(self, table, eps, rsrc, rdst, ssrc, sdst, n, unfolds, mixed) -> None:
        self.table, self.eps = table, eps
        self.idx = (rsrc, rdst, ssrc, sdst)
        self.n = n
        # per step: v before each unfold, each unfold's reciprocal denominators, the synapses'
        # sigmoids per unfold, the sensory synapses' sigmoids, the LSTM's gates
        self.stored = (unfolds * n, unfolds * n, unfolds * max(rsrc.size, 1), max(ssrc.size, 1), 7 * n if mixed else 1)

    def _static(self) -> tuple:
        return (self.table, self.eps, *self.idx)


class _Sequence(torch.autograd.Function):
    """states = kernel(x, ts, h0, c0, p), all float64 CPU tensors; backward by the kernel."""

    @staticmethod
    def forward(ctx, kernel, x, ts, h0, c0, p, store):
        arrays = [t.detach().contiguous().numpy() for t in (x, ts, h0, c0, p)]
        S, saved = kernel.forward(*arrays, store)
        ctx.kernel, ctx.saved = kernel, saved
        ctx.save_for_backward(x, ts, h0, c0, p)
        return torch.from_numpy(S)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_states):
        arrays = [t.detach().contiguous().numpy() for t in ctx.saved_tensors]
        gS = g_states.detach().to(torch.float64).contiguous().numpy()
        grads = ctx.kernel.backward(*arrays, ctx.saved, gS)
        need = ctx.needs_input_grad
        # grads: dp, dx, dts, dh0, dc0; inputs: kernel, x, ts, h0, c0, p, store
        dp, dx, dts, dh0, dc0 = grads
        out = [torch.from_numpy(a) if need[i] else None for i, a in ((1, dx), (2, dts), (3, dh0), (4, dc0), (5, dp))]
        return (None, *out, None)


# --- packing the modules ------------------------------------------------------------------------


def _cfc_cells(cfc) -> list:
    return list(cfc.rnn_cell._layers) if cfc.wired else [cfc.rnn_cell]


def _pack_cfc(cfc) -> tuple[_CfCKernel, torch.Tensor]:
    pack = _Pack()
    cells = _cfc_cells(cfc)
    linears = []
    if not cfc.wired and cfc.rnn_cell.backbone is not None:
        linears = [m for m in cfc.rnn_cell.backbone if isinstance(m, nn.Linear)]
    table = np.zeros(_HEADER + len(cells) * _ROW + len(linears) * _BBREC, dtype=np.int64)
    table[_T_LAYERS] = len(cells)
    table[_T_MODE] = MODE_IDS[cfc.mode]
    table[_T_BACKBONE] = len(linears)
    table[_T_ACT] = ACT_IDS[cfc.rnn_cell.backbone_activation] if linears else 0
    table[_T_IN] = cfc.input_size
    table[_T_STATE] = cfc.state_size
    table[_T_MIXED] = int(cfc.use_mixed)
    max_cols, max_rows, glen = 1, 1, 0
    in_dim, s_off = cfc.input_size, 0
    for index, c in enumerate(cells):
        row = _HEADER + index * _ROW
        units = c.hidden_size
        mask = None if c.sparsity_mask is None else _as64(c.sparsity_mask)

        def masked(layer, mask=mask):
            w = _as64(layer.weight)
            return w if mask is None else w * mask

        if c.mode == "pure":
            w, bias = masked(c.ff1), _as64(c.ff1.bias)
        else:
            # ncps masks the two value heads; the time gates stay dense.
            w = torch.cat([masked(c.ff1), masked(c.ff2), _as64(c.time_a.weight), _as64(c.time_b.weight)], 0)
            bias = torch.cat([_as64(c.ff1.bias), _as64(c.ff2.bias), _as64(c.time_a.bias), _as64(c.time_b.bias)])
        table[row + _R_IN] = in_dim
        table[row + _R_UNITS] = units
        table[row + _R_SOFF] = s_off
        table[row + _R_W] = pack.add(w)
        table[row + _R_B] = pack.add(bias)
        if c.mode == "pure":
            table[row + _R_TAU] = pack.add(_as64(c.w_tau))
            table[row + _R_A] = pack.add(_as64(c.A))
        table[row + _R_G] = glen
        glen += 4 * units
        max_cols = max(max_cols, in_dim + units, w.shape[1])
        max_rows = max(max_rows, w.shape[0])
        in_dim, s_off = units, s_off + units
    bblen = 0
    for k, lin in enumerate(linears):
        rec = _HEADER + len(cells) * _ROW + k * _BBREC
        table[rec + _B_W] = pack.add(_as64(lin.weight))
        table[rec + _B_B] = pack.add(_as64(lin.bias))
        table[rec + _B_ROWS] = lin.out_features
        table[rec + _B_COLS] = lin.in_features
        table[rec + _B_OFF] = bblen
        bblen += 2 * lin.out_features
        max_cols = max(max_cols, lin.in_features, lin.out_features)
        max_rows = max(max_rows, lin.out_features)
    if cfc.use_mixed:
        table[_T_LSTM] = pack.add(_as64(cfc.lstm.input_map.weight))
        pack.add(_as64(cfc.lstm.input_map.bias))
        pack.add(_as64(cfc.lstm.recurrent_map.weight))
    table[_T_MAXCOLS] = max_cols
    table[_T_MAXROWS] = max_rows
    table[_T_GLEN] = glen
    table[_T_BBLEN] = bblen
    return _CfCKernel(table, glen, bblen, cfc.state_size, cfc.use_mixed), pack.vector()


def _synapse_rows(pack: _Pack, w, sigma, mu, erev, mask) -> tuple[int, np.ndarray, np.ndarray]:
    """The synapses the mask keeps: rows w * mask, sigma, mu, erev, gathered by autograd."""
    src, dst = np.nonzero(mask.detach().cpu().numpy())
    si, di = torch.from_numpy(src), torch.from_numpy(dst)
    m = _as64(mask)[si, di]
    rows = torch.stack([w[si, di] * m, sigma[si, di], mu[si, di], erev[si, di]], dim=0)
    return pack.add(rows), src.astype(np.int64), dst.astype(np.int64)


def _pack_ltc(ltc) -> tuple[_LTCKernel, torch.Tensor]:
    cell = ltc.rnn_cell
    positive = cell.make_positive_fn
    n, s = cell.state_size, cell.sensory_size
    pack = _Pack()
    table = np.zeros(_L_LEN, dtype=np.int64)
    table[_L_N], table[_L_IN], table[_L_UNFOLDS] = n, s, cell._ode_unfolds
    table[_L_NEURON] = pack.add(positive(_as64(cell.cm)))
    pack.add(positive(_as64(cell.gleak)))
    pack.add(_as64(cell.vleak))
    table[_L_OSYN], rsrc, rdst = _synapse_rows(
        pack, positive(_as64(cell.w)), _as64(cell.sigma), _as64(cell.mu), _as64(cell.erev), cell.sparsity_mask
    )
    table[_L_OSSYN], ssrc, sdst = _synapse_rows(
        pack,
        positive(_as64(cell.sensory_w)),
        _as64(cell.sensory_sigma),
        _as64(cell.sensory_mu),
        _as64(cell.sensory_erev),
        cell.sensory_sparsity_mask,
    )
    table[_L_SYN], table[_L_SSYN] = rsrc.size, ssrc.size
    iw = _as64(cell.input_w) if hasattr(cell, "input_w") else torch.ones(s, dtype=torch.float64)
    ib = _as64(cell.input_b) if hasattr(cell, "input_b") else torch.zeros(s, dtype=torch.float64)
    table[_L_IO] = pack.add(iw)
    pack.add(ib)
    if ltc.use_mixed:
        table[_L_MIXED] = 1
        table[_L_LSTM] = pack.add(_as64(ltc.lstm.input_map.weight))
        pack.add(_as64(ltc.lstm.input_map.bias))
        pack.add(_as64(ltc.lstm.recurrent_map.weight))
    kernel = _LTCKernel(table, float(cell._epsilon), rsrc, rdst, ssrc, sdst, n, cell._ode_unfolds, ltc.use_mixed)
    return kernel, pack.vector()


# --- what has a kernel --------------------------------------------------------------------------


def _has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def fused_support(module, x: torch.Tensor | None = None, timespans: torch.Tensor | None = None, hx=None) -> str | None:
    """None when `module.state_sequence(x, timespans, hx)` can run the fused kernel, else why not
    (the reference loop then runs: it is the definition the kernel must equal)."""
    from .cfc import ACTIVATIONS, CfC, CfCCell, WiredCfCCell
    from .lstm import LSTMCell
    from .ltc import LTC, LTCCell

    if isinstance(module, CfC):
        kind = "CfC"
        if type(module)._cell is not CfC._cell:
            return "a subclass with its own _cell"
        cell = module.rnn_cell
        if module.wired:
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
        if module.mode not in MODE_IDS:
            return f"mode {module.mode!r}"
    elif isinstance(module, LTC):
        kind = "LTC"
        if type(module)._cell is not LTC._cell:
            return "a subclass with its own _cell"
        cell = module.rnn_cell
        if type(cell) is not LTCCell:
            return "a replaced cell module"
        if cell.sparsity_mask.requires_grad or cell.sensory_sparsity_mask.requires_grad:
            return "trainable sparsity masks (the kernel visits only the synapses the mask keeps)"
    else:
        return f"no kernel for {type(module).__name__}"
    if module.use_mixed and type(module.lstm) is not LSTMCell:
        return "a replaced memory cell"
    if _has_hooks(module):
        return "forward hooks (the loop calls the cells, the kernel does not)"
    tensors = list(module.parameters())
    if x is not None:
        tensors.append(x)
    if timespans is not None:
        tensors.append(timespans)
    if any(t.device.type != "cpu" for t in tensors):
        return "tensors not on the CPU"
    if any(t.dtype not in (torch.float32, torch.float64) for t in tensors):
        return "a dtype other than float32 / float64"
    if x is not None and timespans is not None:
        if x.dim() != 3 or x.shape[-1] != module.input_size or timespans.shape != x.shape[:2]:
            return (
                f"shapes x {tuple(x.shape)}, timespans {tuple(timespans.shape)} ({kind} wants (B, T, "
                f"{module.input_size}) and (B, T))"
            )
        if x.shape[1] == 0 or x.shape[0] == 0:
            return "an empty sequence"
        want = (x.shape[0], module.state_size)
        if hx is not None:
            parts = hx if module.use_mixed else (hx,)
            if module.use_mixed and not (isinstance(hx, tuple | list) and len(hx) == 2):
                return "mixed memory wants the initial state as (h, c)"
            for part in parts:
                if not isinstance(part, torch.Tensor) or tuple(part.shape) != want:
                    return f"an initial state that is not a ({want[0]}, {want[1]}) tensor"
                tensors.append(part)
            if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) for t in parts):
                return "an initial state not float32 / float64 on the CPU"
    return None


def _initial(module, hx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = x.shape[0]
    zeros = torch.zeros(b, module.state_size, dtype=torch.float64)
    if hx is None:
        return zeros, zeros
    if module.use_mixed:
        h, c = hx
    else:
        h, c = hx, None
    return _as64(h), (zeros if c is None else _as64(c))


def fused_state_sequence(module, x: torch.Tensor, timespans: torch.Tensor, hx=None) -> torch.Tensor:
    """The fused equivalent of the reference `state_sequence` loop: x (B, T, inputs), timespans
    (B, T), hx the initial state ((h, c) with mixed memory) or None for zeros -> (B, T, state)."""
    from .cfc import CfC

    kernel, p = _pack_cfc(module) if isinstance(module, CfC) else _pack_ltc(module)
    h0, c0 = _initial(module, hx, x)
    x64, ts64 = _as64(x), _as64(timespans)
    store = torch.is_grad_enabled() and any(t.requires_grad for t in (x64, ts64, h0, c0, p))
    states = _Sequence.apply(kernel, x64, ts64, h0, c0, p, store)
    return states.to(x.dtype)
