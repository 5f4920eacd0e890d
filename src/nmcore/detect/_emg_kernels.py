"""Numba kernels for EMG onset detection: one fused call per block does band-pass, conditioning,
history write and the detector state update for every channel.

Layouts (the Python facade in `detect/emg.py` builds them; constants below name the slots):

- `work` (float64, 1-D) packs three arrays (fewer arguments: see the kernel):
  `coef`: method code and parameters in samples / statistical units, then the band-pass
  second-order sections, then the envelope low-pass sections (6 numbers per row);
  `fstate` (n_channels, N_FSTATE): rest statistics and running sums;
  `zstate` (2 * (n_bp + n_env) + 2, n_channels): IIR section states and TKEO's last two
  samples, channel-minor so the per-sample channel loop vectorises.
- `istate` (n_channels, N_ISTATE) int64: phase, cursor (next absolute sample to test), stimulus,
  end of the response window, alarm/onset indices, run counters, head (samples written).
- `hist` (2, n_history, n_channels): `hist_y = hist[0]`, `hist_d = hist[1]`, ring buffers
  (absolute index modulo n_history) of the band-passed signal and of the test-domain value
  (envelope for Hodges-Bui and TKEO, y**2 for the variance detectors). Rest statistics and
  the look-back read these, so the threshold is always computed in the same domain the test
  uses.

The detector runs from `cursor` to the newest sample over the history, so an `arm` that arrives
after the stimulus (a trigger with latency) tests the samples it missed in the next call.
"""

from __future__ import annotations

import numpy as np

from nmcore._numba import jit

# method codes
M_HODGES_BUI = 0
M_TKEO = 1
M_BONATO = 2
M_AGLR = 3
M_CUSUM = 4

# coef slots
C_METHOD = 0
C_H = 1  # SD multiple (HB, TKEO), chi-square threshold (Bonato), LLR threshold (AGLR, CUSUM)
C_RUN = 2  # samples the condition must hold (HB, TKEO) / Bonato window m
C_BONATO_R = 3  # Bonato: samples above threshold needed within the window
C_WINDOW = 4  # AGLR window length in samples
C_KAPPA = 5  # effective independent samples per sample: 2 * bandwidth / rate, <= 1
C_RHO = 6  # CUSUM design variance ratio
C_REFINE = 7  # samples after the alarm before the ML look-back is run
C_LOOKBACK = 8  # samples before the alarm the change time may lie
C_NBP = 10
C_NENV = 11
C_RAMP_MAX = 13  # longest ramp (samples) the ramp-model look-back considers (0: off)
C_RAMP_N = 14  # ramp lengths tried: RAMP_MAX * m / RAMP_N, m = 0..RAMP_N
C_RAMP_PENALTY = 15  # log-likelihood a ramp (R > 0) must gain over a step to be preferred
C_RAMP_GATE = 16  # ramp look-back only if early/late mean-square ratio after the step is below
C_RAMP_EARLY = 17  # samples after the step estimate that form the "early" part of that ratio
C_AGLR_R = 18  # AGLR: window mean-square ratio r_h > 1 with kappa L/2 (r_h - 1 - ln r_h) = h
C_DELAY = 19  # band-pass delay of a variance step (samples), taken off the onset (AGLR only)
C_SOS = 20
N_COEF_HEAD = 20

# fstate slots
F_MU = 0  # rest mean of the test domain
F_SD = 1  # rest SD of the test domain
F_SIG2 = 2  # rest variance of the band-passed signal
F_STAT = 3  # CUSUM sum / AGLR window sum
F_MAXSTAT = 6  # largest statistic while armed (AGLR: window sum of d; CUSUM: its sum)
N_FSTATE = 8

# istate slots
I_PHASE = 0
I_CURSOR = 1
I_STIM = 2
I_END = 3
I_RUN_START = 4
I_RUN_LEN = 5
I_ALARM = 6
I_ONSET = 7
I_LASTZERO = 8
I_COUNT = 9
I_HEAD = 10
N_ISTATE = 12

# phases
P_IDLE = 0  # collecting history, nothing tested
P_ARMED = 1  # armed; running statistics not yet initialised
P_TESTING = 2
P_ALARMED = 3  # alarm raised, waiting for post-alarm samples before the look-back
P_DONE = 4  # onset found, or window closed without one (I_ONSET == -1)


@jit
def ml_variance_change(hist_d: np.ndarray, c: int, lo: int, hi: int, kend: int, sig2: float) -> int:
    """Maximum-likelihood time of an increase of variance from a known `sig2`.

    Candidates j in [lo, hi]; samples j..kend are modelled with one unknown variance s1
    (ML: their mean square), samples before j with `sig2`. The log-likelihood gain of the
    split is n/2 (r - 1 - ln r) with r = mean(d[j..kend]) / sig2 (only r > 1 counts: onsets
    raise the variance). `hist_d` holds y**2 in a ring of len(hist_d) rows.
    """
    n_hist = hist_d.shape[0]
    best = -1.0
    best_j = hi
    total = 0.0
    j = kend
    pos = kend % n_hist  # the ring position moves with j: no modulo per sample
    while j >= lo:
        total += hist_d[pos, c] / sig2
        pos = pos - 1 if pos > 0 else n_hist - 1
        if j <= hi:
            n = kend - j + 1
            r = total / n
            if r > 1.0:
                gain = n * (r - 1.0 - np.log(r))
                if gain > best:
                    best = gain
                    best_j = j
        j -= 1
    return best_j


_RAMP_REACH = 0.5
# ml_ramp_change sums log(ratio) over a ramp as the log of products of this many ratios:
# a logarithm costs ~10x a product; (1 + b)^8 stays finite for b up to 1e36 (beyond it, one
# logarithm per sample; b = a^2 / sig2 that large only with a flat, clipped rest).
_LOG_CHUNK = 8
_LOG_CHUNK_MAX_B = 1e36


@jit
def ml_ramp_change(
    hist_d: np.ndarray,
    c: int,
    lo: int,
    hi: int,
    kend: int,
    sig2: float,
    ramp_max: int,
    ramp_n: int,
    kappa: float,
    penalty: float,
) -> int:
    """Maximum-likelihood onset under a ramp model: before j the variance is `sig2`, from j
    on it is sig2 + a^2 w_i with w_i = min(1, (i - j + 1) / R)^2 (the amplitude rises linearly
    over R samples; R = 0 is a step). j in [lo, hi], R in {ramp_max * m / ramp_n}; a^2 by the
    method of moments, sum(d - sig2) / sum(w). The log-likelihood is counted in independent
    samples (x kappa) and a ramp pays `penalty` for its extra parameter, so a step onset is not
    pulled early by a ramp fitted to noise. Returns the j of the best (j, R).

    Cost: after the ramp (w = 1) every term of the log-likelihood shares one ratio
    1 + a^2 / sig2, so the plateau's sum is n_plateau * log(ratio) and a prefix sum of d;
    only the <= R ramp samples are summed term by term: O(R) per candidate instead of
    O(kend - j), and the step (R = 0) is O(1).
    """
    n_hist = hist_d.shape[0]
    best = -1.0
    best_j = hi
    n_all = kend - lo + 1
    if n_all <= 0 or hi < lo:
        return best_j
    # csum[t] = d[lo] + ... + d[lo + t - 1]
    csum = np.empty(n_all + 1)
    csum[0] = 0.0
    acc = 0.0
    pos = lo % n_hist
    for t in range(n_all):
        acc += hist_d[pos, c]
        csum[t + 1] = acc
        pos += 1
        if pos == n_hist:
            pos = 0
    total = csum[n_all]
    # w2[t] = w^2 of the t-th ramp sample (t / R)^2, wcum[t] = w2[1] + ... + w2[t]
    w2 = np.empty(ramp_max + 1)
    wcum = np.empty(ramp_max + 1)
    inv_sig2 = 1.0 / sig2
    for m in range(ramp_n + 1):
        ramp = (ramp_max * m) // ramp_n
        wcum[0] = 0.0
        for t in range(1, ramp + 1):
            w = t / ramp
            w2[t] = w * w
            wcum[t] = wcum[t - 1] + w2[t]
        for j in range(max(lo, hi - int(_RAMP_REACH * ramp)), hi + 1):
            n = kend - j + 1
            if n <= 0:
                continue
            n_ramp = min(n, ramp)
            n_flat = n - n_ramp
            excess = (total - csum[j - lo]) - n * sig2
            wsum = wcum[n_ramp] + n_flat
            if excess <= 0.0 or wsum <= 0.0:
                continue
            b = excess / wsum * inv_sig2  # a^2 / sig2
            # sum of log(ratio) as the log of products of _LOG_CHUNK ratios (each <= 1 + b,
            # so no overflow while b <= _LOG_CHUNK_MAX_B): one logarithm per chunk
            chunk = _LOG_CHUNK if b <= _LOG_CHUNK_MAX_B else 1
            log_sum = 0.0
            prod = 1.0
            in_chunk = 0
            dsum = 0.0  # sum of d (1 - 1 / ratio)
            pos = j % n_hist
            for t in range(1, n_ramp + 1):
                ratio = 1.0 + b * w2[t]
                prod *= ratio
                in_chunk += 1
                if in_chunk == chunk:
                    log_sum += np.log(prod)
                    prod = 1.0
                    in_chunk = 0
                dsum += hist_d[pos, c] * (1.0 - 1.0 / ratio)
                pos += 1
                if pos == n_hist:
                    pos = 0
            log_sum += np.log(prod)
            gain = dsum * inv_sig2 - log_sum
            if n_flat > 0:
                ratio = 1.0 + b
                flat_d = total - csum[j + n_ramp - lo]
                gain += -n_flat * np.log(ratio) + flat_d * inv_sig2 * (1.0 - 1.0 / ratio)
            gain = 0.5 * kappa * gain - (penalty if ramp > 0 else 0.0)
            if gain > best:
                best = gain
                best_j = j
    return best_j


@jit
def _early_late_ratio(hist_d: np.ndarray, c: int, j: int, early: int, kend: int) -> float:
    """mean(d[j:j+early]) / mean(d[j+early:kend+1]): near 1 after a step, well below 1 when
    the amplitude is still rising (a ramp)."""
    n_hist = hist_d.shape[0]
    split = min(j + early, kend)
    a = 0.0
    pos = j % n_hist
    for _ in range(j, split):
        a += hist_d[pos, c]
        pos = pos + 1 if pos < n_hist - 1 else 0
    b = 0.0
    pos = split % n_hist
    for _ in range(split, kend + 1):
        b += hist_d[pos, c]
        pos = pos + 1 if pos < n_hist - 1 else 0
    if split <= j or b <= 0.0:
        return 1.0
    return (a / (split - j)) / (b / (kend + 1 - split))


@jit
def refine_onset(
    hist_d: np.ndarray,
    c: int,
    stim: int,
    alarm: int,
    kend: int,
    sig2: float,
    lookback: int,
    ramp_max: int,
    ramp_n: int,
    kappa: float,
    penalty: float,
    gate: float,
    early: int,
    oldest: int,
) -> int:
    """Look back from an alarm: the ML time of a variance step over [alarm - lookback, alarm]
    using the samples up to `kend`; then (ramp_max > 0) the ML onset under a ramp model in the
    `ramp_max` samples before it (a step model fitted to a ramp lands where the ramp is well
    under way, not where it starts)."""
    lo = max(stim, alarm - lookback, oldest)
    j = ml_variance_change(hist_d, c, lo, alarm, kend, sig2)
    if ramp_max > 0 and ramp_n > 0 and _early_late_ratio(hist_d, c, j, early, kend) < gate:
        lo_r = max(stim, j - ramp_max, oldest)
        j = ml_ramp_change(hist_d, c, lo_r, j, kend, sig2, ramp_max, ramp_n, kappa, penalty)
    return j


@jit
def _test_channel(
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    hist_d: np.ndarray,
    c: int,
) -> int:
    """Advance channel c's detector from its cursor to the newest written sample."""
    n_hist = hist_d.shape[0]
    head = istate[c, I_HEAD]
    phase = istate[c, I_PHASE]
    if phase in (P_IDLE, P_DONE):
        istate[c, I_CURSOR] = head
        return 0
    method = int(coef[C_METHOD])
    h = coef[C_H]
    run_needed = int(coef[C_RUN])
    window = int(coef[C_WINDOW])
    kappa = coef[C_KAPPA]
    events = 0
    k = istate[c, I_CURSOR]
    oldest = max(0, head - n_hist)
    if k < oldest:
        k = oldest
    mu = fstate[c, F_MU]
    sd = fstate[c, F_SD]
    sig2 = fstate[c, F_SIG2]
    inv_sig2 = 1.0 / sig2
    end = istate[c, I_END]
    if phase == P_ARMED:
        # Initialise running statistics from the history just before the cursor.
        istate[c, I_RUN_LEN] = 0
        istate[c, I_LASTZERO] = k - 1
        fstate[c, F_MAXSTAT] = 0.0
        if method == M_AGLR:
            acc = 0.0
            for j in range(max(oldest, k - window), k):
                acc += hist_d[j % n_hist, c]
            fstate[c, F_STAT] = acc
        elif method == M_BONATO:
            cnt = 0
            for j in range(max(oldest + 1, k - run_needed + 1), k):
                z = (hist_d[(j - 1) % n_hist, c] + hist_d[j % n_hist, c]) * inv_sig2
                if z > h:
                    cnt += 1
            istate[c, I_COUNT] = cnt
        else:
            fstate[c, F_STAT] = 0.0
        phase = P_TESTING
    thr = mu + h * sd
    log_rho = np.log(coef[C_RHO])
    a_rho = 1.0 - 1.0 / coef[C_RHO]
    # AGLR alarm: kappa L/2 (r - 1 - ln r) > h  <=>  r > r_h (precomputed root, r_h > 1): no
    # logarithm per sample. F_MAXSTAT keeps the largest window ratio r for diagnostics.
    r_alarm_sum = coef[C_AGLR_R] * window * sig2
    stat = fstate[c, F_STAT]
    max_stat = fstate[c, F_MAXSTAT]
    # the ring position advances with k: one modulo here instead of one per sample
    kpos = k % n_hist
    # counters live in locals during the loop (registers, not memory)
    run_len = istate[c, I_RUN_LEN]
    run_start = istate[c, I_RUN_START]
    count = istate[c, I_COUNT]
    last_zero = istate[c, I_LASTZERO]
    bonato_r = int(coef[C_BONATO_R])
    delay = int(coef[C_DELAY])
    while k < head:
        if phase == P_ALARMED:
            alarm = istate[c, I_ALARM]
            if k >= alarm + int(coef[C_REFINE]) or k >= end - 1:
                istate[c, I_ONSET] = -delay + refine_onset(
                    hist_d,
                    c,
                    istate[c, I_STIM],
                    alarm,
                    k,
                    sig2,
                    int(coef[C_LOOKBACK]),
                    int(coef[C_RAMP_MAX]),
                    int(coef[C_RAMP_N]),
                    kappa,
                    coef[C_RAMP_PENALTY],
                    coef[C_RAMP_GATE],
                    int(coef[C_RAMP_EARLY]),
                    oldest,
                )
                phase = P_DONE
                events += 1
                break
        elif k >= end:
            phase = P_DONE
            istate[c, I_ONSET] = -1
            events += 1
            break
        else:
            d = hist_d[kpos, c]
            if method == M_AGLR:
                stat += d
                if k - window >= oldest:
                    opos = kpos - window  # the sample leaving the window
                    if opos < 0:
                        opos += n_hist
                    stat -= hist_d[opos, c]
                if stat > max_stat:
                    max_stat = stat
                if stat > r_alarm_sum:
                    istate[c, I_ALARM] = k
                    phase = P_ALARMED
                    events += 1
            elif method in (M_HODGES_BUI, M_TKEO):
                if d > thr:
                    if run_len == 0:
                        run_start = k
                    run_len += 1
                    if run_len >= run_needed:
                        istate[c, I_ALARM] = k
                        istate[c, I_ONSET] = run_start
                        phase = P_DONE
                        events += 1
                        break
                else:
                    run_len = 0
            elif method == M_BONATO:
                ppos = kpos - 1 if kpos > 0 else n_hist - 1
                if (hist_d[ppos, c] + d) * inv_sig2 > h:
                    count += 1
                if k - run_needed >= oldest + 1:
                    # the pair (k - m - 1, k - m) leaves the window
                    bpos = kpos - run_needed
                    if bpos < 0:
                        bpos += n_hist
                    bprev = bpos - 1 if bpos > 0 else n_hist - 1
                    if (hist_d[bprev, c] + hist_d[bpos, c]) * inv_sig2 > h:
                        count -= 1
                if count >= bonato_r:
                    istate[c, I_ALARM] = k
                    first = k
                    for j in range(max(oldest + 1, k - run_needed + 1), k + 1):
                        zj = (hist_d[(j - 1) % n_hist, c] + hist_d[j % n_hist, c]) * inv_sig2
                        if zj > h:
                            first = j
                            break
                    istate[c, I_ONSET] = first - delay
                    phase = P_DONE
                    events += 1
                    break
            else:  # M_CUSUM, Page's test for a variance increase by the design ratio rho
                stat += kappa * 0.5 * (a_rho * d * inv_sig2 - log_rho)
                if stat <= 0.0:
                    stat = 0.0
                    last_zero = k
                if stat > max_stat:
                    max_stat = stat
                if stat > h:
                    istate[c, I_ALARM] = k
                    istate[c, I_ONSET] = last_zero + 1 - delay
                    phase = P_DONE
                    events += 1
                    break
        k += 1
        kpos += 1
        if kpos == n_hist:
            kpos = 0
    fstate[c, F_STAT] = stat
    fstate[c, F_MAXSTAT] = max_stat
    istate[c, I_PHASE] = phase
    istate[c, I_CURSOR] = head if phase == P_DONE else k
    istate[c, I_RUN_LEN] = run_len
    istate[c, I_RUN_START] = run_start
    istate[c, I_COUNT] = count
    istate[c, I_LASTZERO] = last_zero
    return events


def work_layout(n_bp: int, n_env: int, n_channels: int) -> tuple[int, int, int]:
    """Offsets in the packed float work array: (start of fstate, start of zstate, total
    length). fstate is (n_channels, N_FSTATE); zstate is (n_zstate_rows(...), n_channels)."""
    n_coef = C_SOS + 6 * (n_bp + n_env)
    z0 = n_coef + n_channels * N_FSTATE
    return n_coef, z0, z0 + n_zstate_rows(n_bp, n_env) * n_channels


def n_zstate_rows(n_bp: int, n_env: int) -> int:
    """Rows of the channel-minor filter state: 2 per section, then TKEO's y[k-1], y[k-2]."""
    return 2 * (n_bp + n_env) + 2


@jit
def _chain_generic(
    x: np.ndarray,
    coef: np.ndarray,
    zs: np.ndarray,
    hist_y: np.ndarray,
    hist_d: np.ndarray,
    pos: int,
    method: int,
) -> None:
    """Filter + conditioning for any number of sections. zs: (rows, n_channels) state."""
    n_samples = x.shape[0]
    n_channels = x.shape[1]
    n_hist = hist_y.shape[0]
    n_bp = int(coef[C_NBP])
    n_env = int(coef[C_NENV])
    env_off = C_SOS + 6 * n_bp
    tk = 2 * (n_bp + n_env)
    envelope = method in (M_HODGES_BUI, M_TKEO)
    for i in range(n_samples):
        for c in range(n_channels):
            v = x[i, c]
            for s in range(n_bp):
                o = C_SOS + 6 * s
                y = coef[o] * v + zs[2 * s, c]
                zs[2 * s, c] = coef[o + 1] * v - coef[o + 4] * y + zs[2 * s + 1, c]
                zs[2 * s + 1, c] = coef[o + 2] * v - coef[o + 5] * y
                v = y
            hist_y[pos, c] = v
            if envelope:
                if method == M_TKEO:
                    # TKEO of the previous sample (needs one sample of future): psi[k-1] =
                    # y[k-1]^2 - y[k-2] y[k]; a one-sample delay keeps it causal.
                    y1 = zs[tk, c]
                    e = abs(y1 * y1 - zs[tk + 1, c] * v)
                    zs[tk + 1, c] = y1
                    zs[tk, c] = v
                else:
                    e = abs(v)
                for s in range(n_env):
                    o = env_off + 6 * s
                    r = 2 * (n_bp + s)
                    y = coef[o] * e + zs[r, c]
                    zs[r, c] = coef[o + 1] * e - coef[o + 4] * y + zs[r + 1, c]
                    zs[r + 1, c] = coef[o + 2] * e - coef[o + 5] * y
                    e = y
                hist_d[pos, c] = e
            else:
                hist_d[pos, c] = v * v
        pos += 1
        if pos == n_hist:
            pos = 0


@jit
def _chain_two_sections(
    x: np.ndarray,
    coef: np.ndarray,
    zs: np.ndarray,
    hist_y: np.ndarray,
    hist_d: np.ndarray,
    pos: int,
    method: int,
) -> None:
    """The default chain (2 band-pass sections, 1 envelope section): coefficients in locals,
    states channel-minor, one loop per conditioning so the channel loop has no branch and
    LLVM vectorises it across channels (3x faster than `_chain_generic`; same arithmetic)."""
    n_samples = x.shape[0]
    n_channels = x.shape[1]
    n_hist = hist_y.shape[0]
    o = C_SOS
    b00, b01, b02, a01, a02 = coef[o], coef[o + 1], coef[o + 2], coef[o + 4], coef[o + 5]
    o = C_SOS + 6
    b10, b11, b12, a11, a12 = coef[o], coef[o + 1], coef[o + 2], coef[o + 4], coef[o + 5]
    o = C_SOS + 12
    e0, e1, e2, f1, f2 = coef[o], coef[o + 1], coef[o + 2], coef[o + 4], coef[o + 5]
    z00, z01, z10, z11, w0, w1, tk1, tk2 = zs[0], zs[1], zs[2], zs[3], zs[4], zs[5], zs[6], zs[7]
    for i in range(n_samples):
        if method == M_HODGES_BUI:
            for c in range(n_channels):
                v = x[i, c]
                y = b00 * v + z00[c]
                z00[c] = b01 * v - a01 * y + z01[c]
                z01[c] = b02 * v - a02 * y
                u = b10 * y + z10[c]
                z10[c] = b11 * y - a11 * u + z11[c]
                z11[c] = b12 * y - a12 * u
                hist_y[pos, c] = u
                e = abs(u)
                g = e0 * e + w0[c]
                w0[c] = e1 * e - f1 * g + w1[c]
                w1[c] = e2 * e - f2 * g
                hist_d[pos, c] = g
        elif method == M_TKEO:
            for c in range(n_channels):
                v = x[i, c]
                y = b00 * v + z00[c]
                z00[c] = b01 * v - a01 * y + z01[c]
                z01[c] = b02 * v - a02 * y
                u = b10 * y + z10[c]
                z10[c] = b11 * y - a11 * u + z11[c]
                z11[c] = b12 * y - a12 * u
                hist_y[pos, c] = u
                y1 = tk1[c]
                e = abs(y1 * y1 - tk2[c] * u)
                tk2[c] = y1
                tk1[c] = u
                g = e0 * e + w0[c]
                w0[c] = e1 * e - f1 * g + w1[c]
                w1[c] = e2 * e - f2 * g
                hist_d[pos, c] = g
        else:
            for c in range(n_channels):
                v = x[i, c]
                y = b00 * v + z00[c]
                z00[c] = b01 * v - a01 * y + z01[c]
                z01[c] = b02 * v - a02 * y
                u = b10 * y + z10[c]
                z10[c] = b11 * y - a11 * u + z11[c]
                z11[c] = b12 * y - a12 * u
                hist_y[pos, c] = u
                hist_d[pos, c] = u * u
        pos += 1
        if pos == n_hist:
            pos = 0


@jit
def emg_filter_chain_block(
    x: np.ndarray, work: np.ndarray, istate: np.ndarray, hist: np.ndarray
) -> int:
    """The fused per-block chain: for each sample and channel, band-pass (cascaded biquads,
    direct form II transposed), condition (|y| -> low-pass for Hodges-Bui; |TKEO(y)| ->
    low-pass for Solnik; y**2 for Bonato, AGLR, CUSUM), write both into the history rings;
    then advance each armed channel's detector. Returns the number of events (alarms, refined
    onsets, closed windows) raised in this block.

    Four arguments on purpose: numba's dispatch costs ~0.1-0.3 µs per array argument, a good
    part of a 32 x 16 block's arithmetic. `work` packs coef (head + band-pass and envelope
    sections), fstate (n_channels, N_FSTATE) and the channel-minor filter state zstate
    (rows, n_channels); `hist` is (2, n_history, n_channels): hist[0] the band-passed signal,
    hist[1] the test-domain value.
    """
    n_samples = x.shape[0]
    n_channels = x.shape[1]
    n_bp = int(work[C_NBP])
    n_env = int(work[C_NENV])
    n_coef = C_SOS + 6 * (n_bp + n_env)
    z0 = n_coef + n_channels * N_FSTATE
    rows = 2 * (n_bp + n_env) + 2
    coef = work[:n_coef]
    fstate = work[n_coef:z0].reshape((n_channels, N_FSTATE))
    zs = work[z0 : z0 + rows * n_channels].reshape((rows, n_channels))
    hist_y = hist[0]
    hist_d = hist[1]
    n_hist = hist_y.shape[0]
    method = int(coef[C_METHOD])
    head0 = istate[0, I_HEAD]
    if n_bp == 2 and n_env == 1:
        _chain_two_sections(x, coef, zs, hist_y, hist_d, head0 % n_hist, method)
    else:
        _chain_generic(x, coef, zs, hist_y, hist_d, head0 % n_hist, method)
    events = 0
    for c in range(n_channels):
        istate[c, I_HEAD] = head0 + n_samples
        events += _test_channel(coef, fstate, istate, hist_d, c)
    return events


@jit
def _glr_gain(n: int, sz: float, szz: float, s0: float, kind: int, direction: int) -> float:
    """Log-likelihood gain of n samples with sums sz, szz of z = x - mu0 against N(0, s0)."""
    m = sz / n
    if direction > 0 and m <= 0.0 and kind != 1:
        return 0.0
    if direction < 0 and m >= 0.0 and kind != 1:
        return 0.0
    if kind == 0:
        return 0.5 * n * m * m / s0
    q = szz / n
    if kind == 1:
        r = q / s0
        return 0.5 * n * (r - 1.0 - np.log(r)) if r > 1.0 else 0.0
    v = q - m * m
    if v <= 1e-300:
        v = 1e-300
    g = 0.5 * n * (q / s0 - 1.0 - np.log(v / s0))
    return g if g > 0.0 else 0.0


@jit
def glr_change_scan(
    x: np.ndarray,
    start: int,
    end: int,
    mu0: float,
    s0: float,
    kappa: float,
    window: int,
    h: float,
    kind: int,
    direction: int,
    lookback: int,
    refine: int,
    out: np.ndarray,
) -> None:
    """Windowed GLR change detection on x[start:end] (1-D) with ML look-back.

    kind 0 mean, 1 variance, 2 both; direction +1 up, -1 down, 0 any (mean part). The window
    statistic kappa * gain over x[k-window+1..k] raises the alarm when above h; the change time
    maximises the gain of x[j..kend] over j in [alarm - lookback, alarm], kend = alarm + refine.
    out <- [alarm index or -1, onset index or -1, largest windowed statistic].
    """
    out[0] = -1.0
    out[1] = -1.0
    out[2] = 0.0
    sz = 0.0
    szz = 0.0
    first = max(0, start - window + 1)
    for j in range(first, start):
        z = x[j] - mu0
        sz += z
        szz += z * z
    alarm = -1
    for k in range(start, end):
        z = x[k] - mu0
        sz += z
        szz += z * z
        j_out = k - window
        if j_out >= first:
            zo = x[j_out] - mu0
            sz -= zo
            szz -= zo * zo
        n = min(window, k - first + 1)
        g = kappa * _glr_gain(n, sz, szz, s0, kind, direction)
        if g > out[2]:
            out[2] = g
        if g > h:
            alarm = k
            break
    if alarm < 0:
        return
    kend = min(end - 1, alarm + refine)
    lo = max(start, alarm - lookback)
    best = -1.0
    best_j = alarm
    sz = 0.0
    szz = 0.0
    for j in range(kend, lo - 1, -1):
        z = x[j] - mu0
        sz += z
        szz += z * z
        if j <= alarm:
            gain = _glr_gain(kend - j + 1, sz, szz, s0, kind, direction)
            if gain > best:
                best = gain
                best_j = j
    out[0] = float(alarm)
    out[1] = float(best_j)


@jit
def burst_metrics(
    hist_y: np.ndarray, c: int, onset: int, end: int, window: int, offset_rms: float
) -> tuple[int, float, float, float]:
    """From `onset` up to `end` (exclusive): the first sample i >= onset + window at which
    the rms of y over the last `window` samples is below `offset_rms` (the offset, -1 if none),
    the largest moving rms before it, the sum of the moving rms before it, and the mean square
    of y over [onset, offset). Stops at the offset."""
    n_hist = hist_y.shape[0]
    acc = 0.0
    total = 0.0
    peak = 0.0
    area = 0.0
    thr2 = offset_rms * offset_rms * window
    offset = -1
    # ring positions advance with i (an integer modulo per sample cost more than the rest)
    pos = onset % n_hist
    old_pos = pos
    for i in range(onset, end):
        v = hist_y[pos, c]
        acc += v * v
        if i - window >= onset:
            old = hist_y[old_pos, c]
            acc -= old * old
            old_pos += 1
            if old_pos == n_hist:
                old_pos = 0
        n = min(window, i - onset + 1)
        if i - onset >= window and acc < thr2:
            offset = i
            break
        rms = np.sqrt(max(acc, 0.0) / n)
        peak = max(peak, rms)
        area += rms
        total += v * v
        pos += 1
        if pos == n_hist:
            pos = 0
    stop = offset if offset >= 0 else end
    mean_sq = total / max(1, stop - onset)
    return offset, peak, area, mean_sq


@jit
def rest_statistics(hist: np.ndarray, start: int, stop: int, fstate: np.ndarray) -> None:
    """Rest statistics of every channel over absolute samples [start, stop), into `fstate`:
    F_MU and F_SD the mean and (population) SD of hist_d, F_SIG2 the mean square of hist_y,
    SD and mean square floored at the smallest normal float. Sums run sample by sample, the
    order in which numpy reduces a (samples, channels) array along axis 0 when it has two or
    more channels, so the results equal `mean(axis=0)` / `std(axis=0)` there bit for bit."""
    hist_y = hist[0]
    hist_d = hist[1]
    n_hist = hist_d.shape[0]
    n_ch = hist_d.shape[1]
    n = stop - start
    tiny = np.finfo(np.float64).tiny
    s = np.zeros(n_ch)
    s_yy = np.zeros(n_ch)
    pos = start % n_hist
    for _ in range(n):
        for c in range(n_ch):
            s[c] += hist_d[pos, c]
            y = hist_y[pos, c]
            s_yy[c] += y * y
        pos += 1
        if pos == n_hist:
            pos = 0
    mu = s / n
    s_dev = np.zeros(n_ch)
    pos = start % n_hist
    for _ in range(n):
        for c in range(n_ch):
            dev = hist_d[pos, c] - mu[c]
            s_dev[c] += dev * dev
        pos += 1
        if pos == n_hist:
            pos = 0
    for c in range(n_ch):
        fstate[c, F_MU] = mu[c]
        fstate[c, F_SD] = max(np.sqrt(s_dev[c] / n), tiny)
        fstate[c, F_SIG2] = max(s_yy[c] / n, tiny)


@jit
def burst_metrics_all(
    hist_y: np.ndarray,
    onsets: np.ndarray,
    ends: np.ndarray,
    window: int,
    offset_rms: np.ndarray,
    out: np.ndarray,
) -> None:
    """`burst_metrics` of every channel c with onsets[c] >= 0 in one call (a trial's results
    cost one dispatch, not one per channel): out[c] <- (offset, peak, area, mean square)."""
    for c in range(onsets.shape[0]):
        if onsets[c] < 0:
            continue
        off, peak, area, mean_sq = burst_metrics(
            hist_y, c, onsets[c], ends[c], window, offset_rms[c]
        )
        out[c, 0] = off
        out[c, 1] = peak
        out[c, 2] = area
        out[c, 3] = mean_sq


@jit
def clipped_any(x: np.ndarray, run: int) -> bool:
    """True when a channel of x (n_samples, n_channels) sits at its largest or at its
    smallest finite value for `run` (>= 2) finite samples in a row: a saturated amplifier.
    Non-finite samples are skipped (they neither count nor break a run). One pass, rows
    outer (memory order): per channel the extreme so far, the current run at it and the
    longest run at it since it was set (a new extreme restarts both)."""
    n_ch = x.shape[1]
    hi = np.full(n_ch, -np.inf)
    lo = np.full(n_ch, np.inf)
    cur_hi = np.zeros(n_ch, dtype=np.int64)
    cur_lo = np.zeros(n_ch, dtype=np.int64)
    best_hi = np.zeros(n_ch, dtype=np.int64)
    best_lo = np.zeros(n_ch, dtype=np.int64)
    for i in range(x.shape[0]):
        for c in range(n_ch):
            v = x[i, c]
            if not np.isfinite(v):
                continue
            if v > hi[c]:
                hi[c] = v
                cur_hi[c] = 0
                best_hi[c] = 0
            if v == hi[c]:
                cur_hi[c] += 1
                best_hi[c] = max(best_hi[c], cur_hi[c])
            else:
                cur_hi[c] = 0
            if v < lo[c]:
                lo[c] = v
                cur_lo[c] = 0
                best_lo[c] = 0
            if v == lo[c]:
                cur_lo[c] += 1
                best_lo[c] = max(best_lo[c], cur_lo[c])
            else:
                cur_lo[c] = 0
    return bool(np.any(best_hi >= run)) or bool(np.any(best_lo >= run))
