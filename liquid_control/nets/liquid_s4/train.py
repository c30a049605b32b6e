"""Liquid-S4's training kernel: the modes over the whole batch and window in one numba call
(`_sequence_forward`) and its hand-written backward (`_sequence_backward`), as a
`torch.autograd.Function`; the equations are in `module.py`'s docstring."""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ..kernels import _JIT, _exp, _tanh
from ..sequence import Stored

# --- the training kernel -------------------------------------------------------------------------
# exp, sin and cos in plain arithmetic (sequence.py's exp; the sine and cosine below): libm's are
# calls the loop vectoriser cannot touch, three per mode and step, and they were most of the time.
_PIO2_1 = 1.57079632673412561417e00  # pi/2 in three parts (fdlibm's): k * _PIO2_1 is exact for |k| < 2^20
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_2T = 2.02226624879595063154e-21
_TWO_OVER_PI = 0.63661977236758134308
# sin r = r sum_k _Sk r^2k to r^17, cos r = sum_k _Ck r^2k to r^16 (Taylor: (-1)^k / (2k+1)!, / (2k)!)
_S0, _S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8 = ((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8 = ((-1.0) ** k / math.factorial(2 * k) for k in range(9))


@numba.njit(inline="always", **_JIT)
def _sincos(x):  # pragma: no cover - compiled
    """(sin x, cos x) within a few ulp for |x| < 1.6e6 (reduction by multiples of pi/2 in three
    parts, |r| <= pi/4, Taylor to r^17: remainder < 1e-19); beyond that the error grows as
    |x| * 1e-22, still below the float64 uncertainty of x itself."""
    k = math.floor(x * _TWO_OVER_PI + 0.5)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_2T
    r2 = r * r
    sn = ((((((((_S8 * r2 + _S7) * r2 + _S6) * r2 + _S5) * r2 + _S4) * r2 + _S3) * r2 + _S2) * r2 + _S1) * r2 + _S0) * r
    cs = (((((((_C8 * r2 + _C7) * r2 + _C6) * r2 + _C5) * r2 + _C4) * r2 + _C3) * r2 + _C2) * r2 + _C1) * r2 + _C0
    q = np.int64(k) & 3
    if q & 1:
        sn, cs = cs, sn
    if q & 2:
        sn = -sn
    if (q + 1) & 2:
        cs = -cs
    return sn, cs


@numba.njit(**_JIT)
def _sequence_forward(
    u, dt, s, a_re, a_im, b_re, b_im, c_re, c_im, d, x0r, x0i, liquid, y, xr, xi, er_s, ei_s, qr_s, qi_s
):  # pragma: no cover - compiled
    """The modes over a whole (batch, time) window from u = W_in x + b_in: y = sum Re(C xi) + D u
    (B, T, H) before the GELU, xi (B, T, H * M); E and Q = (E - 1) / lambda kept for the backward.

    Each step runs over all H * M modes in one loop on arrays of this call's own (per-mode copies
    of the parameters, the channel's u, tanh u and s dt), which LLVM knows alias nothing: that is
    what lets it vectorise the loop."""
    n_b, n_t, n_h = u.shape
    n_m = a_re.shape[1]
    n_j = n_h * n_m
    are, aim, bre, bim = a_re.ravel().copy(), a_im.ravel().copy(), b_re.ravel().copy(), b_im.ravel().copy()
    cre, cim = c_re.ravel().copy(), c_im.ravel().copy()
    pr, pi, cx = np.empty(n_j), np.empty(n_j), np.empty(n_j)
    er, ei, qr, qi = np.empty(n_j), np.empty(n_j), np.empty(n_j), np.empty(n_j)
    uj, phj, sdtj = np.empty(n_j), np.empty(n_j), np.empty(n_j)
    for b in range(n_b):
        for j in range(n_j):
            pr[j] = x0r[b, j]
            pi[j] = x0i[b, j]
        for t in range(n_t):
            for h in range(n_h):
                uu = u[b, t, h]
                ph = _tanh(uu) if liquid else 0.0
                sdt = s[h] * dt[b, t]
                for m in range(n_m):
                    uj[h * n_m + m] = uu
                    phj[h * n_m + m] = ph
                    sdtj[h * n_m + m] = sdt
            for j in range(n_j):
                lr = are[j] + bre[j] * phj[j]
                li = aim[j] + bim[j] * phj[j]
                ea = _exp(sdtj[j] * lr)
                sz, cz = _sincos(sdtj[j] * li)
                e_r, e_i = ea * cz, ea * sz
                inv = 1.0 / (lr * lr + li * li)
                q_r = ((e_r - 1.0) * lr + e_i * li) * inv  # (E - 1) / lambda
                q_i = (e_i * lr - (e_r - 1.0) * li) * inv
                nr = e_r * pr[j] - e_i * pi[j] + (q_r * bre[j] - q_i * bim[j]) * uj[j]
                ni = e_r * pi[j] + e_i * pr[j] + (q_r * bim[j] + q_i * bre[j]) * uj[j]
                pr[j], pi[j] = nr, ni
                er[j], ei[j], qr[j], qi[j] = e_r, e_i, q_r, q_i
                cx[j] = cre[j] * nr - cim[j] * ni
            for j in range(n_j):
                xr[b, t, j] = pr[j]
                xi[b, t, j] = pi[j]
                er_s[b, t, j] = er[j]
                ei_s[b, t, j] = ei[j]
                qr_s[b, t, j] = qr[j]
                qi_s[b, t, j] = qi[j]
            for h in range(n_h):
                acc = d[h] * u[b, t, h]
                for m in range(n_m):
                    acc += cx[h * n_m + m]
                y[b, t, h] = acc


@numba.njit(**_JIT)
def _sequence_backward(
    u,
    dt,
    s,
    a_re,
    a_im,
    b_re,
    b_im,
    c_re,
    c_im,
    d,
    x0r,
    x0i,
    liquid,
    xr,
    xi,
    er_s,
    ei_s,
    qr_s,
    qi_s,
    gy,
    gxr,
    gxi,
    has_gx,
    g_u,
    g_dt,
    g_s,
    g_are,
    g_aim,
    g_bre,
    g_bim,
    g_cre,
    g_cim,
    g_d,
    g_x0r,
    g_x0i,
):  # pragma: no cover - compiled
    """dL/d(every input) of `_sequence_forward` from dL/dy and (has_gx) dL/dxi; the parameter
    gradients accumulate into zeroed arrays. Complex gradients as torch has them (dL/dRe + i dL/dIm):
    for a holomorphic w = f(v), G_v = G_w conj(f'(v)); for a real r in w = c r, dL/dr = Re(G_w conj(c)).
    Laid out as the forward pass: one loop over all modes per step, on arrays of its own."""
    n_b, n_t, n_h = u.shape
    n_m = a_re.shape[1]
    n_j = n_h * n_m
    are, aim, bre, bim = a_re.ravel().copy(), a_im.ravel().copy(), b_re.ravel().copy(), b_im.ravel().copy()
    cre, cim = c_re.ravel().copy(), c_im.ravel().copy()
    ar, ai = np.zeros(n_j), np.zeros(n_j)
    uj, phj, sdtj, gyj = np.empty(n_j), np.empty(n_j), np.empty(n_j), np.empty(n_j)
    gxrj, gxij = np.zeros(n_j), np.zeros(n_j)
    pr, pi, nr, ni = np.empty(n_j), np.empty(n_j), np.empty(n_j), np.empty(n_j)
    er, ei, qr, qi = np.empty(n_j), np.empty(n_j), np.empty(n_j), np.empty(n_j)
    gu_j, gphi_j, gsh_j = np.empty(n_j), np.empty(n_j), np.empty(n_j)
    ajr, aji, glr, gli, gbur, gbui = (
        np.empty(n_j),
        np.empty(n_j),
        np.empty(n_j),
        np.empty(n_j),
        np.empty(n_j),
        np.empty(n_j),
    )
    acc_are, acc_aim, acc_bre, acc_bim = np.zeros(n_j), np.zeros(n_j), np.zeros(n_j), np.zeros(n_j)
    acc_cre, acc_cim = np.zeros(n_j), np.zeros(n_j)
    for b in range(n_b):
        ar[:] = 0.0
        ai[:] = 0.0
        for t in range(n_t - 1, -1, -1):
            for h in range(n_h):
                uu = u[b, t, h]
                ph = _tanh(uu) if liquid else 0.0
                sdt = s[h] * dt[b, t]
                gyv = gy[b, t, h]
                g_d[h] += gyv * uu
                for m in range(n_m):
                    uj[h * n_m + m] = uu
                    phj[h * n_m + m] = ph
                    sdtj[h * n_m + m] = sdt
                    gyj[h * n_m + m] = gyv
            for j in range(n_j):
                nr[j] = xr[b, t, j]
                ni[j] = xi[b, t, j]
                pr[j] = xr[b, t - 1, j] if t > 0 else x0r[b, j]
                pi[j] = xi[b, t - 1, j] if t > 0 else x0i[b, j]
                er[j] = er_s[b, t, j]
                ei[j] = ei_s[b, t, j]
                qr[j] = qr_s[b, t, j]
                qi[j] = qi_s[b, t, j]
                if has_gx:
                    gxrj[j] = gxr[b, t, j]
                    gxij[j] = gxi[b, t, j]
            # Several loops, each writing few arrays: LLVM vectorises a loop only when it can check
            # at run time that its arrays do not overlap, and gives up beyond a few of them.
            for j in range(n_j):
                # the adjoint of xi_t: from the next step, from y_t and from xi_t itself
                a_r = ar[j] + gyj[j] * cre[j] + gxrj[j]
                a_i = ai[j] - gyj[j] * cim[j] + gxij[j]
                ajr[j], aji[j] = a_r, a_i
                ar[j] = a_r * er[j] + a_i * ei[j]  # G_p = a conj(E), carried to t - 1
                ai[j] = a_i * er[j] - a_r * ei[j]
            for j in range(n_j):
                acc_cre[j] += gyj[j] * nr[j]
                acc_cim[j] -= gyj[j] * ni[j]
            for j in range(n_j):
                a_r, a_i = ajr[j], aji[j]
                e_r, e_i, q_r, q_i = er[j], ei[j], qr[j], qi[j]
                # xi_t = E p + Q (B u): G_E = a conj(p), G_Q = a conj(B u), G_Bu = a conj(Q)
                g_er = a_r * pr[j] + a_i * pi[j]
                g_ei = a_i * pr[j] - a_r * pi[j]
                bur, bui = bre[j] * uj[j], bim[j] * uj[j]
                g_qr = a_r * bur + a_i * bui
                g_qi = a_i * bur - a_r * bui
                # E = exp(sdt lambda): dE/dlambda = sdt E, dE/dsdt = lambda E;
                # Q = (E - 1) / lambda: dQ/dlambda = (sdt E - Q) / lambda, dQ/dsdt = E
                sdt = sdtj[j]
                lr = are[j] + bre[j] * phj[j]
                li = aim[j] + bim[j] * phj[j]
                inv = 1.0 / (lr * lr + li * li)
                num_r, num_i = sdt * e_r - q_r, sdt * e_i - q_i
                dq_r = (num_r * lr + num_i * li) * inv
                dq_i = (num_i * lr - num_r * li) * inv
                glr[j] = sdt * (g_er * e_r + g_ei * e_i) + g_qr * dq_r + g_qi * dq_i
                gli[j] = sdt * (g_ei * e_r - g_er * e_i) + g_qi * dq_r - g_qr * dq_i
                gsh_j[j] = g_er * (lr * e_r - li * e_i) + g_ei * (lr * e_i + li * e_r) + g_qr * e_r + g_qi * e_i
            for j in range(n_j):
                a_r, a_i = ajr[j], aji[j]
                gbur[j] = a_r * qr[j] + a_i * qi[j]
                gbui[j] = a_i * qr[j] - a_r * qi[j]
            # lambda = A + B phi, and B u: to A, B, phi and u
            for j in range(n_j):
                acc_are[j] += glr[j]
                acc_aim[j] += gli[j]
            for j in range(n_j):
                acc_bre[j] += phj[j] * glr[j] + uj[j] * gbur[j]
                acc_bim[j] += phj[j] * gli[j] + uj[j] * gbui[j]
            for j in range(n_j):
                gu_j[j] = gbur[j] * bre[j] + gbui[j] * bim[j]
                gphi_j[j] = glr[j] * bre[j] + gli[j] * bim[j]
            gdt = 0.0
            for h in range(n_h):
                gu, gphi, g_sh = gy[b, t, h] * d[h], 0.0, 0.0
                for m in range(n_m):
                    gu += gu_j[h * n_m + m]
                    gphi += gphi_j[h * n_m + m]
                    g_sh += gsh_j[h * n_m + m]
                g_s[h] += g_sh * dt[b, t]
                gdt += g_sh * s[h]
                ph = phj[h * n_m]
                g_u[b, t, h] = gu + gphi * (1.0 - ph * ph)  # phi = tanh u (0 when not liquid)
            g_dt[b, t] = gdt
        for j in range(n_j):
            g_x0r[b, j] = ar[j]
            g_x0i[b, j] = ai[j]
    for h in range(n_h):
        for m in range(n_m):
            j = h * n_m + m
            g_are[h, m] += acc_are[j]
            g_aim[h, m] += acc_aim[j]
            g_bre[h, m] += acc_bre[j]
            g_bim[h, m] += acc_bim[j]
            g_cre[h, m] += acc_cre[j]
            g_cim[h, m] += acc_cim[j]


def _np64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


class _Sequence(torch.autograd.Function):
    """`_sequence_forward` / `_sequence_backward` for autograd, in float64 whatever the dtype:
    (y (B, T, H), Re xi, Im xi (B, T, H * M)); the modes only when `modes` (else empty)."""

    @staticmethod
    def forward(ctx, liquid, modes, u, dt, s, a_re, a_im, b_re, b_im, c_re, c_im, d, x0r, x0i):
        tensors = (u, dt, s, a_re, a_im, b_re, b_im, c_re, c_im, d, x0r, x0i)
        inputs = [_np64(t) for t in tensors]
        n_b, n_t, n_h = u.shape
        shape = (n_b, n_t, n_h * a_re.shape[1])
        y = np.empty((n_b, n_t, n_h))
        # xr, xi, er, ei, qr, qi: sequence.py's pool (fresh megabytes page-fault: 3x the kernel's time)
        stored = Stored((shape,) * 6)
        kept = stored.arrays
        _sequence_forward(*inputs, bool(liquid), y, *kept)
        ctx.liquid, ctx.inputs, ctx.stored = bool(liquid), inputs, stored
        ctx.dtypes = [t.dtype for t in tensors]
        like = u.dtype
        # copies: the pooled arrays go back to the pool with this node
        out_modes = [torch.from_numpy(a).to(like, copy=True) if modes else u.new_empty(0) for a in kept[:2]]
        return (torch.from_numpy(y).to(like), *out_modes)

    @staticmethod
    def backward(ctx, gy, gxr, gxi):
        inputs, kept = ctx.inputs, ctx.stored.arrays
        gy = np.zeros(inputs[0].shape) if gy is None else _np64(gy)
        has_gx = gxr is not None and gxi is not None and gxr.numel() > 0
        gxr = _np64(gxr) if has_gx else np.zeros((1, 1, 1))
        gxi = _np64(gxi) if has_gx else np.zeros((1, 1, 1))
        grads = [np.zeros_like(a) for a in inputs]
        _sequence_backward(*inputs, ctx.liquid, *kept, gy, gxr, gxi, has_gx, *grads)
        return (None, None, *(torch.from_numpy(g).to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True)))
