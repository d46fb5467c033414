"""The gradient of the logits losses: ``d loss / d logits`` by one fused pass per row.

For one row with (soft-capped, masked) logits ``u``, ``p = softmax(u)`` and the front end's
per-row coefficients ``g_loss`` (of the loss), ``g_zsq`` (of ``lse**2``, the z-loss) and
``g_lse`` (of the returned log-sum-exp), the gradient with respect to ``u`` is

    g_j = a p_j - b_j,   a = g_loss sum_c q_c + g_lse + 2 g_zsq lse,   b_j = g_loss q_j

where ``q`` is the row's effective target: ``q = w_y (1 - eps) onehot(y) + eps w / C``
(sparse, PyTorch's weighted smoothing; ``w = 1`` without weights) or
``q = w ((1 - eps) t + eps / C)`` (dense).  Soft-capping multiplies by
``d u / d z = 1 - (u / cap)**2``; a masked class gets 0.

Fused pass (``lse_in`` empty): the first sweep reads the row from memory, stores
``e_j = exp(u_j - M)`` in a per-thread buffer and sums it (the shift ``M`` guessed and checked
as in :mod:`stream`); the loss and ``lse`` come from those sums, and the second sweep reads
the buffer from cache and writes ``g_j = (a / s) e_j - b_j``.  One exp per element, the
logits read from memory once and the gradient written once.  Given ``lse_in`` (a backward
after a forward that saved it) the first sweep computes ``exp(u_j - hi)`` with ``hi`` the
``lse`` in the work type and renormalises by their sum: ``exp(u_j -
float32(lse))`` would cost ``p`` ``|lse| 6e-8`` relative, and two tied logits of 1e38 got
1 each.  The short-row gradient (no per-row sum) takes ``exp(u_j - hi) / exp(lse - hi)``
from the float64 ``lse`` the forward saves (:func:`_block_factors`; renormalised beyond
``LSE_SERIES``).

``grad`` may be the logits array itself (in place): each row is read completely before
its gradient is written.
"""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW, SCALAR
from ._half import narrow, widen, work_empty
from ._math import as_type_of, fast_exp, fast_exp2
from .rows import _cap_mask_row, _cap_row, _weigh_mask_targets, row_chunks, weigh_targets
from .stream import (
    ACCEPT,
    IGNORED,
    LOG2E,
    PREFETCH_AHEAD,
    STREAM_BLOCK,
    dense_row_finish,
    guess_shift,
    prefetch_span,
    row_max,
    row_sum,
    row_sum_exp,
    sparse_guess,
    sparse_row_loss,
)

#: The short-row functions are inlined into the kernels by Numba: as calls, their array
#: arguments cost reference-count updates on memory both threads share, which matters when
#: a row is ten elements (1,000,000 x 10 float32 sparse: 47 ms as calls, 36 ms inlined,
#: AMD EPYC).  The long-row functions stay calls: inlining them tripled the compile time
#: (7.5 s -> 19.4 s for one signature) for nothing measurable.
INLINED = dict(SCALAR, inline="always")


#: Largest ``|lse|`` whose float64 value a short-row gradient takes as it is (its float32
#: neighbour then lies within 1e-3 of it: :func:`_block_factors`' series is exact to 2e-13);
#: beyond, the row's softmax is renormalised instead (near 1e38 float64 has lost ``log s``
#: too: two tied logits got 1 each).
LSE_SERIES = 2.0**14


@njit(**INLINED)
def _block_factors(z, lse, r0, r1, hi_row, f_row):
    """For the rows ``r0:r1`` of a short-row block and their float64 ``lse``: ``hi_row`` the
    ``lse`` in the work type, ``f_row = exp(hi - lse)`` (float64), so that ``exp(z - lse) = f
    exp(z - hi)``.

    A float32 gradient cannot take ``exp(z - float32(lse))``: rounding ``lse`` to float32
    moves it by up to ``|lse| 6e-8``, so every ``p`` by that much relative (6e-5 at ``|z|``
    near 1e3).  ``z - hi`` is exact where ``p`` matters (Sterbenz: ``z`` near the maximum);
    ``lse - hi`` (at most 1e-3 up to ``LSE_SERIES``) goes into the row's scale by its series,
    no libm exp per row; rows beyond are renormalised.  One loop over the rows, which LLVM
    vectorises (inside the per-row loop it cost 10%, AMD EPYC Zen 3).  NaN gives NaN."""
    like = hi_row[0]
    top = 0.0
    for r in range(r1 - r0):
        lse_r = lse[r0 + r]
        hi = as_type_of(lse_r, like)
        hi_row[r] = hi
        lo = lse_r - np.float64(hi)
        f_row[r] = 1.0 - lo * (1.0 - lo * (0.5 - lo / 6.0))
        top = max(top, abs(lse_r))
    if not top <= LSE_SERIES:  # some row beyond (or NaN): renormalise those rows
        for r in range(r1 - r0):
            if abs(lse[r0 + r]) > LSE_SERIES:  # float64 has lost log s
                f_row[r] = 1.0 / row_sum_exp(z[r0 + r], hi_row[r])


@njit(**ROW)
def _block_exps(block, shift, exact, eblock):
    """``eblock = exp(block - shift)``; returns its sum (float64)."""
    log2e = as_type_of(LOG2E, shift)
    acc = as_type_of(0.0, shift)
    for j in range(block.shape[0]):
        d = widen(block[j]) - shift
        e = fast_exp(d) if exact else fast_exp2(d * log2e)
        eblock[j] = e
        acc += e
    return np.float64(acc)


@njit(**ROW)
def _block_dense_exps(block, tblock, shift, exact, eblock):
    """:func:`_block_exps` plus the target sums ``(sum t, sum t (z - shift))``."""
    zero = as_type_of(0.0, shift)
    log2e = as_type_of(LOG2E, shift)
    s = zero
    t_sum = zero
    tz = zero
    for j in range(block.shape[0]):
        d = widen(block[j]) - shift
        t = as_type_of(widen(tblock[j]), shift)
        e = fast_exp(d) if exact else fast_exp2(d * log2e)
        eblock[j] = e
        s += e
        t_sum += t
        tz += t * d if t != zero else zero
    return np.float64(s), np.float64(t_sum), np.float64(tz)


#: Rows of at most this many classes skip the guessed shift, the prefetch and the blocks:
#: for them that bookkeeping cost more than the exps (1,000,000 x 10 float32: 67 -> 2x ms
#: measured, AMD EPYC).
SMALL_ROW = 64


@njit(**ROW)
def exps_into(row, shift, exact, ebuf):
    """``ebuf = exp(row - shift)`` streamed with prefetch; returns ``sum ebuf`` (float64)."""
    if row.shape[0] <= SMALL_ROW:
        return _block_exps(row, shift, exact, ebuf)
    s = 0.0
    prefetch_span(row, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        s += _block_exps(row[q : q + STREAM_BLOCK], shift, exact, ebuf[q : q + STREAM_BLOCK])
    return s


@njit(**ROW)
def dense_exps_into(row, trow, shift, exact, ebuf):
    """:func:`exps_into` plus the target sums, as :func:`stream.dense_row_sums`."""
    if row.shape[0] <= SMALL_ROW:
        return _block_dense_exps(row, trow, shift, exact, ebuf)
    s = 0.0
    t_sum = 0.0
    tz = 0.0
    prefetch_span(row, 0, PREFETCH_AHEAD)
    prefetch_span(trow, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        ahead = q + PREFETCH_AHEAD
        prefetch_span(row, ahead, ahead + STREAM_BLOCK)
        prefetch_span(trow, ahead, ahead + STREAM_BLOCK)
        stop = q + STREAM_BLOCK
        bs, bt, btz = _block_dense_exps(row[q:stop], trow[q:stop], shift, exact, ebuf[q:stop])
        s += bs
        t_sum += bt
        tz += btz
    return s, t_sum, tz


@njit(**SCALAR)
def _sparse_exps(src, y, ebuf):
    """``(M, s)`` with ``ebuf = exp(src - M)``, ``s = sum ebuf``: one pass with a guessed
    shift, the exact two-pass path when it is rejected (as :func:`stream.row_lse_parts`);
    a short row takes its exact maximum at once."""
    if src.shape[0] <= SMALL_ROW:
        m = row_max(src)
        return np.float64(m), exps_into(src, m, True, ebuf)
    guess = sparse_guess(src, y)
    s = exps_into(src, guess, False, ebuf)
    if s <= ACCEPT:  # False for NaN
        return np.float64(guess), s
    m = row_max(src)
    return np.float64(m), exps_into(src, m, True, ebuf)


@njit(**SCALAR)
def _dense_exps(src, tsrc, ebuf):
    if src.shape[0] <= SMALL_ROW:
        m = row_max(src)
        s, t_sum, tz = dense_exps_into(src, tsrc, m, True, ebuf)
        return m, s, t_sum, tz
    m = guess_shift(src)
    s, t_sum, tz = dense_exps_into(src, tsrc, m, False, ebuf)
    if not s <= ACCEPT:
        m = row_max(src)
        s, t_sum, tz = dense_exps_into(src, tsrc, m, True, ebuf)
    return m, s, t_sum, tz


@njit(**ROW)
def _write_grad(ebuf, a, b, tsrc, tc, w, wc, u, inv_cap, grow):
    """``grow = (a e - b - tc t - wc w) (1 - (u inv_cap)**2)`` with the terms whose
    coefficient is 0 left out (``tc``: targets, ``wc``: class weights, ``inv_cap``: the
    soft-capping factor); the choices are loop-invariant, so each combination vectorises."""
    one = as_type_of(1.0, a)
    for j in range(ebuf.shape[0]):
        g = a * ebuf[j] - b
        if tc != 0.0:
            g -= tc * as_type_of(widen(tsrc[j]), a)
        if wc != 0.0:
            g -= wc * as_type_of(w[j], a)
        if inv_cap != 0.0:
            v = u[j] * inv_cap
            g *= one - v * v
        grow[j] = narrow(g, grow)


@njit(**ROW)
def _zero_row(grow):
    for j in range(grow.shape[0]):
        grow[j] = narrow(np.float32(0.0), grow)


@njit(**ROW)
def _zero_masked(grow, keep):
    for j in range(grow.shape[0]):
        if not keep[j]:
            grow[j] = narrow(np.float32(0.0), grow)


@njit(**SCALAR)
def _cap_factor(u_y, cap):
    v = u_y / cap
    return 1.0 - v * v if cap != 0.0 else 1.0


@njit(**SCALAR)
def _finish_grad(ebuf, a, s, b, tsrc, tc, w, wc, src, cap, grow):
    """The second sweep in the work type: ``p = e / s`` scaled by ``a`` and the target
    terms taken off (see :func:`_write_grad`)."""
    work = ebuf[0]
    inv_cap = 1.0 / cap if cap != 0.0 else 0.0
    _write_grad(
        ebuf,
        as_type_of(a / s, work),
        as_type_of(b, work),
        tsrc,
        as_type_of(tc, work),
        w,
        as_type_of(wc, work),
        src,
        as_type_of(inv_cap, work),
        grow,
    )


@njit(**SCALAR)
def _coefficient(gl, smoothing, q_main, w_total, c, zsq2, lse, gle):
    """A row's ``a``: ``gl`` times the sum of its effective target (``(1 - eps) q_main +
    eps w_total / C``), plus the lse-dependent terms ``2 g_zsq lse + g_lse``."""
    a = gl * ((1.0 - smoothing) * q_main + smoothing * w_total / c) + gle
    return a + (zsq2 * lse if zsq2 != 0.0 else 0.0)


@njit(**SCALAR)
def _sweep(ebuf, a, s, gl, smoothing, weighted, tsrc, tc, w, src, cap, grow):
    """The second sweep of a row (smoothing's share of the target taken off as a constant,
    or per class when weighted); a row with nothing to differentiate gets exact zeros (even
    where its logits are NaN).  Returns whether the sweep ran."""
    if gl == 0.0 and a == 0.0:
        _zero_row(grow)
        return False
    c = ebuf.shape[0]
    b = 0.0 if weighted else gl * smoothing / c
    wc = gl * smoothing / c if weighted else 0.0
    _finish_grad(ebuf, a, s, b, tsrc, tc, w, wc, src, cap, grow)
    return True


@njit(**INLINED)
def _small_sparse_grad_row(src, y, smoothing, w, lse_given, lse_in, gl, zsq2, gle, cap, ebuf, grow):
    """:func:`_sparse_grad_row` for rows of at most ``SMALL_ROW`` classes: plain loops, the
    exact maximum as the shift, the loss's sums taken in the same loop (the streaming row
    code's set-up per row outweighs ten elements: 1,000,000 x 10 float32, 63 -> 2x ms)."""
    c = src.shape[0]
    weighted = w.shape[0] == c
    counted = y != IGNORED and 0 <= y < c
    first = widen(src[0])
    if lse_given:  # p renormalised by the row's own sum below: exact however lse was rounded
        m = as_type_of(lse_in, first)
    else:
        m = first
        for j in range(1, c):
            v = widen(src[j])
            m = v if v > m else m  # NaN shows up in the sum below
    m64 = np.float64(m)
    s = as_type_of(0.0, first)
    for j in range(c):
        e = fast_exp(widen(src[j]) - m)
        ebuf[j] = e
        s += e
    smooth_sum = 0.0  # sum (z - m), or sum w (z - m): the smoothing term
    if smoothing != 0.0:  # (branches stay out of the per-element loops)
        for j in range(c):
            d = np.float64(widen(src[j])) - m64
            smooth_sum += (w[j] * d if w[j] != 0.0 else 0.0) if weighted else d
    w_y = (w[y] if weighted else 1.0) if counted else 0.0
    w_total = np.sum(w) if weighted else np.float64(c)
    loss = 0.0
    if lse_given:
        lse = lse_in
    else:
        log_s = np.log(np.float64(s)) if m64 != -np.inf else np.nan
        lse = m64 + log_s
        if y != IGNORED:
            if counted:  # as stream.sparse_row_loss
                loss = (log_s - (np.float64(widen(src[y])) - m64)) * w_y
                if smoothing != 0.0:
                    smooth = (w_total * log_s - smooth_sum) / c
                    loss = (1.0 - smoothing) * loss + smoothing * smooth
            else:
                loss = np.nan
    if not counted:
        gl = 0.0
    a = gl * ((1.0 - smoothing) * w_y + smoothing * w_total / c) + gle
    a += zsq2 * lse if zsq2 != 0.0 else 0.0
    zero = as_type_of(0.0, first)
    if gl == 0.0 and a == 0.0:
        for j in range(c):
            grow[j] = narrow(zero, grow)
        return loss, lse
    scale = as_type_of(a / np.float64(s), first)
    off = gl * smoothing / c
    if weighted or cap != 0.0:
        one = as_type_of(1.0, first)
        inv_cap = as_type_of(1.0 / cap if cap != 0.0 else 0.0, first)
        for j in range(c):
            g = scale * ebuf[j] - as_type_of(off * (w[j] if weighted else 1.0), first)
            v = widen(src[j]) * inv_cap
            grow[j] = narrow(g * (one - v * v), grow)
    else:
        off_t = as_type_of(off, first)
        for j in range(c):
            grow[j] = narrow(scale * ebuf[j] - off_t, grow)
    if counted:  # the one-hot term at the label
        g_y = np.float64(scale * ebuf[y]) - off * w_y - gl * w_y * (1.0 - smoothing)
        grow[y] = narrow(g_y * _cap_factor(np.float64(widen(src[y])), cap), grow)
    return loss, lse


@njit(**SCALAR)
def _sparse_grad_row(
    src, y, smoothing, w, w_sum, lse_given, lse_in, gl, zsq2, gle, cap, ebuf, grow
):
    """One row of :func:`sparse_logits_grad`; returns ``(loss, lse)`` (loss 0 when ``lse``
    was given)."""
    c = src.shape[0]
    if c <= SMALL_ROW:
        return _small_sparse_grad_row(
            src, y, smoothing, w, lse_given, lse_in, gl, zsq2, gle, cap, ebuf, grow
        )
    weighted = w.shape[0] == c
    counted = y != IGNORED and 0 <= y < c
    if not counted:
        gl = 0.0
    loss = 0.0
    if lse_given:
        lse = lse_in
        # renormalised (p = e / sum e): exact however the saved lse was rounded
        s = exps_into(src, as_type_of(lse, ebuf[0]), True, ebuf)
    else:
        shift, s = _sparse_exps(src, y, ebuf)
        log_s = np.log(s) if shift != -np.inf else np.nan
        lse = shift + log_s
        loss = sparse_row_loss(src, y, shift, log_s, smoothing, w)
    w_y = (w[y] if weighted else 1.0) if counted else 0.0
    w_total = w_sum if weighted else np.float64(c)
    a = _coefficient(gl, smoothing, w_y, w_total, c, zsq2, lse, gle)
    if not _sweep(ebuf, a, s, gl, smoothing, weighted, ebuf, 0.0, w, src, cap, grow):
        return loss, lse
    if counted and gl != 0.0:
        # the one-hot term at the label, on top of what the sweep wrote
        g_y = (a / s) * np.float64(ebuf[y]) - gl * w_y * (1.0 - smoothing)
        g_y -= gl * smoothing * (w[y] if weighted else 1.0) / c
        grow[y] = narrow(g_y * _cap_factor(np.float64(widen(src[y])), cap), grow)
    return loss, lse


@njit(**INLINED)
def _small_dense_grad_row(src, tsrc, smoothing, lse_given, lse_in, gl, zsq2, gle, ebuf, grow):
    """:func:`_dense_grad_row` for short rows without class weights, soft-capping or masks:
    plain loops, the exact maximum as the shift (as :func:`_small_sparse_grad_row`)."""
    c = src.shape[0]
    first = widen(src[0])
    if lse_given:  # p renormalised by the row's own sum below: exact however lse was rounded
        m = as_type_of(lse_in, first)
    else:
        m = first
        for j in range(1, c):
            v = widen(src[j])
            m = v if v > m else m
    m64 = np.float64(m)
    s = as_type_of(0.0, first)
    t_sum = as_type_of(0.0, first)
    tz = as_type_of(0.0, first)
    zero = as_type_of(0.0, first)
    for j in range(c):
        d = widen(src[j]) - m
        t = as_type_of(widen(tsrc[j]), first)
        e = fast_exp(d)
        ebuf[j] = e
        s += e
        t_sum += t
        tz += t * d if t != zero else zero
    loss = 0.0
    if lse_given:
        lse = lse_in
    else:
        loss, lse = dense_row_finish(
            src, tsrc, smoothing, np.empty(0), m64, np.float64(s), np.float64(t_sum),
            np.float64(tz),
        )  # fmt: skip
    t_all = np.float64(t_sum) if np.isfinite(t_sum) else row_sum(tsrc)
    a = gl * ((1.0 - smoothing) * t_all + smoothing) + gle
    a += zsq2 * lse if zsq2 != 0.0 else 0.0
    if gl == 0.0 and a == 0.0:
        for j in range(c):
            grow[j] = narrow(zero, grow)
        return loss, lse
    scale = as_type_of(a / np.float64(s), first)
    tc = as_type_of(gl * (1.0 - smoothing), first)
    off = as_type_of(gl * smoothing / c, first)
    for j in range(c):
        grow[j] = narrow(scale * ebuf[j] - tc * as_type_of(widen(tsrc[j]), first) - off, grow)
    return loss, lse


@njit(**SCALAR)
def _dense_grad_row(
    src, tsrc, smoothing, w, w_sum, lse_given, lse_in, gl, zsq2, gle, cap, ebuf, grow
):
    """One row of :func:`dense_logits_grad` (``tsrc`` holds ``w t`` when weighted)."""
    c = src.shape[0]
    weighted = w.shape[0] == c
    loss = 0.0
    if lse_given:
        lse = lse_in
        s = exps_into(src, as_type_of(lse, ebuf[0]), True, ebuf)  # renormalised
        t_sum = row_sum(tsrc)
    else:
        shift, s, t_sum, tz = _dense_exps(src, tsrc, ebuf)
        loss, lse = dense_row_finish(src, tsrc, smoothing, w, shift, s, t_sum, tz)
        if not np.isfinite(t_sum):
            t_sum = row_sum(tsrc)
    w_total = w_sum if weighted else np.float64(c)
    a = _coefficient(gl, smoothing, t_sum, w_total, c, zsq2, lse, gle)
    tc = gl * (1.0 - smoothing)
    _sweep(ebuf, a, s, gl, smoothing, weighted, tsrc, tc, w, src, cap, grow)
    return loss, lse


@njit(**PARALLEL)
def sparse_logits_grad(
    z,
    labels,
    smoothing,
    class_weights,
    softcap,
    class_mask,
    g_loss,
    g_zsq,
    g_lse,
    lse_in,
    out_loss,
    out_lse,
    grad,
):
    """Gradient of ``sum_i g_loss[i] loss_i + g_zsq[i] lse_i**2 + g_lse[i] lse_i`` with respect
    to the logits ``z`` (N x C), written to ``grad`` (N x C, may be ``z`` itself).

    Options as in :func:`rows.sparse_logits`; ``g_loss``, ``g_zsq`` are float64 ``(N,)``,
    ``g_lse`` float64 ``(N,)`` or empty.  With ``lse_in`` empty the pass is fused: the loss and
    log-sum-exp of each row go to ``out_loss`` / ``out_lse`` (length N); with ``lse_in`` of
    length N (a saved forward) they are not written.  An ``IGNORED`` row gets a zero row
    unless ``g_lse`` asks for its log-sum-exp's gradient; a masked class gets 0.
    """
    n, c = z.shape
    lse_given = lse_in.shape[0] == n
    has_g_lse = g_lse.shape[0] == n
    masked = class_mask.shape[0] == n
    buffered = softcap != 0.0 or masked
    w_sum = np.sum(class_weights)
    per = row_chunks(n)
    if c <= SMALL_ROW and not buffered:  # a loop of its own: lean code for short rows
        for chunk in prange((n + per - 1) // per):
            ebuf = work_empty(c, z)
            for i in range(chunk * per, min(n, (chunk + 1) * per)):
                given = lse_in[i] if lse_given else 0.0
                gle = g_lse[i] if has_g_lse else 0.0
                loss, lse = _small_sparse_grad_row(
                    z[i], labels[i], smoothing, class_weights, lse_given, given,
                    g_loss[i], 2.0 * g_zsq[i], gle, 0.0, ebuf, grad[i],
                )  # fmt: skip
                if not lse_given:
                    out_loss[i] = loss
                    out_lse[i] = lse
        return
    for chunk in prange((n + per - 1) // per):
        ebuf = work_empty(c, z)
        buf = work_empty(c if buffered else 0, z)
        for i in range(chunk * per, min(n, (chunk + 1) * per)):
            given = lse_in[i] if lse_given else 0.0
            gl, zsq2, gle = g_loss[i], 2.0 * g_zsq[i], (g_lse[i] if has_g_lse else 0.0)
            if buffered:
                if masked:
                    _cap_mask_row(z[i], class_mask[i], softcap, buf)
                else:
                    _cap_row(z[i], softcap, buf)
                loss, lse = _sparse_grad_row(
                    buf, labels[i], smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, softcap, ebuf, grad[i],
                )  # fmt: skip
                if masked:
                    _zero_masked(grad[i], class_mask[i])
            else:
                loss, lse = _sparse_grad_row(
                    z[i], labels[i], smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, 0.0, ebuf, grad[i],
                )  # fmt: skip
            if not lse_given:
                out_loss[i] = loss
                out_lse[i] = lse


@njit(**PARALLEL)
def dense_logits_grad(
    z,
    t,
    smoothing,
    class_weights,
    softcap,
    class_mask,
    g_loss,
    g_zsq,
    g_lse,
    lse_in,
    out_loss,
    out_lse,
    grad,
):
    """:func:`sparse_logits_grad` against target rows ``t`` (N x C), as
    :func:`rows.dense_logits` (class weights multiply the targets; a masked class's target
    counts 0)."""
    n, c = z.shape
    lse_given = lse_in.shape[0] == n
    has_g_lse = g_lse.shape[0] == n
    masked = class_mask.shape[0] == n
    buffered = softcap != 0.0 or masked
    weighted = class_weights.shape[0] == c
    w_sum = np.sum(class_weights)
    per = row_chunks(n)
    if c <= SMALL_ROW and not (buffered or weighted):  # lean code for short rows
        for chunk in prange((n + per - 1) // per):
            ebuf = work_empty(c, z)
            for i in range(chunk * per, min(n, (chunk + 1) * per)):
                given = lse_in[i] if lse_given else 0.0
                gle = g_lse[i] if has_g_lse else 0.0
                loss, lse = _small_dense_grad_row(
                    z[i], t[i], smoothing, lse_given, given, g_loss[i], 2.0 * g_zsq[i], gle,
                    ebuf, grad[i],
                )  # fmt: skip
                if not lse_given:
                    out_loss[i] = loss
                    out_lse[i] = lse
        return
    for chunk in prange((n + per - 1) // per):
        ebuf = work_empty(c, z)
        buf = work_empty(c if buffered else 0, z)
        tbuf = work_empty(c if (weighted or masked) else 0, z)
        for i in range(chunk * per, min(n, (chunk + 1) * per)):
            given = lse_in[i] if lse_given else 0.0
            gl, zsq2, gle = g_loss[i], 2.0 * g_zsq[i], (g_lse[i] if has_g_lse else 0.0)
            if masked:
                _cap_mask_row(z[i], class_mask[i], softcap, buf)
                _weigh_mask_targets(t[i], class_weights, class_mask[i], tbuf)
            elif buffered:
                _cap_row(z[i], softcap, buf)
            if weighted and not masked:
                weigh_targets(t[i], class_weights, tbuf)
            if buffered and (weighted or masked):
                loss, lse = _dense_grad_row(
                    buf, tbuf, smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, softcap, ebuf, grad[i],
                )  # fmt: skip
            elif buffered:
                loss, lse = _dense_grad_row(
                    buf, t[i], smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, softcap, ebuf, grad[i],
                )  # fmt: skip
            elif weighted:
                loss, lse = _dense_grad_row(
                    z[i], tbuf, smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, 0.0, ebuf, grad[i],
                )  # fmt: skip
            else:
                loss, lse = _dense_grad_row(
                    z[i], t[i], smoothing, class_weights, w_sum, lse_given, given,
                    gl, zsq2, gle, 0.0, ebuf, grad[i],
                )  # fmt: skip
            if masked:
                _zero_masked(grad[i], class_mask[i])
            if not lse_given:
                out_loss[i] = loss
                out_lse[i] = lse


# ------------------------------------------------------------ short rows from a saved lse
# Rows of a few classes (up to SHORT_ROW_BYTES, as the forward's turned kernels) are too short
# to vectorise one at a time.  Given every row's log-sum-exp (which the turned forward kernels
# compute fast), the gradient of a block of rows is one flat loop over its elements: the
# per-row coefficients are first spread to per-element arrays, so that the loop is
# ``g = a exp(z - lse) - b - tc t`` on contiguous memory, 16 lanes wide.  Plain options only
# (no class weights, soft-capping or masks); C-contiguous logits, targets and gradient.
SHORT_GRAD_BLOCK = 64


@njit(**ROW)
def _flat_grad(zf, sh, sc, sb, grad_f):
    for k in range(zf.shape[0]):
        grad_f[k] = narrow(sc[k] * fast_exp(widen(zf[k]) - sh[k]) - sb[k], grad_f)


@njit(**ROW)
def _flat_grad_inplace(gf, sh, sc, sb):
    """:func:`_flat_grad` over the logits' own memory: with two names for one array LLVM's
    overlap check sent the loop down its scalar path (2.5x slower, measured)."""
    for k in range(gf.shape[0]):
        gf[k] = narrow(sc[k] * fast_exp(widen(gf[k]) - sh[k]) - sb[k], gf)


@njit(**ROW)
def _flat_dense_grad_inplace(gf, tf, sh, sc, sb, tc):
    for k in range(gf.shape[0]):
        t = as_type_of(widen(tf[k]), sc[k])
        gf[k] = narrow(sc[k] * fast_exp(widen(gf[k]) - sh[k]) - sb[k] - tc[k] * t, gf)


@njit(**ROW)
def _flat_dense_grad(zf, tf, sh, sc, sb, tc, grad_f):
    for k in range(zf.shape[0]):
        t = as_type_of(widen(tf[k]), sc[k])
        grad_f[k] = narrow(sc[k] * fast_exp(widen(zf[k]) - sh[k]) - sb[k] - tc[k] * t, grad_f)


@njit(**INLINED)
def _spread(sh, sc, sb, hi, a, off):
    """Per-element copies of one row's shift, scale and offset into slices at the block's
    place of the row (slices: an offset index ``k + j``, whose sign LLVM cannot prove, kept
    Numba's wraparound test in the loop and the loop scalar)."""
    shift = as_type_of(hi, sh[0])
    scale = as_type_of(a, sh[0])
    offset = as_type_of(off, sh[0])
    for j in range(sh.shape[0]):
        sh[j] = shift
        sc[j] = scale
        sb[j] = offset


@njit(**INLINED)
def _lse_coefficient(g_zsq, g_lse, has_g_lse, lse, i):
    """The lse-dependent part of a row's ``a``: ``2 g_zsq lse + g_lse``."""
    a = 2.0 * g_zsq[i] * lse[i] if g_zsq[i] != 0.0 else 0.0
    return a + (g_lse[i] if has_g_lse else 0.0)


@njit(**ROW)
def _label_exps(zb, labels, c, hi_row, e_row):
    """``e_row[r] = exp(z_y - hi)`` for the rows of a short-row block, ``zb`` its logits as
    one flat row (column 0 for a label outside ``[0, C)``: a value that is not used).  Its
    own loop in the work type, so that the ``exp`` vectorises (with the float64 products
    after it in the same loop, LLVM left the loop scalar)."""
    for r in range(labels.shape[0]):
        y = labels[r]
        e_row[r] = widen(zb[r * c + (y if (y >= 0) & (y < c) else 0)])
    for r in range(labels.shape[0]):
        e_row[r] = fast_exp(e_row[r] - hi_row[r])


@njit(**SCALAR)
def _label_terms(zb, labels, c, smoothing, g_loss, g_zsq, g_lse, has_g_lse, lse, r0, hi_row,
                 f_row, e_row, g_label):  # fmt: skip
    """``g_label[r] = a p_y - g (1 - eps) - g eps / C`` for the rows of a short-row block: the
    one-hot term at the label, with one rounding, ``p_y`` from :func:`_label_exps` in the
    work precision as the flat loop (a libm exp per row cost 40%).

    Why not one loop per row with ``z[i, y]`` under ``if 0 <= y < C``: it stayed scalar
    (an exp per row) and took 7.3 of the 18.9 ms of the 1,000,000 x 10 sparse gradient
    (Intel Xeon, rocketlake).  Contract-only flags, as the kernel's own: the terms keep
    their order and rounding.
    """
    _label_exps(zb, labels, c, hi_row, e_row)
    for r in range(labels.shape[0]):
        gl = g_loss[r]
        a = gl + _lse_coefficient(g_zsq, g_lse, has_g_lse, lse, r0 + r)
        p_y = np.float64(e_row[r]) * f_row[r]
        g_label[r] = a * p_y - gl * (1.0 - smoothing) - gl * smoothing / c


@njit(**PARALLEL)
def sparse_short_rows_grad(z, labels, smoothing, g_loss, g_zsq, g_lse, lse, grad, inplace):
    """Gradient of the plain sparse loss for short C-contiguous rows, from each row's
    ``lse``; coefficients as in :func:`sparse_logits_grad` (``g_lse`` may be empty).  An
    ``IGNORED`` row gets zeros unless ``g_lse`` asks for its log-sum-exp's gradient.
    ``inplace``: ``grad`` is ``z`` itself."""
    n, c = z.shape
    has_g_lse = g_lse.shape[0] == n
    nb = (n + SHORT_GRAD_BLOCK - 1) // SHORT_GRAD_BLOCK
    per = row_chunks(nb)
    m = SHORT_GRAD_BLOCK * c
    for chunk in prange((nb + per - 1) // per):
        sh = work_empty(m, z)
        sc = work_empty(m, z)
        sb = work_empty(m, z)
        g_label = np.empty(SHORT_GRAD_BLOCK)
        hi_row = work_empty(SHORT_GRAD_BLOCK, z)
        e_row = work_empty(SHORT_GRAD_BLOCK, z)
        f_row = np.empty(SHORT_GRAD_BLOCK)
        for b in range(chunk * per, min(nb, (chunk + 1) * per)):
            r0 = b * SHORT_GRAD_BLOCK
            r1 = min(n, r0 + SHORT_GRAD_BLOCK)
            _block_factors(z, lse, r0, r1, hi_row, f_row)
            for i in range(r0, r1):
                gl = g_loss[i] if 0 <= labels[i] < c else 0.0  # ignored: no loss term
                a = gl + _lse_coefficient(g_zsq, g_lse, has_g_lse, lse, i)
                k = (i - r0) * c
                off = gl * smoothing / c
                _spread(sh[k : k + c], sc[k : k + c], sb[k : k + c], hi_row[i - r0],
                        a * f_row[i - r0], off)  # fmt: skip
            # the label's element first: in place, the flat loop overwrites the logits
            zf = z[r0:r1].reshape(-1)
            _label_terms(zf, labels[r0:r1], c, smoothing, g_loss[r0:r1], g_zsq, g_lse,
                         has_g_lse, lse, r0, hi_row, f_row, e_row, g_label)  # fmt: skip
            k = (r1 - r0) * c
            gf = grad[r0:r1].reshape(-1)
            if inplace:
                _flat_grad_inplace(gf, sh[:k], sc[:k], sb[:k])
            else:
                _flat_grad(zf, sh[:k], sc[:k], sb[:k], gf)
            for i in range(r0, r1):
                y = labels[i]
                q = (i - r0) * c
                if 0 <= y < c:
                    gf[q + y] = narrow(g_label[i - r0], gf)
                elif not (has_g_lse and g_lse[i] != 0.0):  # ignored: zeros, even for NaN z
                    for j in range(c):
                        gf[q + j] = narrow(np.float32(0.0), gf)


@njit(**PARALLEL)
def dense_short_rows_grad(z, t, smoothing, g_loss, g_zsq, g_lse, lse, grad, inplace):
    """:func:`sparse_short_rows_grad` against C-contiguous target rows ``t``."""
    n, c = z.shape
    has_g_lse = g_lse.shape[0] == n
    nb = (n + SHORT_GRAD_BLOCK - 1) // SHORT_GRAD_BLOCK
    per = row_chunks(nb)
    m = SHORT_GRAD_BLOCK * c
    for chunk in prange((nb + per - 1) // per):
        sh = work_empty(m, z)
        sc = work_empty(m, z)
        sb = work_empty(m, z)
        tc = work_empty(m, z)
        hi_row = work_empty(SHORT_GRAD_BLOCK, z)
        f_row = np.empty(SHORT_GRAD_BLOCK)
        for b in range(chunk * per, min(nb, (chunk + 1) * per)):
            r0 = b * SHORT_GRAD_BLOCK
            r1 = min(n, r0 + SHORT_GRAD_BLOCK)
            _block_factors(z, lse, r0, r1, hi_row, f_row)
            for i in range(r0, r1):
                gl = g_loss[i]
                a = gl * ((1.0 - smoothing) * row_sum(t[i]) + smoothing)
                a += _lse_coefficient(g_zsq, g_lse, has_g_lse, lse, i)
                k = (i - r0) * c
                off = gl * smoothing / c
                _spread(sh[k : k + c], sc[k : k + c], sb[k : k + c], hi_row[i - r0],
                        a * f_row[i - r0], off)  # fmt: skip
                t_coef = as_type_of(gl * (1.0 - smoothing), sh[0])
                tc[k : k + c] = t_coef
            k = (r1 - r0) * c
            gf = grad[r0:r1].reshape(-1)
            tf = t[r0:r1].reshape(-1)
            if inplace:
                _flat_dense_grad_inplace(gf, tf, sh[:k], sc[:k], sb[:k], tc[:k])
            else:
                zf = z[r0:r1].reshape(-1)
                _flat_dense_grad(zf, tf, sh[:k], sc[:k], sb[:k], tc[:k], gf)
