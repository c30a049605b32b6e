"""The LTC's training kernel: a whole window, whole batch, forward and backward in one compiled call
(`nets/sequence.py` runs it as a `torch.autograd.Function`), over the table of `layout.py`.

Backward, unfold j = U-1 .. 0 of v^{j+1} = N^j / D^j, N = cm_t v^j + gl vl + num_s + num(v^j),
D = cm_t + gl + den_s + den(v^j) + eps, cm_t = cm U / ts, synapse a = w sigmoid(sigma (v_src - mu)):
    g_N = g_v / D,  g_D = -g_v v^{j+1} / D
    g_v^j = g_N cm_t + sum over synapses from that neuron of g_q sigma,
      with g_a = g_N[dest] erev + g_D[dest],  g_q = g_a w s (1 - s)  (s the synapse's sigmoid)
    g_erev += g_N[dest] a,  g_w += g_a s,  g_sigma += g_q (v_src - mu),  g_mu -= g_q sigma
    g_cm_t += g_N v^j + g_D,  g_gl += g_N vl + g_D,  g_vl += g_N gl,  g_num_s += g_N,  g_den_s += g_D
    after the unfolds: g_cm += g_cm_t U / ts,  g_ts -= g_cm_t cm U / ts^2, and the sensory synapses
    (computed once per step from the mapped input xm = x w_in + b_in) by the same synapse rule.
Mixed memory: the LSTM's backward (`kernels._lstm_back`) before the cell's.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..kernels import _JIT, _copy, _lstm_back, _lstm_fwd, _sig_range
from ..sequence import Kernel, Pack, as64
from .layout import (
    _L_IN,
    _L_IO,
    _L_LEN,
    _L_LSTM,
    _L_MIXED,
    _L_N,
    _L_NEURON,
    _L_OSSYN,
    _L_OSYN,
    _L_SSYN,
    _L_SYN,
    _L_UNFOLDS,
)


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


class _LTCKernel(Kernel):
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


def _synapse_rows(pack: Pack, w, sigma, mu, erev, mask) -> tuple[int, np.ndarray, np.ndarray]:
    """The synapses the mask keeps: rows w * mask, sigma, mu, erev, gathered by autograd."""
    src, dst = np.nonzero(mask.detach().cpu().numpy())
    si, di = torch.from_numpy(src), torch.from_numpy(dst)
    m = as64(mask)[si, di]
    rows = torch.stack([w[si, di] * m, sigma[si, di], mu[si, di], erev[si, di]], dim=0)
    return pack.add(rows), src.astype(np.int64), dst.astype(np.int64)


def kernel(ltc) -> tuple[_LTCKernel, torch.Tensor]:
    cell = ltc.rnn_cell
    positive = cell.make_positive_fn
    n, s = cell.state_size, cell.sensory_size
    pack = Pack()
    table = np.zeros(_L_LEN, dtype=np.int64)
    table[_L_N], table[_L_IN], table[_L_UNFOLDS] = n, s, cell._ode_unfolds
    table[_L_NEURON] = pack.add(positive(as64(cell.cm)))
    pack.add(positive(as64(cell.gleak)))
    pack.add(as64(cell.vleak))
    table[_L_OSYN], rsrc, rdst = _synapse_rows(
        pack, positive(as64(cell.w)), as64(cell.sigma), as64(cell.mu), as64(cell.erev), cell.sparsity_mask
    )
    table[_L_OSSYN], ssrc, sdst = _synapse_rows(
        pack,
        positive(as64(cell.sensory_w)),
        as64(cell.sensory_sigma),
        as64(cell.sensory_mu),
        as64(cell.sensory_erev),
        cell.sensory_sparsity_mask,
    )
    table[_L_SYN], table[_L_SSYN] = rsrc.size, ssrc.size
    iw = as64(cell.input_w) if hasattr(cell, "input_w") else torch.ones(s, dtype=torch.float64)
    ib = as64(cell.input_b) if hasattr(cell, "input_b") else torch.zeros(s, dtype=torch.float64)
    table[_L_IO] = pack.add(iw)
    pack.add(ib)
    if ltc.use_mixed:
        table[_L_MIXED] = 1
        table[_L_LSTM] = pack.add(as64(ltc.lstm.input_map.weight))
        pack.add(as64(ltc.lstm.input_map.bias))
        pack.add(as64(ltc.lstm.recurrent_map.weight))
    kernel = _LTCKernel(table, float(cell._epsilon), rsrc, rdst, ssrc, sdst, n, cell._ode_unfolds, ltc.use_mixed)
    return kernel, pack.vector()
