"""The numba arithmetic every kernel shares, torch-free: the streaming kernels (batch 1, `*/stream.py`)
and the training kernels (whole window and batch, `*/train.py`) take exp, sigmoid, tanh, the
activations, matrix-vector products and the mixed-memory LSTM from here, so the two paths compute
with the same functions.

exp, sigmoid and tanh are written in plain arithmetic: libm's are calls (8 and 16 ns here) that the
loop vectoriser cannot touch, and they were most of the time of a training step. Cody-Waite
reduction exp(x) = 2^n exp(r), |r| <= ln2 / 2, and exp(r) by its Taylor series to r^13 (remainder
< 1e-17 relative): within 1 ulp of libm over the whole range (the tests compare against torch). x is
clamped to [-708, 709], so exp never overflows to inf nor underflows below 3e-308 (sigmoid and tanh
saturate long before that); NaN stays NaN.

Lanes: the training kernels run a chunk of the batch at once, the sample index innermost in every
array ("lanes", L of them), so that each operation of the recurrence is one vector operation across
the chunk's samples: the same weight, the same synapse indices, contiguous data. A vector v of the
cell (n values per sample) is the flat block v[i * L + l]. The `*_lanes` functions and `_lstm_fwd` /
`_lstm_back` work on that layout; `_matvec` and `_lstm_update` are their batch-1 forms.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

DT_SCALE = 0.01  # seconds: the discrete baselines' elapsed-time input is dt / DT_SCALE (about 0.5 at 200 Hz)
ACT_IDS = {"lecun_tanh": 0, "silu": 1, "relu": 2, "tanh": 3, "gelu": 4}
MODE_IDS = {"default": 0, "pure": 1, "no_gate": 2}

# Reassociation lets LLVM vectorise the dot products (a rounding change of 1e-16 in float64);
# no "nnan"/"ninf": a NaN must still come out as a NaN.
_FM = {"reassoc", "contract"}

# error_model numpy: x / 0 is inf, no Python check; nogil: chunks of a batch run on threads of their own.
_JIT = {"cache": True, "fastmath": _FM, "error_model": "numpy", "nogil": True}


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


# The streaming kernels (batch 1) call libm: where nothing vectorises (a gather over synapses, one
# value at a time) its exp is faster than the polynomial above. Measured here with
# `bench/step_latency.py --steps 3000`: the LTC's fused step 14 us at p50 with libm, 21 us with
# `_sig` (CfC 7 us either way).
@numba.njit(cache=True, inline="always")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True)
def _activate(x, act):
    """One value's activation (the streaming kernels'); `_act_range` is the same over a vector."""
    if act == 0:
        return 1.7159 * math.tanh(0.666 * x)
    if act == 1:
        return x * _sigmoid(x)
    if act == 2:
        return x if x > 0.0 else 0.0
    if act == 3:
        return math.tanh(x)
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@numba.njit(cache=True)
def _matvec(p, w_off, rows, cols, z, b_off, out):
    """out[:rows] = W z + b, W stored row-major at p[w_off:], b at p[b_off:]."""
    for r in range(rows):
        acc = p[b_off + r]
        base = w_off + r * cols
        for k in range(cols):
            acc += p[base + k] * z[k]
        out[r] = acc


@numba.njit(cache=True)
def _lstm_update(x, state, n_in, n, p, off, work):
    """The mixed-memory LSTM cell, in place on state[:n] (h) and state[n:2n] (c).

    p[off:] holds input_map.weight (4n x n_in), input_map.bias (4n), recurrent_map.weight (4n x n).
    """
    z = work[: 4 * n]
    wi, bi, wr = off, off + 4 * n * n_in, off + 4 * n * n_in + 4 * n
    for r in range(4 * n):
        acc = p[bi + r]
        for k in range(n_in):
            acc += p[wi + r * n_in + k] * x[k]
        for k in range(n):
            acc += p[wr + r * n + k] * state[k]
        z[r] = acc
    for j in range(n):
        c = state[n + j] * _sigmoid(z[2 * n + j] + 1.0) + math.tanh(z[j]) * _sigmoid(z[n + j])
        state[n + j] = c
        state[j] = math.tanh(c) * _sigmoid(z[3 * n + j])


@numba.njit(**_JIT)
def _copy(dst, d0, src, s0, m):
    for k in range(m):
        dst[d0 + k] = src[s0 + k]


@numba.njit(**_JIT)
def _matvec_lanes(p, w_off, rows, cols, z, b_off, out, L):
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
