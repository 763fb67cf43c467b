"""Numba kernels for mixture weights: the one solver of the package (:mod:`shrinkpert.effects.mixture`).

Given a likelihood matrix ``L`` (n × K, row-major, each row scaled so that its maximum is 1)
and Dirichlet penalty exponents ``pen`` (λ_k − 1, length K), these kernels maximise the
penalised log likelihood Σ_j log Σ_k π_k L_jk + Σ_k pen_k log π_k over the simplex, by
mix-SQP (:func:`mixsqp`, the default) or SQUAREM-accelerated EM (:func:`mixem`), and
evaluate the log likelihood at the solution. Rows are processed in fixed-size chunks whose
partial sums are reduced in chunk order, so results do not depend on the number of threads.
Used by ash (:mod:`shrinkpert.effects.ash`), :func:`shrinkpert.effects.shrink.shrink_effects`
and TRADE's transcriptome impact (:mod:`shrinkpert.effects.impact`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel

OPT_MIXSQP, OPT_EM = 0, 1  # optimiser codes
_INF = np.inf
_HESS_EXACT_M = 8  # Hessian blocks up to this size use every observation ...
_HESS_ROWS = 2048  # ... larger ones about this many (see objective_pass)
_HESS_BATCH = 8  # Hessian rows added to H per sweep
_EXACT_HESS_GAP = 1e-3  # below this Frank-Wolfe gap mix-SQP uses the exact Hessian
_ZERO_WEIGHT = 1e-10  # mix-SQP sets smaller weights to exactly 0
_RESTART_FLOOR = 1e-6  # a stalled mix-SQP restarts from its weights raised to at least this ...
_MAX_RESTARTS = 3  # ... at most this many times
_QP_REFINE = 10  # repeated Newton steps on one free set of the QP (nearly singular Hessians)

# --------------------------------------------------------------------------- optimisation passes


@kernel
def _hess_flush(H, buf, m, nb):
    """H[a, b] += Σ_r buf[r, a] buf[r, b] over the nb buffered rows (lower triangle); eight rows
    per sweep of H."""
    if nb == _HESS_BATCH:
        for i in range(m):
            a0 = buf[0, i]
            a1 = buf[1, i]
            a2 = buf[2, i]
            a3 = buf[3, i]
            a4 = buf[4, i]
            a5 = buf[5, i]
            a6 = buf[6, i]
            a7 = buf[7, i]
            for l in range(i + 1):
                H[i, l] += (a0 * buf[0, l] + a1 * buf[1, l] + a2 * buf[2, l] + a3 * buf[3, l]
                            + a4 * buf[4, l] + a5 * buf[5, l] + a6 * buf[6, l] + a7 * buf[7, l])
    else:
        for r in range(nb):
            for i in range(m):
                a = buf[r, i]
                for l in range(i + 1):
                    H[i, l] += a * buf[r, l]


@kernel
def _grad_rows(L, x, eps, idx, m, want_grad, want_hess, hstride, r0, r1, g, H, buf):
    """Accumulate, over rows r0..r1, g_k -= L_jk / u_j and (optionally, on rows j divisible by
    ``hstride``) the Hessian block H[a, b] += L_j,idx[a] L_j,idx[b] / u_j² (lower triangle);
    return -Σ log u_j, with u_j = Σ_k L_jk x_k + eps. ``buf`` (8 × m) batches Hessian rows.
    Without ``want_grad`` only the Hessian rows are visited (g untouched, 0 returned); the
    Hessian is the same to the last bit.

    u_j sums over the support of x only: the skipped terms are exact zeros, so the sum is the
    same to the last bit, and mixture solutions are sparse. Σ log u_j is the log of running
    products of the u_j in [1e-100, 1e100], taken whenever a product leaves [1e-200, 1e200]
    (so it never under- or overflows), plus the log of each other u_j: a log per hundreds of
    rows instead of one per row (7 % of mix-SQP's time at 10k rows), within a few ulps
    per row of the sum of logs."""
    K = L.shape[1]
    sup = np.empty(K, dtype=np.int64)
    ns = 0
    for k in range(K):
        if x[k] != 0.0:
            sup[ns] = k
            ns += 1
    obj = 0.0
    prod = 1.0
    nb = 0
    first = r0 if want_grad else ((r0 + hstride - 1) // hstride) * hstride
    for j in range(first, r1, 1 if want_grad else hstride):
        u = eps
        for i in range(ns):
            k = sup[i]
            u += L[j, k] * x[k]
        q = 1.0 / u
        if want_grad:
            if u > 1e-100 and u < 1e100:
                prod *= u
                if prod < 1e-200 or prod > 1e200:
                    obj -= math.log(prod)
                    prod = 1.0
            else:
                obj -= math.log(u)
            for k in range(K):
                g[k] -= q * L[j, k]
        if want_hess and j % hstride == 0:
            qh = q if u > 1e-150 else 1e150  # no overflow for absurdly small densities
            for i in range(m):
                buf[nb, i] = L[j, idx[i]] * qh
            nb += 1
            if nb == _HESS_BATCH:
                _hess_flush(H, buf, m, nb)
                nb = 0
    if nb > 0:
        _hess_flush(H, buf, m, nb)
    return obj - math.log(prod)


@kernel(parallel=True)
def _grad_pass_par(L, x, eps, idx, m, want_grad, want_hess, hstride, chunk, gp, Hp, op):
    n = L.shape[0]
    nchunks = gp.shape[0]
    for c in prange(nchunks):
        if want_grad:
            gp[c, :] = 0.0
        if want_hess:
            Hp[c, :m, :m] = 0.0
        buf = np.empty((_HESS_BATCH, m))
        op[c] = _grad_rows(L, x, eps, idx, m, want_grad, want_hess, hstride, c * chunk, min(n, (c + 1) * chunk),
                           gp[c], Hp[c], buf)


@kernel
def _grad_pass_ser(L, x, eps, idx, m, want_grad, want_hess, hstride, chunk, gp, Hp, op):
    n = L.shape[0]
    nchunks = gp.shape[0]
    buf = np.empty((_HESS_BATCH, m))
    for c in range(nchunks):
        if want_grad:
            gp[c, :] = 0.0
        if want_hess:
            Hp[c, :m, :m] = 0.0
        op[c] = _grad_rows(L, x, eps, idx, m, want_grad, want_hess, hstride, c * chunk, min(n, (c + 1) * chunk),
                           gp[c], Hp[c], buf)


@kernel
def objective_pass(L, pen, x, eps, idx, m, want_hess, approx_hess, parallel, chunk, gp, Hp, op, g, H):
    """Normalised penalised objective f(x) = -(Σ_j log u_j + Σ_k c_k log(x_k + eps)) / W,
    its gradient ``g`` (length K) and, if ``want_hess``, the Hessian block on ``idx[:m]``
    (``H[:m, :m]``, symmetric). W = n + Σ_k c_k. Returns f(x).

    With ``approx_hess``, a large block (m > 8) is estimated from every s-th observation
    (s = n // 2048, scaled by s): it only shapes the search direction.
    """
    return _pass(L, pen, x, eps, idx, m, True, want_hess, approx_hess, parallel, chunk, gp, Hp, op, g, H)


@kernel
def hessian_pass(L, pen, x, eps, idx, m, approx_hess, parallel, chunk, gp, Hp, op, H):
    """The Hessian block of :func:`objective_pass` alone (the same values to the last bit),
    visiting only the observations it uses. For a point whose objective and gradient are known."""
    _pass(L, pen, x, eps, idx, m, False, True, approx_hess, parallel, chunk, gp, Hp, op, pen, H)


@kernel
def _pass(L, pen, x, eps, idx, m, want_grad, want_hess, approx_hess, parallel, chunk, gp, Hp, op, g, H):
    """:func:`objective_pass`; without ``want_grad`` neither f nor g (returns 0, g untouched)."""
    n, K = L.shape
    hstride = 1
    if approx_hess and m > _HESS_EXACT_M:
        hstride = max(1, n // _HESS_ROWS)
    if parallel:
        _grad_pass_par(L, x, eps, idx, m, want_grad, want_hess, hstride, chunk, gp, Hp, op)
    else:
        _grad_pass_ser(L, x, eps, idx, m, want_grad, want_hess, hstride, chunk, gp, Hp, op)
    W = n * 1.0
    for k in range(K):
        W += pen[k]
    obj = 0.0
    if want_grad:
        for k in range(K):
            g[k] = 0.0
    if want_hess:
        for i in range(m):
            for l in range(i + 1):
                H[i, l] = 0.0
    for c in range(gp.shape[0]):  # reduce in chunk order: independent of thread count
        if want_grad:
            obj += op[c]
            for k in range(K):
                g[k] += gp[c, k]
        if want_hess:
            for i in range(m):
                for l in range(i + 1):
                    H[i, l] += Hp[c, i, l]
    if want_grad:
        for k in range(K):
            if pen[k] != 0.0:
                obj -= pen[k] * math.log(x[k] + eps)
                g[k] -= pen[k] / (x[k] + eps)
        for k in range(K):
            g[k] /= W
    if want_hess:
        if hstride > 1:
            for i in range(m):
                for l in range(i + 1):
                    H[i, l] *= hstride
        for i in range(m):
            k = idx[i]
            if pen[k] != 0.0:
                H[i, i] += pen[k] / ((x[k] + eps) * (x[k] + eps))
        for i in range(m):
            for l in range(i + 1):
                H[i, l] /= W
                H[l, i] = H[i, l]
    return obj / W


@kernel
def _fw_gap(g, x):
    """Frank–Wolfe gap of the normalised problem at x / Σx: -(1 + Σx · min_k g_k) clipped at 0.
    (For x on the simplex Σ_k x_k g_k = -1, so this bounds f(x) - min f.)"""
    sx = 0.0
    for k in range(x.shape[0]):
        sx += x[k]
    gmin = _INF
    for k in range(g.shape[0]):
        if np.isnan(g[k]):  # an observation without density: as far from optimal as it gets
            return _INF
        if g[k] < gmin:
            gmin = g[k]
    return -(1.0 + sx * gmin)


# --------------------------------------------------------------------------- QP (active set)


@kernel
def _chol_solve(A, free, m, rhs, out, work):
    """Solve A[F, F] z = rhs[F] for the free set F (ridge-stabilised Cholesky); out[~F] = 0."""
    nf = 0
    for i in range(m):
        if free[i]:
            nf += 1
    pos = np.empty(nf, dtype=np.int64)
    t = 0
    for i in range(m):
        if free[i]:
            pos[t] = i
            t += 1
    dmax = 0.0
    for i in range(nf):
        dmax = max(dmax, A[pos[i], pos[i]])
    ridge = 1e-12 * max(dmax, 1e-300)
    Lc = work[:nf, :nf]
    for i in range(nf):
        for l in range(i + 1):
            sm = A[pos[i], pos[l]]
            for q in range(l):
                sm -= Lc[i, q] * Lc[l, q]
            if i == l:
                sm += ridge
                Lc[i, i] = math.sqrt(sm) if sm > 0.0 else math.sqrt(ridge)
            else:
                Lc[i, l] = sm / Lc[l, l]
    z = np.empty(nf)
    for i in range(nf):
        sm = rhs[pos[i]]
        for q in range(i):
            sm -= Lc[i, q] * z[q]
        z[i] = sm / Lc[i, i]
    for i in range(nf - 1, -1, -1):
        sm = z[i]
        for q in range(i + 1, nf):
            sm -= Lc[q, i] * z[q]
        z[i] = sm / Lc[i, i]
    for i in range(m):
        out[i] = 0.0
    for i in range(nf):
        out[pos[i]] = z[i]


@kernel
def _qp_value(H, c, y, m):
    """(½ yᵀHy + cᵀy, ½ |y|ᵀ|H||y| + |c|ᵀ|y|): the QP objective and the scale of its rounding."""
    val = 0.0
    scale = 0.0
    for i in range(m):
        hy = 0.0
        ahy = 0.0
        for l in range(m):
            hy += H[i, l] * y[l]
            ahy += abs(H[i, l] * y[l])
        val += y[i] * (0.5 * hy + c[i])
        scale += abs(y[i]) * (0.5 * ahy + abs(c[i]))
    return val, scale


@kernel
def qp_active_set(H, c, y, m, tol, max_iter):
    """Minimise ½ yᵀHy + cᵀy subject to y >= 0 (primal active-set method), starting from the
    feasible ``y`` (overwritten with the solution). Only ``H[:m, :m]``, ``c[:m]``, ``y[:m]`` are
    used. Returns the number of iterations (Cholesky solves).

    Each iteration moves from ``y`` towards the minimiser of the quadratic over the free set F
    (the others held at 0): ``p_F = -H_FF⁻¹ (H y + c)_F``, as far as feasibility allows. A
    blocked step fixes the blocking coordinate at 0. An unblocked step is repeated on the same
    free set while it still lowers the objective by more than its rounding (1e-14 of the
    scale of its terms, at most :data:`_QP_REFINE` times: on nearly singular Hessians one
    ridge-stabilised solve does not reach the minimiser); then the multipliers
    ``(H y + c)_i`` of the fixed coordinates are inspected and the most negative one below
    ``-tol`` is released, else ``y`` is optimal. (Testing the length of the next step instead,
    as this solver did before, keeps taking steps of rounding size on mixtures with almost
    collinear components until ``max_iter``.) A release undone by the very next ratio test
    with a zero step is degenerate: the search stops there rather than cycle.
    """
    free = np.empty(m, dtype=np.bool_)
    for i in range(m):
        free[i] = y[i] > 0.0
    grad = np.empty(m)
    rhs = np.empty(m)
    p = np.empty(m)
    work = np.empty((m, m))
    released = -1
    refined = 0
    val, scale = _qp_value(H, c, y, m)
    it = 0
    while it < max_iter:
        it += 1
        for i in range(m):
            sm = c[i]
            for l in range(m):
                sm += H[i, l] * y[l]
            grad[i] = sm
            rhs[i] = -sm
        nfree = 0
        for i in range(m):
            if free[i]:
                nfree += 1
        if nfree > 0:
            _chol_solve(H, free, m, rhs, p, work)
        else:
            for i in range(m):
                p[i] = 0.0
        # exact minimum of the quadratic along p (>= 1: the ridge only shortens p), then the
        # ratio test; on an unbounded ray the Newton step is kept
        gp_ = 0.0
        pHp = 0.0
        for i in range(m):
            if free[i]:
                gp_ += grad[i] * p[i]
                hp = 0.0
                for l in range(m):
                    if free[l]:
                        hp += H[i, l] * p[l]
                pHp += p[i] * hp
        reach = _INF
        if pHp > 0.0 and gp_ < 0.0:
            reach = max(1.0, -gp_ / pHp)
        step = reach
        block = -1
        for i in range(m):
            if free[i] and p[i] < 0.0:
                tt = -y[i] / p[i]
                if tt < step:
                    step = tt
                    block = i
        if step == _INF:
            step = 1.0
        for i in range(m):
            if free[i]:
                y[i] += step * p[i]
                if y[i] < 0.0:
                    y[i] = 0.0
        if block >= 0:
            y[block] = 0.0
            free[block] = False
            val, scale = _qp_value(H, c, y, m)
            refined = 0
            if block == released and step == 0.0:
                break  # degenerate: the coordinate just released cannot move
            released = -1
            continue
        new_val, scale = _qp_value(H, c, y, m)
        gain = val - new_val
        val = new_val
        if gain > 1e-14 * scale and refined < _QP_REFINE:
            refined += 1
            continue
        # at the minimiser on the free set: release the most negative multiplier, if any
        refined = 0
        worst = -1
        wval = -tol
        for i in range(m):
            if not free[i]:
                sm = c[i]
                for l in range(m):
                    sm += H[i, l] * y[l]
                if sm < wval:
                    wval = sm
                    worst = i
        if worst < 0:
            break
        free[worst] = True
        released = worst
    return it


# --------------------------------------------------------------------------- mix-SQP and EM


@kernel
def clip_normalize(x):
    """In place: :math:`x_k \\leftarrow \\max(x_k, 0) / \\sum_j \\max(x_j, 0)` (summed in index order)."""
    tot = 0.0
    for k in range(x.shape[0]):
        x[k] = max(x[k], 0.0)
        tot += x[k]
    for k in range(x.shape[0]):
        x[k] /= tot


@kernel
def _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xnew):
    """One EM step x_k <- (x_k Σ_j L_jk/u_j + c_k) / W. Returns (f(x), FW gap at x)."""
    n, K = L.shape
    obj = objective_pass(L, pen, x, 0.0, idx, 0, False, False, parallel, chunk, gp, Hp, op, g, H)
    gap = _fw_gap(g, x)
    # g_k = -(Σ_j L_jk/u_j + c_k/x_k)/W  =>  x_k (-g_k) = (x_k Σ_j L_jk/u_j + c_k)/W
    tot = 0.0
    for k in range(K):
        v = -x[k] * g[k]
        if not v > 0.0:
            v = 0.0
        xnew[k] = v
        tot += v
    for k in range(K):
        xnew[k] /= tot
    return obj, gap


@kernel
def mixem(L, pen, x, tol, max_iter, parallel, chunk):
    """Penalised EM for the mixture weights, accelerated by SQUAREM (Varadhan & Roland 2008,
    scheme S3, step bound 1, 4, 16, ...), with a fall-back to the plain double EM step whenever
    the extrapolated point raises the negative penalised log likelihood by more than 1
    (SQUAREM's ``objfn.inc``). ``x`` (length K, positive) is the start and receives the solution.
    Stops when the Frank–Wolfe gap is <= tol. Returns (n_em_steps, converged)."""
    n, K = L.shape
    nchunks = max(1, (n + chunk - 1) // chunk)
    gp = np.empty((nchunks, K))
    Hp = np.empty((nchunks, 1, 1))
    op = np.empty(nchunks)
    g = np.empty(K)
    H = np.empty((1, 1))
    idx = np.zeros(1, dtype=np.int64)
    x1 = np.empty(K)
    x2 = np.empty(K)
    x3 = np.empty(K)
    xs = np.empty(K)
    clip_normalize(x)
    W = n * 1.0
    for k in range(K):
        W += pen[k]
    step_max = 1.0
    n_steps = 0
    converged = False
    obj0, gap = _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, x1)
    n_steps += 1
    while n_steps < max_iter:
        if gap <= tol:
            converged = True
            break
        obj1, gap1 = _em_step(L, pen, x1, parallel, chunk, gp, Hp, op, g, H, idx, x2)
        n_steps += 1
        sr = 0.0
        sv = 0.0
        for k in range(K):
            r = x1[k] - x[k]
            v = x2[k] - 2.0 * x1[k] + x[k]
            sr += r * r
            sv += v * v
        alpha = math.sqrt(sr / sv) if sv > 0.0 else 1.0
        alpha = max(1.0, min(step_max, alpha))
        tot = 0.0
        for k in range(K):
            r = x1[k] - x[k]
            v = x2[k] - 2.0 * x1[k] + x[k]
            xs[k] = max(0.0, x[k] + 2.0 * alpha * r + alpha * alpha * v)
            tot += xs[k]
        for k in range(K):
            xs[k] /= tot
        objs, gaps = _em_step(L, pen, xs, parallel, chunk, gp, Hp, op, g, H, idx, x3)
        n_steps += 1
        # accept unless the objective rises by more than 1 on the log-likelihood scale
        # (SQUAREM's objfn.inc = 1); the plain double EM step is the fall-back
        if objs <= obj0 + 1.0 / W and np.isfinite(objs):
            for k in range(K):
                x[k] = xs[k]
            obj0 = objs
            gap = gaps
            for k in range(K):
                x1[k] = x3[k]
            if alpha == step_max:
                step_max *= 4.0
        else:
            # extrapolation failed: keep the monotone EM double step
            for k in range(K):
                x[k] = x2[k]
            obj0, gap = _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, x1)
            n_steps += 1
            step_max = max(1.0, step_max / 4.0)
    clip_normalize(x)
    return n_steps, converged


@kernel
def mixsqp(L, pen, x, eps, tol, max_iter, n_em, parallel, chunk):
    """Sequential quadratic programming for the mixture weights (after Kim, Carbonetto, Stephens
    & Anitescu 2020, "mix-SQP").

    Minimises f(x) + Σ_k x_k over x >= 0, whose solution lies on the simplex, where f is the
    normalised penalised negative log likelihood of :func:`objective_pass`. After ``n_em`` EM
    steps (a sparse start, e.g. the solution for a subsample, is used as is unless it leaves
    observations without support), each iteration

    1. forms the gradient g and the Hessian H on the working set: the support of x plus the
       coordinates whose gradient asks to enter (H from every s-th observation while the set
       has more than 8 members, no step has needed backtracking yet and the Frank–Wolfe gap
       is still above 1e-3);
    2. solves the QP min_y ½ (y - x)ᵀH(y - x) + (g + 1)ᵀ(y - x), y >= 0 over the working set
       (other coordinates fixed) by an active-set method;
    3. backtracks along y - x (Armijo constant 0.01, factor 0.75, rounding noise of f
       tolerated); a step is also refused if it multiplies the Frank–Wolfe gap by more than
       10, which keeps every observation's mixture density away from 0;
    4. sets weights below 1e-10 to 0 (unless that strands an observation).

    If it stalls above the tolerance (no descent direction, or no acceptable step), it
    restarts from the current weights raised to at least 1e-6 and renormalised, with the
    exact Hessian on all coordinates (at most 3 times): on half-uniform mixtures an active set
    that has dropped a needed component can otherwise end the search with a gap of ~1e-5.

    Stops when the Frank–Wolfe gap -(1 + Σx min_k g_k) <= tol. ``x`` is the start (length K)
    and receives the solution, clipped at 0 and normalised. Returns (n_iterations, converged).
    """
    n, K = L.shape
    nchunks = max(1, (n + chunk - 1) // chunk)
    gp = np.empty((nchunks, K))
    Hp = np.empty((nchunks, K, K))
    op = np.empty(nchunks)
    g = np.empty(K)
    H = np.zeros((K, K))
    gt = np.empty(K)
    Ht = np.zeros((K, K))
    idx = np.arange(K)
    idxt = np.empty(K, dtype=np.int64)
    xt = np.empty(K)
    xs = np.empty(K)
    gz = np.empty(K)
    p = np.zeros(K)
    Hs = np.empty((K, K))
    cs = np.empty(K)
    ys = np.empty(K)
    clip_normalize(x)
    for it in range(n_em):
        _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xt)
        for k in range(K):
            x[k] = xt[k]
    approx = True  # subsampled Hessian blocks until the first step that needs backtracking
    m = 0
    for k in range(K):
        if x[k] > 0.0:
            idx[m] = k
            m += 1
    obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
    if m < K and _fw_gap(g, x) > 1.0:
        # a sparse start that leaves some observations without support: restart from the
        # start mixed with the uniform weights, after two EM steps
        for k in range(K):
            x[k] = 0.5 * x[k] + 0.5 / K
        for it in range(2):
            _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xt)
            for k in range(K):
                x[k] = xt[k]
        m = K
        for k in range(K):
            idx[k] = k
        obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
    have_hess = True
    converged = False
    restarts = 0
    it = 0
    for it in range(max_iter):
        if _fw_gap(g, x) <= tol:
            converged = True
            break
        if _fw_gap(g, x) < _EXACT_HESS_GAP:
            approx = False  # near the optimum a subsampled Hessian only gives a linear rate
        # working set: support of x and every coordinate whose gradient says it should enter
        sx = 0.0
        for k in range(K):
            sx += x[k]
        for k in range(K):
            if x[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                covered = False
                if have_hess:
                    for i in range(m):
                        if idx[i] == k:
                            covered = True
                            break
                if not covered:
                    have_hess = False
        if not have_hess:
            m = 0
            for k in range(K):
                if x[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                    idx[m] = k
                    m += 1
            hessian_pass(L, pen, x, eps, idx, m, approx, parallel, chunk, gp, Hp, op, H)  # f, g are current
            have_hess = True
        # QP in the step y = x + p over the working set
        for i in range(m):
            sm = g[idx[i]] + 1.0
            for l in range(m):
                sm -= H[i, l] * x[idx[l]]
                Hs[i, l] = H[i, l]
            cs[i] = sm
            ys[i] = x[idx[i]]
        qp_active_set(Hs, cs, ys, m, 1e-14, 50 * (m + 1))
        for k in range(K):
            p[k] = 0.0
        for i in range(m):
            p[idx[i]] = ys[i] - x[idx[i]]
        dd = 0.0
        for k in range(K):
            dd += (g[k] + 1.0) * p[k]
        stalled = not dd < 0.0  # no descent direction left at machine precision
        phi = obj + sx
        gap = _fw_gap(g, x)
        alpha = 1.0
        accepted = False
        while not stalled:
            sxt = 0.0
            for k in range(K):
                v = x[k] + alpha * p[k]
                xt[k] = v if v > 0.0 else 0.0
                sxt += xt[k]
            want = alpha == 1.0
            mt = 0
            if want:  # guess the next working set so that the accepted pass brings its Hessian
                for k in range(K):
                    if xt[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                        idxt[mt] = k
                        mt += 1
            objt = objective_pass(L, pen, xt, eps, idxt, mt, want, approx, parallel, chunk,
                                  gp, Hp, op, gt, Ht)
            # Armijo, and no collapse of the gradient: a full step can zero every component
            # that supports some observation, after which the quadratic model of -log only
            # doubles that observation's density per iteration
            # (the Armijo test allows rounding noise of f: near the optimum a Newton step can gain
            # less than one ulp of f while still reducing the gradient residual)
            if (objt + sxt <= phi + 0.01 * alpha * dd + 4e-16 * abs(phi)
                    and _fw_gap(gt, xt) <= max(10.0 * gap, 1.0)):
                accepted = True
                break
            alpha *= 0.75
            approx = False
            if alpha < 1e-10:
                break
        if not accepted:
            if restarts >= _MAX_RESTARTS:
                break
            restarts += 1
            tot = 0.0
            for k in range(K):
                x[k] = max(x[k], _RESTART_FLOOR)
                tot += x[k]
            for k in range(K):
                x[k] /= tot
            approx = False
            m = K
            for k in range(K):
                idx[k] = k
            obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
            have_hess = True
            continue
        for k in range(K):
            x[k] = xt[k]
            g[k] = gt[k]
        obj = objt
        # drop weights that are numerically zero (mixsqp's zero threshold): otherwise steps
        # shorter than 1 leave every coordinate positive and the working set never shrinks
        zeroed = False
        for k in range(K):
            xs[k] = x[k]
            if x[k] < _ZERO_WEIGHT and pen[k] == 0.0 and x[k] > 0.0:
                x[k] = 0.0
                zeroed = True
        if zeroed:  # g and H refer to the point before zeroing
            objz = objective_pass(L, pen, x, eps, idx, 0, False, approx, parallel, chunk, gp, Hp, op, gz, H)
            if np.isfinite(objz) and _fw_gap(gz, x) <= max(10.0 * _fw_gap(g, xs), 1e-6):
                obj = objz
                for k in range(K):
                    g[k] = gz[k]
                want = False
            else:  # some observation relied on a dropped weight: keep them
                for k in range(K):
                    x[k] = xs[k]
        if want:
            m = mt
            for i in range(m):
                idx[i] = idxt[i]
                for l in range(m):
                    H[i, l] = Ht[i, l]
            have_hess = True
        else:
            have_hess = False
    clip_normalize(x)
    if not converged:
        converged = _fw_gap(g, x) <= tol
    return it, converged


# --------------------------------------------------------------------------- fit summaries


@kernel
def _loglik_rows(L, rowmax, pi, r0, r1):
    tot = 0.0
    for j in range(r0, r1):
        u = 0.0
        for k in range(L.shape[1]):
            u += pi[k] * L[j, k]
        tot += math.log(u) + rowmax[j]
    return tot


@kernel
def loglik_rows(L, rowmax, pi):
    """Σ_j log(Σ_k π_k L_jk) + rowmax_j (the unpenalised log likelihood), serially."""
    return _loglik_rows(L, rowmax, pi, 0, L.shape[0])


@kernel(parallel=True)
def loglik_par(L, rowmax, pi, chunk):
    """:func:`loglik_rows` by chunks of rows in parallel, reduced in chunk order."""
    n = L.shape[0]
    nchunks = max(1, (n + chunk - 1) // chunk)
    parts = np.empty(nchunks)
    for c in prange(nchunks):
        parts[c] = _loglik_rows(L, rowmax, pi, c * chunk, min(n, (c + 1) * chunk))
    tot = 0.0
    for c in range(nchunks):
        tot += parts[c]
    return tot


@kernel
def loglik_chunked(L, rowmax, pi, chunk):
    """:func:`loglik_par` serially (same chunks, same result)."""
    n = L.shape[0]
    nchunks = max(1, (n + chunk - 1) // chunk)
    tot = 0.0
    for c in range(nchunks):
        tot += _loglik_rows(L, rowmax, pi, c * chunk, min(n, (c + 1) * chunk))
    return tot
