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
    while j >= lo:
        total += hist_d[j % n_hist, c] / sig2
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
    pulled early by a ramp fitted to noise. Returns the j of the best (j, R)."""
    n_hist = hist_d.shape[0]
    best = -1.0
    best_j = hi
    for m in range(ramp_n + 1):
        ramp = (ramp_max * m) // ramp_n
        for j in range(max(lo, hi - int(_RAMP_REACH * ramp)), hi + 1):
            excess = 0.0
            wsum = 0.0
            for i in range(j, kend + 1):
                w = 1.0 if ramp == 0 else min(1.0, (i - j + 1) / ramp)
                wsum += w * w
                excess += hist_d[i % n_hist, c] - sig2
            if excess <= 0.0 or wsum <= 0.0:
                continue
            a2 = excess / wsum
            gain = 0.0
            for i in range(j, kend + 1):
                w = 1.0 if ramp == 0 else min(1.0, (i - j + 1) / ramp)
                ratio = 1.0 + a2 * w * w / sig2
                gain += -np.log(ratio) + hist_d[i % n_hist, c] / sig2 * (1.0 - 1.0 / ratio)
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
    for i in range(j, split):
        a += hist_d[i % n_hist, c]
    b = 0.0
    for i in range(split, kend + 1):
        b += hist_d[i % n_hist, c]
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
    for i in range(onset, end):
        v = hist_y[i % n_hist, c]
        acc += v * v
        if i - window >= onset:
            old = hist_y[(i - window) % n_hist, c]
            acc -= old * old
        n = min(window, i - onset + 1)
        if i - onset >= window and acc < thr2:
            offset = i
            break
        rms = np.sqrt(max(acc, 0.0) / n)
        peak = max(peak, rms)
        area += rms
        total += v * v
    stop = offset if offset >= 0 else end
    mean_sq = total / max(1, stop - onset)
    return offset, peak, area, mean_sq
