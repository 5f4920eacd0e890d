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
  uses; the AGLR look-back whitens hist_y with a model of the rest window and measures the
  rest variance of the whitened signal over that window (`refine_onset`).

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
C_RAMP_BLOCK = 9  # samples per block of the ramp likelihood (the ramp profile is block-averaged)
C_NBP = 10
C_NENV = 11
C_REST = 12  # rest window (samples before the stimulus): the look-back's whitening model
C_RAMP_MAX = 13  # longest ramp (samples) the ramp-model look-back considers (0: off)
C_RAMP_N = 14  # ramp lengths tried: RAMP_MAX * m / RAMP_N, m = 0..RAMP_N
C_RAMP_PENALTY = 15  # prior log-odds of a step against a ramp onset (look-back posterior)
C_RAMP_GATE = 16  # unused since 1.1.0 (was the early/late gate of the ramp look-back); reserved
C_RAMP_EARLY = 17  # unused since 1.1.0 (was the gate's early span); reserved
C_AGLR_R = 18  # AGLR: window mean-square ratio r_h > 1 with kappa L/2 (r_h - 1 - ln r_h) = h
C_DELAY = 19  # band-pass delay of a variance step (samples), taken off the onset (AGLR only)
C_SOS = 20
N_COEF_HEAD = 20

# fstate slots
F_MU = 0  # rest mean of the test domain
F_SD = 1  # rest SD of the test domain
F_SIG2 = 2  # rest variance of the band-passed signal
F_STAT = 3  # CUSUM sum / AGLR window sum
F_REST_OK = 4  # 1.0: the rest statistics came from the rest window before the stimulus (in hist)
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


# Candidates whose log-posterior lies this far below the best carry < e^-40 of its mass:
# skipped (no exp underflow, no effect on the median).
_POSTERIOR_SPAN = 40.0


@jit
def onset_posterior_median(
    d: np.ndarray,
    nj: int,
    sig2: float,
    ramp_max: int,
    ramp_n: int,
    block: int,
    kappa: float,
    log_odds: float,
) -> int:
    """Posterior median of the onset under a step-or-ramp variance model. `d` holds the
    squared samples of the look-back, candidates are its first `nj` positions (the last one
    is the alarm) and the data runs to its end. Returns the position in `d`.

    Samples before j have the rest variance `sig2`; from j on, sig2 (1 + b w_i) with
    w_i = min(1, (i - j + 1) / R)^2: R = 0 a step, R = ramp_max * m / ramp_n (m = 1..ramp_n)
    a ramp of the amplitude over R samples whose first sample is the onset. The plateau
    excess b is one plug-in value for every candidate, mean(d[nj - 1:]) / sig2 - 1 (the data
    from the alarm on), so candidates of both families compete on equal terms and every
    logarithm is per ramp, not per sample. The log-likelihood of samples j.. (samples before
    j add the same constant to every candidate) is
    kappa / 2 * sum(d_i / sig2 * (1 - 1 / (1 + b w_i)) - ln(1 + b w_i)), counted in
    independent samples (x kappa). Priors: uniform over j; a step has prior probability
    1 / (1 + e^-log_odds), the ramps share the rest equally. The posterior over j sums the
    families; its median minimises the expected absolute onset error, and it does not jump
    to a distant candidate on a near-tie the way the maximum does.

    Ramp likelihoods use block sums of d over `block` samples against the block mean of w:
    w changes little within a block (the profile is smooth; `block` is a few samples), and
    it cuts the cost by `block`. Returns nj - 1 when there is no excess after the alarm.
    """
    n = int(d.shape[0])
    if n <= 0 or nj <= 0 or nj > n:
        return max(0, min(nj, n) - 1)
    inv_sig2 = 1.0 / sig2
    # prefix sums: z_sum[t] = sum of d / sig2 over [0, t)
    z_sum = np.empty(n + 1)
    z_sum[0] = 0.0
    acc = 0.0
    for t in range(n):
        acc += d[t] * inv_sig2
        z_sum[t + 1] = acc
    b = (z_sum[n] - z_sum[nj - 1]) / (n - nj + 1) - 1.0
    if not b > 1e-12:
        return nj - 1
    # Gains are kept relative to "plateau from position 0 on", a constant of every candidate:
    # a step at j loses the samples before j to the rest variance; a ramp adds, over its
    # span, z_i (1/(1+b) - 1/(1+b w_i)) - ln((1+b w_i)/(1+b)). No term grows with the
    # plateau's length, so a huge ratio (a flat, clipped rest) keeps the candidates apart.
    l1b = np.log1p(b)
    c_flat = b / (1.0 + b)  # 1 - 1 / (1 + b)
    inv_1b = 1.0 / (1.0 + b)
    half_kappa = 0.5 * kappa
    gains = np.empty((ramp_n + 1, nj))
    for jj in range(nj):
        gains[0, jj] = half_kappa * (jj * l1b - c_flat * z_sum[jj])
    blk = max(1, block)
    # block sums of z: z_blk[t] = sum over [t, t + blk)
    z_blk = np.empty(max(0, n - blk + 1))
    for t in range(z_blk.shape[0]):
        z_blk[t] = z_sum[t + blk] - z_sum[t]
    acc_r = np.empty(nj)
    for m in range(1, ramp_n + 1):
        ramp = max(1, (ramp_max * m) // ramp_n)
        nb = (ramp + blk - 1) // blk
        span = nb * blk
        coef_r = np.empty(nb)
        log_r = 0.0
        for tau in range(nb):
            w_sum = 0.0
            for u in range(tau * blk, tau * blk + blk):
                w = min(1.0, (u + 1) / ramp)
                w_sum += w * w
            bw = b * w_sum / blk
            coef_r[tau] = inv_1b - 1.0 / (1.0 + bw)
            log_r += blk * np.log((1.0 + bw) * inv_1b)
        n_fit = max(0, min(nj, n - span + 1))  # candidates whose ramp fits in the data
        for jj in range(n_fit):
            acc_r[jj] = 0.0
        # candidates in the inner loop: independent sums that vectorise (a sum per candidate
        # over its blocks would be one dependent chain, 4x slower)
        for tau in range(nb):
            cr = coef_r[tau]
            off = tau * blk
            for jj in range(n_fit):
                acc_r[jj] += cr * z_blk[jj + off]
        for jj in range(n_fit):
            gains[m, jj] = gains[0, jj] + half_kappa * (acc_r[jj] - log_r)
        for jj in range(n_fit, nj):
            gains[m, jj] = -np.inf  # the ramp does not fit in the data
    log_step = -np.log1p(np.exp(-log_odds))  # log prior of the step family
    log_ramp = -np.log1p(np.exp(log_odds)) - np.log(ramp_n)  # log prior of each ramp
    top = -np.inf
    for jj in range(nj):
        top = max(top, gains[0, jj] + log_step)
        for m in range(1, ramp_n + 1):
            top = max(top, gains[m, jj] + log_ramp)
    post = np.empty(nj)
    total = 0.0
    floor = top - _POSTERIOR_SPAN
    for jj in range(nj):
        v = 0.0
        x = gains[0, jj] + log_step
        if x > floor:
            v += np.exp(x - top)
        for m in range(1, ramp_n + 1):
            x = gains[m, jj] + log_ramp
            if x > floor:
                v += np.exp(x - top)
        post[jj] = v
        total += v
    half = 0.5 * total
    acc = 0.0
    for jj in range(nj):
        acc += post[jj]
        if acc >= half:
            return jj
    return nj - 1


# Whitening order of the look-back (AR model of the rest window). 8 lags at 2 kHz: the
# causal 20-450 Hz band-pass leaves the band's edges and 450-1000 Hz attenuated, not empty;
# whitening gives their timing information back (10 dB steps, dev seeds: MAE 1.8 -> 1.1 ms,
# ramps 13.6 -> 10.8 ms; 16 lags gained < 0.1 ms).
_WHITEN_ORDER = 8
# Whiten only when the band keeps less than half of the Nyquist band (kappa < 0.5, i.e.
# above ~1.7 kHz for 20-450 Hz): at 1 kHz the band fills 86 % of it, there is nothing to
# give back and the fitted whitener only adds noise (measured: 10 dB step MAE 1.75 -> 2.2).
_WHITEN_MAX_KAPPA = 0.5


@jit
def _lag_sums(y: np.ndarray, order: int, out: np.ndarray) -> None:
    """out[l] = sum over u in [l, len(y)) of y[u] y[u - l], l = 0..order. Four partial sums
    per lag: one running sum is a chain of dependent additions, 3-4x slower."""
    n = y.shape[0]
    for lag in range(order + 1):
        s0 = s1 = s2 = s3 = 0.0
        u = lag
        while u + 3 < n:
            s0 += y[u] * y[u - lag]
            s1 += y[u + 1] * y[u + 1 - lag]
            s2 += y[u + 2] * y[u + 2 - lag]
            s3 += y[u + 3] * y[u + 3 - lag]
            u += 4
        while u < n:
            s0 += y[u] * y[u - lag]
            u += 1
        out[lag] = (s0 + s1) + (s2 + s3)


@jit
def whitening_filter(y: np.ndarray, order: int, a: np.ndarray, lag_sums: np.ndarray) -> float:
    """Yule-Walker AR(order) model of the window y (1-D) by Levinson-Durbin: a[0] = 1,
    a[1..order] such that e_t = sum_i a[i] y[t - i] is as white as the model allows.
    Returns the model's prediction error variance (<= 0: window too short or degenerate)
    and leaves the window's lag sums (`_lag_sums`) in `lag_sums`. Biased autocovariance
    (lag sums / window length): the Toeplitz matrix stays positive definite, so the filter
    is minimum phase."""
    n = y.shape[0]
    a[:] = 0.0
    a[0] = 1.0
    if n <= order:
        return 0.0
    _lag_sums(y, order, lag_sums)
    r = lag_sums / n
    err = r[0]
    if not err > 0.0:
        return 0.0
    prev = np.empty(order + 1)
    for m in range(1, order + 1):
        acc = r[m]
        for i in range(1, m):
            acc += a[i] * r[m - i]
        refl = -acc / err
        for i in range(m):
            prev[i] = a[i]
        for i in range(1, m):
            a[i] = prev[i] + refl * prev[m - i]
        a[m] = refl
        err *= 1.0 - refl * refl
        if not err > 0.0:
            return 0.0
    return float(err)


@jit
def whitened_power(y: np.ndarray, order: int, a: np.ndarray, lag_sums: np.ndarray) -> float:
    """mean(e_t^2) over t in [order, len(y)), e_t = sum_q a[q] y[t - q], from the window's lag
    sums: sum_t e_t^2 = sum_pq a_p a_q sum_t y[t-p] y[t-q], and each inner sum is a lag sum
    less at most 2 * order end terms (O(order^3) instead of O(order * len(y))). Measured,
    not the model's error variance: that one is the (biased) autocovariance model's and
    differs by up to ~40 % when the samples are strongly correlated (large coefficients)."""
    n = y.shape[0]
    if n <= order:
        return 0.0
    total = 0.0
    for p in range(order + 1):
        for q in range(order + 1):
            lag = abs(p - q)
            low = min(p, q)
            # sum over u in [order - low, n - low) of y[u] y[u - lag]
            pair = lag_sums[lag]
            for u in range(lag, order - low):
                pair -= y[u] * y[u - lag]
            for u in range(n - low, n):
                pair -= y[u] * y[u - lag]
            total += a[p] * a[q] * pair
    return float(total / (n - order))


@jit
def refine_onset(
    hist_y: np.ndarray,
    hist_d: np.ndarray,
    c: int,
    stim: int,
    alarm: int,
    kend: int,
    sig2: float,
    lookback: int,
    ramp_max: int,
    ramp_n: int,
    block: int,
    kappa: float,
    log_odds: float,
    delay: int,
    rest_n: int,
    rest_ok: bool,
    oldest: int,
) -> int:
    """The onset from an alarm: candidates [alarm - lookback, alarm], data up to `kend`.

    ramp_max > 0: `onset_posterior_median` of the step-or-ramp model; on the band-passed
    signal whitened by an AR model of the rest window when the band is narrow against the
    rate (kappa < _WHITEN_MAX_KAPPA) and that window is in the history (`rest_ok`: the rest
    statistics came from it), else on y**2 with the band-pass delay (`delay`) taken off.
    The whitener is a short causal FIR, so the whitened onset needs no delay correction.
    ramp_max == 0: the ML time of a variance step on y**2 (Staude & Wolf), minus `delay`."""
    lo = max(stim, alarm - lookback, oldest)
    if kend < alarm or alarm < lo:
        return alarm - delay
    if ramp_max <= 0 or ramp_n <= 0:
        return ml_variance_change(hist_d, c, lo, alarm, kend, sig2) - delay
    n_hist = hist_d.shape[0]
    n = kend - lo + 1
    nj = alarm - lo + 1
    d = np.empty(n)
    order = _WHITEN_ORDER
    rest0 = stim - rest_n
    if rest_ok and kappa < _WHITEN_MAX_KAPPA and rest0 >= oldest and rest_n > 2 * order:
        # y over [rest0, kend] unwrapped once: the rest window, then the look-back
        y = np.empty(kend - rest0 + 1)
        pos = rest0 % n_hist
        for t in range(y.shape[0]):
            y[t] = hist_y[pos, c]
            pos = pos + 1 if pos < n_hist - 1 else 0
        a = np.empty(order + 1)
        lag_sums = np.empty(order + 1)
        rest_y = y[:rest_n]
        if whitening_filter(rest_y, order, a, lag_sums) > 0.0:
            sig2_w = whitened_power(rest_y, order, a, lag_sums)
            if sig2_w > 0.0:
                base = lo - rest0  # lo >= stim: `order` samples of history before it
                for t in range(n):
                    e = 0.0
                    for q in range(order + 1):
                        e += a[q] * y[base + t - q]
                    d[t] = e * e
                j = onset_posterior_median(d, nj, sig2_w, ramp_max, ramp_n, block, 1.0, log_odds)
                return lo + j
    pos = lo % n_hist
    for t in range(n):
        d[t] = hist_d[pos, c]
        pos = pos + 1 if pos < n_hist - 1 else 0
    j = onset_posterior_median(d, nj, sig2, ramp_max, ramp_n, block, kappa, log_odds)
    return lo + j - delay


@jit
def _test_channel(
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    hist_y: np.ndarray,
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
            fstate[c, F_STAT] = _window_start(hist_d, c, max(oldest, k - window), k)
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
                istate[c, I_ONSET] = refine_onset(
                    hist_y,
                    hist_d,
                    c,
                    istate[c, I_STIM],
                    alarm,
                    k,
                    sig2,
                    int(coef[C_LOOKBACK]),
                    int(coef[C_RAMP_MAX]),
                    int(coef[C_RAMP_N]),
                    int(coef[C_RAMP_BLOCK]),
                    kappa,
                    coef[C_RAMP_PENALTY],
                    delay,
                    int(coef[C_REST]),
                    fstate[c, F_REST_OK] > 0.0,
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
    then advance each armed channel's detector (AGLR: the channels armed or testing from a
    common cursor run side by side, `_aglr_test_block`; the others one by one,
    `_test_channel`). Returns the number of events (alarms, refined onsets, closed windows)
    raised in this block.

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
    # AGLR: the lanes test side by side and leave a bit set for each channel still to test
    redo = -1
    if method == M_AGLR:
        redo = _aglr_test_block(coef, fstate, istate, hist_d, head0, n_samples)
    events = 0
    if redo == 0:
        return events
    # one call site of `_test_channel` (a large function: a second inlined copy slowed the
    # steady state down by a third)
    for c in range(n_channels):
        if redo < 0 or (redo >> c) & 1:
            istate[c, I_HEAD] = head0 + n_samples
            events += _test_channel(coef, fstate, istate, hist_y, hist_d, c)
    return events


@jit
def _aglr_candidate(istate: np.ndarray, c: int, head: int) -> bool:
    """Channel c is armed or testing and its window stays open through the block."""
    phase = istate[c, I_PHASE]
    return bool(phase in (P_TESTING, P_ARMED) and istate[c, I_END] >= head)


@jit
def _window_start(hist_d: np.ndarray, c: int, lo: int, hi: int) -> float:
    """The AGLR window sum over [lo, hi) that a channel starts testing with (in this order:
    the lanes and `_test_channel` must leave the same bits)."""
    n_hist = hist_d.shape[0]
    acc = 0.0
    pos = lo % n_hist  # one modulo, not one per sample (16 x 60 of them cost ~2.5 us an arm)
    for _ in range(lo, hi):
        acc += hist_d[pos, c]
        pos = pos + 1 if pos < n_hist - 1 else 0
    return acc


@jit
def _window_sums8(
    hist_d: np.ndarray, fstate: np.ndarray, c: int, pos: int, opos: int, n: int
) -> tuple[float, ...]:
    """AGLR window sums of channels c..c+7 over n samples (new sample at ring row `pos`,
    leaving one at `opos`): (sums..., largest sum of each in these samples...). Eight
    independent chains in registers: the out-of-order core overlaps them, where one chain
    per channel waits on its own two additions every sample."""
    n_hist = hist_d.shape[0]
    s0 = fstate[c, F_STAT]
    s1 = fstate[c + 1, F_STAT]
    s2 = fstate[c + 2, F_STAT]
    s3 = fstate[c + 3, F_STAT]
    s4 = fstate[c + 4, F_STAT]
    s5 = fstate[c + 5, F_STAT]
    s6 = fstate[c + 6, F_STAT]
    s7 = fstate[c + 7, F_STAT]
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = -np.inf
    for _ in range(n):
        # per channel exactly `_test_channel`'s stat += new; stat -= leaving
        s0 += hist_d[pos, c]
        s1 += hist_d[pos, c + 1]
        s2 += hist_d[pos, c + 2]
        s3 += hist_d[pos, c + 3]
        s4 += hist_d[pos, c + 4]
        s5 += hist_d[pos, c + 5]
        s6 += hist_d[pos, c + 6]
        s7 += hist_d[pos, c + 7]
        s0 -= hist_d[opos, c]
        s1 -= hist_d[opos, c + 1]
        s2 -= hist_d[opos, c + 2]
        s3 -= hist_d[opos, c + 3]
        s4 -= hist_d[opos, c + 4]
        s5 -= hist_d[opos, c + 5]
        s6 -= hist_d[opos, c + 6]
        s7 -= hist_d[opos, c + 7]
        t0 = s0 if s0 > t0 else t0
        t1 = s1 if s1 > t1 else t1
        t2 = s2 if s2 > t2 else t2
        t3 = s3 if s3 > t3 else t3
        t4 = s4 if s4 > t4 else t4
        t5 = s5 if s5 > t5 else t5
        t6 = s6 if s6 > t6 else t6
        t7 = s7 if s7 > t7 else t7
        pos += 1
        if pos == n_hist:
            pos = 0
        opos += 1
        if opos == n_hist:
            opos = 0
    return (s0, s1, s2, s3, s4, s5, s6, s7, t0, t1, t2, t3, t4, t5, t6, t7)


@jit
def _window_sum1(
    hist_d: np.ndarray, fstate: np.ndarray, c: int, pos: int, opos: int, n: int
) -> tuple[float, float]:
    """`_window_sums8` for one channel: (sum, largest sum in these samples)."""
    n_hist = hist_d.shape[0]
    s = fstate[c, F_STAT]
    t = -np.inf
    for _ in range(n):
        s += hist_d[pos, c]
        s -= hist_d[opos, c]
        t = s if s > t else t
        pos += 1
        if pos == n_hist:
            pos = 0
        opos += 1
        if opos == n_hist:
            opos = 0
    return s, t


@jit
def _aglr_keep(
    fstate: np.ndarray,
    istate: np.ndarray,
    c: int,
    head: int,
    level_per_sig2: float,
    stat: float,
    top: float,
) -> int:
    """Keep lane c's block (its sum and largest sum) unless it crossed its alarm level (a
    lane crosses iff its largest sum does). Returns 0 when kept, else channel c's bit: it
    is then tested by `_test_channel` from its state at the lanes' start (an armed lane's
    starting window sum already taken, as `_test_channel` would take it)."""
    # the same product as `_test_channel`'s alarm level, (C_AGLR_R * window) * sig2
    if not top > level_per_sig2 * fstate[c, F_SIG2]:
        fstate[c, F_STAT] = stat
        if top > fstate[c, F_MAXSTAT]:
            fstate[c, F_MAXSTAT] = top
        istate[c, I_CURSOR] = head
        return 0
    return 1 << c


@jit
def _aglr_test_block(
    coef: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    hist_d: np.ndarray,
    head0: int,
    n: int,
) -> int:
    """The AGLR test of a block, channels side by side: the steady state of a trial, and the
    block after arming, which catches up from the stimulus.

    A "lane" is a channel, armed or testing, whose cursor is the lanes' common start k0
    (the block's first sample, else the cursor the armed channels share) and whose window
    stays open through the block. An armed lane gets its starting window sum first (as
    `_test_channel` would). Lanes' window sums over [k0, head) run eight channels at a time
    in registers (`_window_sums8`); per channel the sum sees the same additions in the same
    order as `_test_channel`, so it is the same bits. The largest sum decides both the
    diagnostic maximum and whether the lane crossed its alarm level. Returns a bit mask of
    the channels the caller must still run `_test_channel` on: a lane that crossed (redone
    from k0, where its state was left) and every other channel (alarmed, done, idle, behind,
    window ending). Returns -1 (nothing touched: test every channel) when no channel is a
    lane, the samples leaving the window are not all in the history, or there are more
    channels than mask bits. Serial per channel, the sum is a chain of dependent additions
    (~1.6 us of a 32 x 16 block); side by side ~0.3 us."""
    n_ch = istate.shape[0]
    n_hist = hist_d.shape[0]
    head = head0 + n
    window = int(coef[C_WINDOW])
    oldest = max(0, head - n_hist)
    if n <= 0 or n_ch > 62:
        return -1
    # the common start: the block's first sample if any candidate is there (steady state),
    # else the first candidate's cursor (the stimulus, right after arming)
    k0 = -1
    for c in range(n_ch):
        if _aglr_candidate(istate, c, head):
            cursor = istate[c, I_CURSOR]
            if k0 < 0 or cursor == head0:
                k0 = cursor
            if cursor == head0:
                break
    # the window before k0 and the sample leaving it are in the history (so head - k0 <= n_hist)
    if k0 < 0 or k0 > head0 or k0 - window < oldest:
        return -1
    lanes = 0  # bit c: channel c is a lane
    for c in range(n_ch):
        istate[c, I_HEAD] = head
        if not (_aglr_candidate(istate, c, head) and istate[c, I_CURSOR] == k0):
            continue
        lanes |= 1 << c
        if istate[c, I_PHASE] == P_ARMED:
            # `_test_channel`'s start of testing, at k0 (>= oldest + window)
            istate[c, I_RUN_LEN] = 0
            istate[c, I_LASTZERO] = k0 - 1
            fstate[c, F_MAXSTAT] = 0.0
            fstate[c, F_STAT] = _window_start(hist_d, c, k0 - window, k0)
            istate[c, I_PHASE] = P_TESTING
    m = head - k0
    pos = k0 % n_hist
    opos = pos - window  # the sample leaving the window
    if opos < 0:
        opos += n_hist
    level = coef[C_AGLR_R] * window
    redo = ((1 << n_ch) - 1) & ~lanes
    c = 0
    while c + 8 <= n_ch:
        if (lanes >> c) & 0xFF:
            sums = _window_sums8(hist_d, fstate, c, pos, opos, m)
            for j in range(8):
                if (lanes >> (c + j)) & 1:
                    redo |= _aglr_keep(fstate, istate, c + j, head, level, sums[j], sums[8 + j])
        c += 8
    while c < n_ch:
        if (lanes >> c) & 1:
            stat, top = _window_sum1(hist_d, fstate, c, pos, opos, m)
            redo |= _aglr_keep(fstate, istate, c, head, level, stat, top)
        c += 1
    return int(redo)


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
    hist_y: np.ndarray,
    c: int,
    onset: int,
    end: int,
    window: int,
    offset_rms: float,
    search_from: int = 0,
) -> tuple[int, float, float, float]:
    """From `onset` up to `end` (exclusive): the first sample i >= max(onset + window,
    search_from) at which the rms of y over the last `window` samples is below `offset_rms`
    (the offset, -1 if none), the largest moving rms before it, the sum of the moving rms
    before it, and the mean square of y over [onset, offset). Stops at the offset.
    `search_from` (the alarm): a ramp's first milliseconds are quieter than the offset level,
    and an onset placed at the start of the rise must not end the burst there."""
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
        if i - onset >= window and i >= search_from and acc < thr2:
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
    search_from: np.ndarray,
    out: np.ndarray,
) -> None:
    """`burst_metrics` of every channel c with onsets[c] >= 0 in one call (a trial's results
    cost one dispatch, not one per channel): out[c] <- (offset, peak, area, mean square);
    channel c's offset is searched from search_from[c] on (its alarm)."""
    for c in range(onsets.shape[0]):
        if onsets[c] < 0:
            continue
        off, peak, area, mean_sq = burst_metrics(
            hist_y, c, onsets[c], ends[c], window, offset_rms[c], search_from[c]
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
