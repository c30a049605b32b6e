"""The CfC's training kernel: a whole window, whole batch, forward and backward in one compiled call
(`nets/sequence.py` runs it as a `torch.autograd.Function`), over the table of `layout.py`.

Backward, per step t, per sample (g_v = dL/dv, carried backwards in time), each layer; z = [layer
input, h_prev], heads a_k = W_k z + b_k, W_1, W_2 masked:
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
Mixed memory: the LSTM's backward (`kernels._lstm_back`) before the cell's.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..kernels import (
    _JIT,
    _act_grad,
    _act_range,
    _copy,
    _exp_range,
    _linear_back,
    _lstm_back,
    _lstm_fwd,
    _matvec_lanes,
    _sig_range,
    _tanh_range,
)
from ..sequence import Kernel, Pack
from .layout import (
    _BACKBONE_LEN,
    _BB_B,
    _BB_COLS,
    _BB_ROWS,
    _BB_W,
    _H_ACT,
    _H_BACKBONE,
    _H_BBLEN,
    _H_GLEN,
    _H_IN,
    _H_LAYERS,
    _H_LSTM,
    _H_MAX_COLS,
    _H_MAX_ROWS,
    _H_MIXED,
    _H_MODE,
    _H_STATE,
    _HEADER_LEN,
    _ROW_A,
    _ROW_B,
    _ROW_G,
    _ROW_IN,
    _ROW_LEN,
    _ROW_STATE,
    _ROW_TAU,
    _ROW_UNITS,
    _ROW_W,
    _bb_off,
    pack,
)

# One chunk of L samples per call, every array flat with the lane innermost: x (T, inputs, L),
# ts (T, L), h0 / c0 (state, L), S (T, state, L), the stored records G (T, glen, L), BB (T, bblen, L),
# M (T, 7 state, L); the parameter gradient per lane, dp (params, L).


@numba.njit(**_JIT)
def _cfc_fwd_chunk(xc, tsc, h0c, c0c, p, tb, Sc, Gc, BBc, Mc, store, L):
    n_steps = tsc.size // L
    n_layers, mode, n_bb, act = tb[_H_LAYERS], tb[_H_MODE], tb[_H_BACKBONE], tb[_H_ACT]
    n_in, n, mixed = tb[_H_IN], tb[_H_STATE], tb[_H_MIXED]
    glen, bblen = tb[_H_GLEN], tb[_H_BBLEN]
    z = np.empty(tb[_H_MAX_COLS] * L)
    zb = np.empty(tb[_H_MAX_COLS] * L)
    g = np.empty(2 * tb[_H_MAX_ROWS] * L)
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
            _lstm_fwd(xt, h, c, p, tb[_H_LSTM], n_in, n, lw, L)
            if store:
                _copy(Mc, tt * 7 * n * L, lw, 0, 7 * n * L)
        for layer in range(n_layers):
            row = _HEADER_LEN + layer * _ROW_LEN
            in_dim, units, s_off = tb[row + _ROW_IN], tb[row + _ROW_UNITS], tb[row + _ROW_STATE]
            if layer == 0:
                _copy(z, 0, xc, xo, in_dim * L)
            else:
                _copy(z, 0, hn, tb[row - _ROW_LEN + _ROW_STATE] * L, in_dim * L)
            _copy(z, in_dim * L, h, s_off * L, units * L)
            cols = in_dim + units
            src = z
            if n_bb > 0:
                for kb in range(n_bb):
                    rec = _HEADER_LEN + n_layers * _ROW_LEN + kb * _BACKBONE_LEN
                    rows_b, cols_b = tb[rec + _BB_ROWS], tb[rec + _BB_COLS]
                    bo = (tt * bblen + _bb_off(tb, n_layers, kb)) * L
                    _matvec_lanes(p, tb[rec + _BB_W], rows_b, cols_b, src, tb[rec + _BB_B], g, L)
                    if store:
                        _copy(BBc, bo, g, 0, rows_b * L)
                    _act_range(g, rows_b * L, act)
                    _copy(zb, 0, g, 0, rows_b * L)
                    if store:
                        _copy(BBc, bo + rows_b * L, g, 0, rows_b * L)
                    src = zb
                    cols = rows_b
            w_off, b_off = tb[row + _ROW_W], tb[row + _ROW_B]
            go = (tt * glen + tb[row + _ROW_G]) * L
            ul = units * L
            if mode == 1:  # pure: h' = A - A e a1, e = exp(-ts (|w_tau| + |a1|))
                _matvec_lanes(p, w_off, units, cols, src, b_off, g, L)
                tau_off, a_off = tb[row + _ROW_TAU], tb[row + _ROW_A]
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
                _matvec_lanes(p, w_off, 4 * units, cols, src, b_off, g, L)
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
    n_layers, mode, n_bb, act = tb[_H_LAYERS], tb[_H_MODE], tb[_H_BACKBONE], tb[_H_ACT]
    n_in, n, mixed = tb[_H_IN], tb[_H_STATE], tb[_H_MIXED]
    glen, bblen = tb[_H_GLEN], tb[_H_BBLEN]
    width = max(tb[_H_MAX_COLS], tb[_H_MAX_ROWS]) * L
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
            row = _HEADER_LEN + layer * _ROW_LEN
            in_dim, units, s_off = tb[row + _ROW_IN], tb[row + _ROW_UNITS], tb[row + _ROW_STATE]
            w_off, b_off = tb[row + _ROW_W], tb[row + _ROW_B]
            go = (tt * glen + tb[row + _ROW_G]) * L
            ul = units * L
            prev = tb[row - _ROW_LEN + _ROW_STATE] if layer > 0 else 0
            if layer == 0:
                _copy(z, 0, xc, xo, in_dim * L)
            else:
                _copy(z, 0, Sc, so + prev * L, in_dim * L)
            _copy(z, in_dim * L, hp, s_off * L, ul)
            cols = in_dim + units
            # the heads' gradient
            if mode == 1:
                rows = units
                tau_off, a_off = tb[row + _ROW_TAU], tb[row + _ROW_A]
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
                last = _HEADER_LEN + n_layers * _ROW_LEN + (n_bb - 1) * _BACKBONE_LEN
                hrows = tb[last + _BB_ROWS]
                _copy(zb, 0, BBc, (tt * bblen + _bb_off(tb, n_layers, n_bb - 1) + hrows) * L, hrows * L)
                _linear_back(p, dp, w_off, b_off, rows, hrows, zb, dg, dz, L)
                for kb in range(n_bb - 1, -1, -1):
                    rec = _HEADER_LEN + n_layers * _ROW_LEN + kb * _BACKBONE_LEN
                    rows_b, cols_b = tb[rec + _BB_ROWS], tb[rec + _BB_COLS]
                    bo = (tt * bblen + _bb_off(tb, n_layers, kb)) * L
                    for e in range(rows_b * L):
                        dg[e] = dz[e] * _act_grad(BBc[bo + e], BBc[bo + rows_b * L + e], act)
                    if kb == 0:
                        src = z
                    else:
                        prec = rec - _BACKBONE_LEN
                        prows = tb[prec + _BB_ROWS]
                        _copy(zb, 0, BBc, (tt * bblen + _bb_off(tb, n_layers, kb - 1) + prows) * L, prows * L)
                        src = zb
                    _linear_back(p, dp, tb[rec + _BB_W], tb[rec + _BB_B], rows_b, cols_b, src, dg, dz, L)
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
            _lstm_back(xt, hprev, cprev, p, dp, tb[_H_LSTM], n_in, n, lw, ghp, carry_c, dxt, carry, dz4, L)
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


class _CfCKernel(Kernel):
    fwd = staticmethod(_cfc_fwd_serial)
    bwd = staticmethod(_cfc_bwd_serial)

    def __init__(self, table: np.ndarray, glen: int, bblen: int, n: int, mixed: bool) -> None:
        self.table, self.n = table, n
        # per step: head values, backbone pre-activations and activations, the LSTM's gates
        self.stored = (max(glen, 1), max(bblen, 1), 7 * n if mixed else 1)

    def _static(self) -> tuple:
        return (self.table,)


def kernel(cfc) -> tuple[_CfCKernel, torch.Tensor]:
    """The CfC's training kernel and its parameter vector p (autograd reaches every weight)."""
    p = Pack()
    table, sizes = pack(cfc, p.add, projection=False)
    return _CfCKernel(table, sizes["glen"], sizes["bblen"], cfc.state_size, cfc.use_mixed), p.vector()
