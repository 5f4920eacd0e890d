"""Trial logic: perturbation or stimulus -> muscle onsets -> latencies, per trial.

Fed by the pipeline after every ring push (`on_block`), synchronous and cheap. All times are
host-clock seconds from the ring buffers (device time mapped by the clock model), so a
latency is a difference of two sample times, never of two arrival times.

A trial opens at a perturbation from the configured source (a trigger edge, exact to the
sample; or the platform IMU / force plate, whose onset is refined by look-back). The EMG
detector is armed at the stimulus sample of the EMG stream (as soon as that stream has
reached it: streams arrive with different delays) and reports alarms and refined onsets as
they happen. The trial closes when every stream it needs has passed the end of the response
window (or `close_timeout_s` after that, with what is there): then the force response onset
(motor time, postural response latency), the cross-check of the other perturbation sources
and the quality flags are computed and the trial result is emitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from nmcore import __version__
from nmcore.buffer.ring import Window
from nmcore.config.models import CopSwayConfig, StationConfig
from nmcore.detect._emg_kernels import clipped_any
from nmcore.detect.cop import CopResult, cop_from_load_cells, cop_from_six_axis, cop_given
from nmcore.detect.emg import ALGORITHM_VERSION as EMG_ALGORITHM_VERSION
from nmcore.detect.emg import EmgOnsetDetector, OnsetEvent, params_hash, rest_params_hash
from nmcore.detect.perturbation import MotionOnset, motion_onset, rising_edges_in
from nmcore.detect.sway import sway_measures
from nmcore.runtime.pipeline import StreamState

__all__ = ["SwayStage", "TrialEngine"]

log = logging.getLogger("nmcore.trials")

Emit = Callable[[dict[str, Any]], None]
Offload = Callable[[Callable[[], dict[str, Any]]], None]
SWAY_VERSION = "1"
# a run of this many equal extreme samples reads as a saturated (clipped) front end
CLIP_RUN = 3


def _channel_indices(st: StreamState, names: list[str] | None, what: str) -> list[int]:
    all_names = list(st.desc.channel_names)
    if names is None:
        return list(range(len(all_names)))
    missing = [n for n in names if n not in all_names]
    if missing:
        raise ValueError(
            f"{what}: stream {st.desc.stream_id!r} has no channel {missing[0]!r} "
            f"(channels: {', '.join(all_names)})"
        )
    return [all_names.index(n) for n in names]


def _clipped(x: np.ndarray) -> bool:
    """True when a channel sits at its extreme value for CLIP_RUN samples in a row (one
    jitted pass; `clipped_any` is tested against the numpy definition)."""
    return bool(clipped_any(np.ascontiguousarray(x, dtype=np.float64), CLIP_RUN))


@dataclass(slots=True)
class Trial:
    number: int
    stimulus_s: float
    source: str
    alarm_s: float | None
    opened_s: float
    emg_stimulus_index: int | None = None
    onsets: dict[int, dict[str, Any]] = field(default_factory=dict)
    alarms: dict[int, int] = field(default_factory=dict)
    emg_done: bool = False
    gap: bool = False
    rest_from_calibration: bool = False


class TrialEngine:
    def __init__(
        self,
        station: StationConfig,
        streams: dict[str, StreamState],
        emit: Emit,
        *,
        offload: Offload | None = None,
    ) -> None:
        """`offload`: runs a trial's closing computation (the force-response and cross-check
        onset fits, ~10-20 ms) elsewhere, e.g. a worker thread, and emits its result; None
        runs it inline. Windows are copied first, so the job never touches a ring."""
        self._offload = offload
        self.cfg = station.detectors
        self.trial_cfg = station.trial
        self.streams = streams
        self._emit = emit
        self.trials_done = 0
        self._trial: Trial | None = None
        self._number = 0
        self._last_perturbation_s = -np.inf
        self._trigger_prev = np.nan
        self._trigger_channel: int | None = None
        # per stream: (ring head, time of its newest sample); the open trial's close plan
        self._newest_cache: dict[str, tuple[int, float]] = {}
        self._plan: tuple[Trial, list[tuple[StreamState | None, float]], float] | None = None
        self._next_motion_check = 0
        pcfg = self.cfg.perturbation
        self._source_stream = None
        if pcfg is not None:
            self._source_stream = {
                "trigger": pcfg.trigger_stream,
                "imu": pcfg.imu_stream,
                "forceplate": pcfg.force_stream,
            }[pcfg.source]
        self._emg: EmgOnsetDetector | None = None
        self._emg_next_index = 0
        self._emg_channels: list[int] = []
        if self.cfg.emg_onset is not None:
            st = self._stream(self.cfg.emg_onset.stream, "detectors.emg_onset.stream")
            self._emg_channels = _channel_indices(st, self.cfg.emg_onset.channels, "emg_onset")
            self._emg = EmgOnsetDetector(
                st.desc.rate_hz, len(self._emg_channels), self.cfg.emg_onset.params
            )
        self._emg_hash = (
            params_hash(self.cfg.emg_onset.params) if self.cfg.emg_onset is not None else ""
        )
        # stored rest statistics depend only on the test domain (method, band, envelope)
        self._emg_rest_hash = (
            rest_params_hash(self.cfg.emg_onset.params) if self.cfg.emg_onset is not None else ""
        )
        self._chain: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if self._emg is not None and self.cfg.emg_onset is not None:
            st = self.streams[self.cfg.emg_onset.stream]
            # The pipeline may run the chain inside its push kernel (one jitted call per block)
            # when that gives what this engine would do: every channel, in stream order, and
            # nothing of this engine touching the detector between the push and the feed
            # (a perturbation source on the EMG stream would arm or close it in between).
            if (
                self._emg_channels == list(range(st.desc.n_channels))
                and self._source_stream != st.desc.stream_id
            ):
                self._chain = (self._emg.work, self._emg.istate, self._emg.hist)
                st.chain = self._chain
        devices = sorted({s.desc.device_id for s in streams.values()})
        self._provenance_base = {"nmcore_version": __version__, "devices": devices}
        # stream id -> calibration id, and the trigger delay a latency calibration measured
        self._calibrations: dict[str, str] = {}
        self._latency_ms: dict[str, float] = {}
        self._trigger_latency_s = 0.0
        self._emg_rest: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def calibrated(self, stream_id: str, calibration_id: str) -> None:
        """Name a calibration applied to `stream_id` in every later result."""
        self._calibrations[stream_id] = calibration_id

    def set_input_latency(self, stream_id: str, delay_s: float, calibration_id: str) -> None:
        """A latency calibration of `stream_id`: its events happened `delay_s` before the
        daemon's timestamp of them. Applied to the trigger stream's perturbation onsets."""
        self._calibrations[stream_id] = calibration_id
        self._latency_ms[stream_id] = delay_s * 1e3
        pcfg = self.cfg.perturbation
        if pcfg is not None and pcfg.source == "trigger" and pcfg.trigger_stream == stream_id:
            self._trigger_latency_s = delay_s

    def set_emg_rest(self, stream_id: str, cal: Any) -> None:
        """An EMG calibration of `stream_id`: its rest statistics stand in when a trial has no
        pre-stimulus rest window (the stream had just started, or the window is missing),
        provided they were computed with the detector parameters in use."""
        self._calibrations[stream_id] = cal.id
        ecfg = self.cfg.emg_onset
        if ecfg is None or ecfg.stream != stream_id:
            return
        st = self.streams[stream_id]
        by_name = {c.name: c.onset_rest for c in cal.values.channels}
        stats = [by_name.get(st.desc.channel_names[i]) for i in self._emg_channels]
        if any(r is None or r.params_hash != self._emg_rest_hash for r in stats):
            log.info(
                "%s: calibration %s has no rest statistics for these channels and onset "
                "parameters; trials without a rest window get no EMG onsets",
                stream_id,
                cal.id,
            )
            return
        mu, sd, sig2 = (
            np.array([getattr(r, key) for r in stats], dtype=np.float64)
            for key in ("mu", "sd", "sig2")
        )
        self._emg_rest = (mu, sd, sig2)

    def _stream(self, stream_id: str, path: str) -> StreamState:
        st = self.streams.get(stream_id)
        if st is None:
            known = ", ".join(sorted(self.streams))
            raise ValueError(f"{path}: no stream {stream_id!r} (streams: {known})")
        return st

    # -- feeding ----------------------------------------------------------------------------
    def on_block(self, st: StreamState, first_index: int, n: int) -> None:
        sid = st.desc.stream_id
        if n <= 0:
            return
        pcfg = self.cfg.perturbation
        if pcfg is not None and sid == self._source_stream:
            if pcfg.source == "trigger":
                self._scan_trigger(st, first_index, n)
            else:
                self._scan_motion(st)
        if (
            self._emg is not None
            and self.cfg.emg_onset is not None
            and sid == self.cfg.emg_onset.stream
        ):
            self._feed_emg(st, first_index, n)
        self._maybe_close()

    def _scan_trigger(self, st: StreamState, first_index: int, n: int) -> None:
        pcfg = self.cfg.perturbation
        assert pcfg is not None
        ch = self._trigger_channel
        if ch is None:
            names = [pcfg.trigger_channel]
            ch = self._trigger_channel = _channel_indices(
                st, names, "perturbation.trigger_channel"
            )[0]
        x = st.ring.window_by_index(first_index, first_index + n)
        previous = self._trigger_prev
        self._trigger_prev = float(x.data[-1, ch])
        edges = rising_edges_in(x.data, ch, pcfg.trigger_threshold, previous)
        for e in edges:
            t_s = float(x.t_s[e]) - self._trigger_latency_s
            self._open_trial(t_s, "trigger", alarm_s=t_s)

    def _scan_motion(self, st: StreamState) -> None:
        """Live onset from an IMU or force plate: every ~50 ms, test the last search span."""
        pcfg = self.cfg.perturbation
        assert pcfg is not None
        head = st.ring.head
        if head < self._next_motion_check:
            return
        rate = st.desc.rate_hz
        self._next_motion_check = head + max(1, round(0.05 * rate))
        p = pcfg.onset
        rest = round(p.rest_window_ms * 1e-3 * rate)
        span = round(0.2 * rate)  # look for a change in the last 200 ms
        post = round(p.post_alarm_ms * 1e-3 * rate)
        start = head - span - rest - post
        if start < st.ring.oldest:
            return
        names = pcfg.imu_channels if pcfg.source == "imu" else pcfg.force_channels
        chans = _channel_indices(st, names, f"perturbation.{pcfg.source}_channels")
        w = st.ring.window_by_index(start, head)
        if w.has_gap:
            return
        res = motion_onset(
            w.data[:, chans],
            rate,
            rest,
            p.model_copy(update={"search_window_ms": span / rate * 1e3}),
        )
        if not res.detected or res.onset_index is None or res.alarm_index is None:
            return
        # wait until the fit had its post-alarm data
        if res.alarm_index + post > len(w.t_s) - 1:
            self._next_motion_check = start + res.alarm_index + post + 1
            return
        t_on = float(w.t_s[res.onset_index])
        self._open_trial(t_on, pcfg.source, alarm_s=float(w.t_s[res.alarm_index]))

    def _open_trial(self, stimulus_s: float, source: str, alarm_s: float | None) -> None:
        pcfg = self.cfg.perturbation
        refractory_s = pcfg.refractory_s if pcfg is not None else 0.0
        if stimulus_s - self._last_perturbation_s < refractory_s:
            return
        self._last_perturbation_s = stimulus_s
        if self._trial is not None:
            self._close(force=True)
        self._number += 1
        self._trial = Trial(self._number, stimulus_s, source, alarm_s, opened_s=stimulus_s)
        self._emit(
            {
                "type": "perturbation",
                "trial": self._number,
                "source": source,
                "onset_s": stimulus_s,
                "alarm_s": alarm_s,
                "latency_correction_ms": (
                    self._trigger_latency_s * 1e3 if source == "trigger" else 0.0
                ),
            }
        )
        self._try_arm()

    # -- commands ---------------------------------------------------------------------------
    def arm(self) -> None:
        """Accept the next perturbation at once, even inside the refractory period."""
        self._last_perturbation_s = -np.inf

    def start_manual(self, t_s: float) -> int:
        """A trial whose stimulus is `t_s` (an operator's start command); returns its number."""
        self._last_perturbation_s = -np.inf
        self._open_trial(t_s, "command", alarm_s=t_s)
        return self._number

    def stop_manual(self) -> bool:
        """Close the running trial with what is there; False if none is running."""
        if self._trial is None:
            return False
        self._close(force=True)
        return True

    # -- EMG --------------------------------------------------------------------------------
    def _feed_emg(self, st: StreamState, first_index: int, n: int) -> None:
        det = self._emg
        assert det is not None
        fused_events = st.chain_events
        if fused_events >= 0 and st.chain is self._chain:
            # the pipeline's push kernel already ran the chain on exactly this block
            st.chain_events = -1
            self._emg_next_index = first_index + n
            if fused_events:
                self._handle_emg_events(st, det.collect_events())
            self._try_arm()
            return
        if first_index > self._emg_next_index:
            missing = first_index - self._emg_next_index
            if self._trial is not None:
                self._trial.gap = True
            # keep the detector's index aligned with the ring: zeros through the gap
            # (the trial is flagged; a NaN would poison the filter state)
            det.process(np.zeros((missing, len(self._emg_channels))))
        w = st.ring.window_by_index(first_index, first_index + n)
        data = (
            w.data[:, self._emg_channels] if len(self._emg_channels) != w.data.shape[1] else w.data
        )
        self._emg_next_index = first_index + n
        events = det.process(np.ascontiguousarray(data))
        self._handle_emg_events(st, events)
        self._try_arm()

    def _try_arm(self) -> None:
        trial, det = self._trial, self._emg
        if trial is None or det is None or trial.emg_stimulus_index is not None:
            return
        assert self.cfg.emg_onset is not None
        st = self.streams[self.cfg.emg_onset.stream]
        if st.ring.head == 0 or st.ring.time_of(st.ring.head - 1) < trial.stimulus_s:
            return  # the EMG stream has not reached the stimulus yet
        w = st.ring.window_by_time(trial.stimulus_s, trial.stimulus_s + 1.0)
        idx = w.first_index
        if idx >= det.head:
            return  # not through the detector yet: arm after the next block
        rest = round(self.cfg.emg_onset.params.rest_window_ms * 1e-3 * st.desc.rate_hz)
        no_rest = idx - rest < max(st.ring.oldest, det.head - det.hist_y.shape[0], 0)
        if no_rest and self._emg_rest is None:
            trial.emg_done = True  # no rest data (the stream just started): no EMG this trial
            return
        try:
            if no_rest:
                det.arm(idx, rest=self._emg_rest)  # the calibration's rest statistics
                trial.rest_from_calibration = True
            else:
                det.arm(idx)
        except ValueError as exc:
            log.warning("trial %d: EMG not armed: %s", trial.number, exc)
            trial.emg_done = True
            return
        trial.emg_stimulus_index = idx
        # samples already past the stimulus are tested now, not only on the next block
        self._handle_emg_events(st, det.process(np.empty((0, len(self._emg_channels)))))

    def _handle_emg_events(self, st: StreamState, events: list[OnsetEvent]) -> None:
        trial = self._trial
        if trial is None or trial.emg_stimulus_index is None:
            return
        assert self.cfg.emg_onset is not None
        names = st.desc.channel_names
        for ev in events:
            if ev.kind == "alarm":
                trial.alarms[ev.channel] = ev.index
            if ev.kind != "onset":
                continue
            ch_name = names[self._emg_channels[ev.channel]]
            onset_s = st.ring.time_of(ev.index)
            alarm = trial.alarms.get(ev.channel)
            alarm_s = st.ring.time_of(alarm) if alarm is not None else None
            payload = {
                "type": "onset",
                "trial": trial.number,
                "stream": st.desc.stream_id,
                "channel": ch_name,
                "onset_s": onset_s,
                "alarm_s": alarm_s,
                "latency_ms": (onset_s - trial.stimulus_s) * 1e3,
                "algorithm": self.cfg.emg_onset.params.method,
                "algorithm_ref": {
                    "name": self.cfg.emg_onset.params.method,
                    "version": EMG_ALGORITHM_VERSION,
                    "params_hash": self._emg_hash,
                },
            }
            trial.onsets[ev.channel] = payload
            self._emit(payload)

    # -- closing ----------------------------------------------------------------------------
    def _window_end_s(self, trial: Trial) -> float:
        return trial.stimulus_s + self.trial_cfg.response_window_ms[1] * 1e-3

    def _newest_s(self, st: StreamState) -> float:
        """`ring.time_of(ring.head - 1)` of a stream with head > 0, remembered per head: it
        changes only when the stream's ring moves, and a trial asks for every stream's on
        every block while it is open."""
        ring = st.ring
        head = ring.head
        cached = self._newest_cache.get(st.desc.stream_id)
        if cached is not None and cached[0] == head:
            return cached[1]
        t_s = ring.time_of(head - 1)
        self._newest_cache[st.desc.stream_id] = (head, t_s)
        return t_s

    def _close_plan(self, trial: Trial) -> tuple[list[tuple[StreamState | None, float]], float]:
        """(streams that must pass a time, the time after which the trial closes anyway):
        fixed for a trial, so worked out once."""
        plan = self._plan
        if plan is not None and plan[0] is trial:
            return plan[1], plan[2]
        end_s = self._window_end_s(trial)
        needed: list[tuple[str, float]] = []
        if self.cfg.emg_onset is not None:
            p = self.cfg.emg_onset.params
            needed.append((self.cfg.emg_onset.stream, end_s + (p.lookback_ms + p.refine_ms) * 1e-3))
        if self.cfg.force_response is not None:
            post = self.cfg.force_response.params.post_alarm_ms * 1e-3
            needed.append((self.cfg.force_response.stream, end_s + post))
        # a stream that is not configured counts as past (None)
        resolved = [(self.streams.get(sid) if sid is not None else None, t) for sid, t in needed]
        timeout_s = end_s + self.trial_cfg.close_timeout_s
        self._plan = (trial, resolved, timeout_s)
        return resolved, timeout_s

    def _maybe_close(self) -> None:
        trial = self._trial
        if trial is None:
            return
        needed, timeout_s = self._close_plan(trial)
        ready = all(
            st is None or (st.ring.head > 0 and self._newest_s(st) >= t) for st, t in needed
        )
        if ready:
            self._close(force=False)
            return
        # max() in stream order, as before: a NaN first value keeps newest NaN (no timeout)
        newest = max(
            (self._newest_s(s) for s in self.streams.values() if s.ring.head > 0),
            default=-np.inf,
        )
        if newest > timeout_s:
            self._close(force=True)

    def finish(self) -> None:
        """End of input (analyze) or shutdown: close the open trial with what is there."""
        if self._trial is not None:
            self._close(force=True)

    def _close(self, *, force: bool) -> None:
        trial = self._trial
        assert trial is not None
        self._trial = None
        muscles: list[dict[str, Any]] = []
        algorithms: dict[str, Any] = {}
        quality: dict[str, Any] = {
            "gap_in_window": trial.gap,
            "clipping": False,
            "incomplete": force,
            "missed": [],
            "rest_from_calibration": trial.rest_from_calibration,
        }
        end_s = self._window_end_s(trial)
        lo_ms, hi_ms = self.trial_cfg.response_window_ms
        if self._emg is not None and self.cfg.emg_onset is not None:
            st = self.streams[self.cfg.emg_onset.stream]
            if trial.emg_stimulus_index is not None:
                self._handle_emg_events(st, self._emg.finish())
                results = self._emg.results()
                rest_s = self.cfg.emg_onset.params.rest_window_ms * 1e-3
                w = st.ring.window_by_time(trial.stimulus_s - rest_s, end_s)
                quality["gap_in_window"] = bool(quality["gap_in_window"] or w.has_gap)
                quality["clipping"] = bool(_clipped(w.data[:, self._emg_channels]))
                names = st.desc.channel_names  # a property that builds a tuple: once
                for r in results:
                    name = names[self._emg_channels[r.channel]]
                    onset = trial.onsets.get(r.channel)
                    latency = onset["latency_ms"] if onset else None
                    in_window = latency is not None and lo_ms <= latency <= hi_ms
                    if not in_window:
                        quality["missed"].append(name)
                    muscles.append(
                        {
                            "channel": name,
                            "detected": in_window,
                            "onset_s": onset["onset_s"] if in_window and onset else None,
                            "alarm_s": onset["alarm_s"] if in_window and onset else None,
                            "latency_ms": latency if in_window else None,
                            "premotor_ms": latency if in_window else None,
                            "motor_ms": None,
                            "snr_db": r.snr_db,
                            "peak": r.peak,
                            "area": r.area,
                        }
                    )
                    algorithms["emg_onset"] = {
                        "name": r.algorithm,
                        "version": r.algorithm_version,
                        "params_hash": r.params_hash,
                    }
        force_job = self._force_job(trial)
        cross_jobs = self._cross_jobs(trial)
        provenance = {
            **self._provenance_base,
            "calibrations": dict(self._calibrations),
            "latency_corrections_ms": dict(self._latency_ms),
        }
        self.trials_done += 1

        def finish() -> dict[str, Any]:
            force_onset_s = None
            if force_job is not None:
                fo = force_job()
                if fo is not None:
                    force_onset_s, res = fo
                    algorithms["force_response"] = {
                        "name": res.algorithm,
                        "version": res.algorithm_version,
                        "params_hash": res.params_hash,
                    }
            for m in muscles:
                if force_onset_s is not None and m["onset_s"] is not None:
                    m["motor_ms"] = (force_onset_s - m["onset_s"]) * 1e3
            cross: dict[str, Any] = {}
            for source, job in cross_jobs:
                t = job()
                if t is not None:
                    cross[source] = {
                        "onset_s": t,
                        "disagreement_ms": (t - trial.stimulus_s) * 1e3,
                    }
            return {
                "type": "trial_result",
                "trial": trial.number,
                "stimulus_source": trial.source,
                "stimulus_s": trial.stimulus_s,
                "muscles": muscles,
                "force_onset_s": force_onset_s,
                "postural_response_ms": (
                    (force_onset_s - trial.stimulus_s) * 1e3 if force_onset_s is not None else None
                ),
                "cross_check": cross,
                "quality": quality,
                "provenance": {**provenance, "algorithms": algorithms},
            }

        if self._offload is None:
            self._emit(finish())
        else:
            self._offload(finish)

    def _force_job(self, trial: Trial) -> Callable[[], tuple[float, MotionOnset] | None] | None:
        cfg = self.cfg.force_response
        if cfg is None:
            return None
        st = self.streams.get(cfg.stream)
        if st is None:
            return None
        chans = _channel_indices(st, cfg.channels, "force_response.channels")
        params = cfg.params
        rest_s = params.rest_window_ms * 1e-3
        lo_s, hi_s = (v * 1e-3 for v in self.trial_cfg.response_window_ms)
        # rest ends at the stimulus: a postural response cannot precede it
        w = st.ring.window_by_time(
            trial.stimulus_s - rest_s, trial.stimulus_s + hi_s + params.post_alarm_ms * 1e-3
        )
        ref = int(np.searchsorted(w.t_s, trial.stimulus_s))
        if w.has_gap or ref < 4 or ref >= len(w.t_s):
            return None
        data = w.data[:, chans]
        rate_hz = st.desc.rate_hz
        p = params.model_copy(
            update={"search_window_ms": hi_s * 1e3, "rest_window_ms": ref / rate_hz * 1e3}
        )

        def job() -> tuple[float, MotionOnset] | None:
            try:
                res = motion_onset(data, rate_hz, ref, p)
            except ValueError:
                return None
            if not res.detected or res.onset_index is None:
                return None
            t = float(w.t_s[res.onset_index])
            if not lo_s <= t - trial.stimulus_s <= hi_s:
                return None
            return t, res

        return job

    def _cross_jobs(self, trial: Trial) -> list[tuple[str, Callable[[], float | None]]]:
        """Onset of the perturbation from every configured source other than the one used."""
        pcfg = self.cfg.perturbation
        jobs: list[tuple[str, Callable[[], float | None]]] = []
        if pcfg is None:
            return jobs
        for source, sid, names in (
            ("imu", pcfg.imu_stream, pcfg.imu_channels),
            ("forceplate", pcfg.force_stream, pcfg.force_channels),
        ):
            if source == trial.source or sid is None or sid not in self.streams:
                continue
            st = self.streams[sid]
            chans = _channel_indices(st, names, f"perturbation.{source}")
            p = pcfg.onset.model_copy(update={"search_window_ms": 500.0})
            w = st.ring.window_by_time(
                trial.stimulus_s - 0.2 - p.rest_window_ms * 1e-3, trial.stimulus_s + 0.3
            )
            ref = int(np.searchsorted(w.t_s, trial.stimulus_s - 0.2))
            if w.has_gap or ref < 4 or ref >= len(w.t_s):
                continue
            jobs.append(
                (source, partial(_onset_time, w.data[:, chans], w.t_s, st.desc.rate_hz, ref, p))
            )
        return jobs


def _onset_time(
    data: np.ndarray, t_s: np.ndarray, rate_hz: float, ref: int, p: Any
) -> float | None:
    try:
        res = motion_onset(data, rate_hz, ref, p)
    except ValueError:
        return None
    if res.detected and res.onset_index is not None:
        return float(t_s[res.onset_index])
    return None


class SwayStage:
    """Centre-of-pressure sway measures on a sliding window, read from the ring's look-back
    when an update is due (not accumulated per block), plus a whole-record form for analyze."""

    def __init__(
        self,
        cfg: CopSwayConfig,
        streams: dict[str, StreamState],
        emit: Emit,
        *,
        offload: Offload | None = None,
    ) -> None:
        """`offload`: runs an update's computation (centre of pressure and the sway measures
        of the whole window, ~5 ms on the lab rig: the event loop's longest stall) elsewhere,
        e.g. a worker thread, and emits its result; None runs it inline. The window is a
        copy, so the job never touches the ring."""
        self.cfg = cfg
        self._emit = emit
        self._offload = offload
        st = streams.get(cfg.stream)
        if st is None:
            known = ", ".join(sorted(streams))
            raise ValueError(f"detectors.cop_sway.stream: no stream {cfg.stream!r} ({known})")
        self.st = st
        default = {
            "six_axis": ["Fx", "Fy", "Fz", "Mx", "My"],
            "cop": ["cop_x", "cop_y"],
            "load_cells": None,
        }[cfg.input]
        self._chans = _channel_indices(st, cfg.channels or default, "cop_sway.channels")
        rate = st.desc.rate_hz
        self._window_n = round(cfg.window_s * rate)
        self._update_n = max(1, round(cfg.update_every_s * rate))
        self._next_due: int | None = None
        self._phash = params_hash(cfg)

    def cop(self, data: np.ndarray) -> CopResult:
        x = data[:, self._chans]
        if self.cfg.input == "six_axis":
            fx, fy, fz, mx, my = (np.ascontiguousarray(x[:, i]) for i in range(5))
            return cop_from_six_axis(
                fx, fy, fz, mx, my, dz_m=self.cfg.dz_m, min_fz_n=self.cfg.min_fz_n
            )
        if self.cfg.input == "load_cells":
            return cop_from_load_cells(np.ascontiguousarray(x), min_fz_n=self.cfg.min_fz_n)
        if x.shape[1] > 2:
            return cop_given(x[:, 0], x[:, 1], x[:, 2], min_fz_n=self.cfg.min_fz_n)
        return cop_given(x[:, 0], x[:, 1], None, min_fz_n=self.cfg.min_fz_n)

    def on_block(self, st: StreamState, first_index: int, n: int) -> None:
        if st is not self.st:
            return
        ring = st.ring
        if self._next_due is None:
            self._next_due = ring.oldest + self._window_n
        if ring.head < self._next_due:
            return
        self.measure(ring.head - self._window_n, ring.head)
        self._next_due = ring.head + self._update_n

    def measure(self, start: int, stop: int) -> None:
        w = self.st.ring.window_by_index(start, stop)
        # a window wholly in a gap has no measures and no known end time: the gap event
        # already says what is missing
        if len(w.t_s) < 3 or not w.valid.any():
            return
        if self._offload is None:
            self._emit(self._result(w))
        else:
            self._offload(partial(self._result, w))

    def _result(self, w: Window) -> dict[str, Any]:
        cop = self.cop(w.data)
        valid = cop.valid & w.valid
        res = sway_measures(cop.ap_m, cop.ml_m, self.st.desc.rate_hz, self.cfg.params, valid)
        t_end = float(np.nanmax(w.t_s)) if np.any(w.valid) else float("nan")
        return {
            "type": "sway",
            "t_s": t_end,
            "stream_id": self.st.desc.stream_id,
            "window_s": len(w.t_s) / self.st.desc.rate_hz,
            "status": res.status,
            "n_samples": res.n_samples,
            "n_excluded": res.n_excluded,
            "measures": res.measures,
            "units": res.units,
            "params": {
                **res.params,
                "cop_input": self.cfg.input,
                "dz_m": self.cfg.dz_m,
                "min_fz_n": self.cfg.min_fz_n,
            },
            "algorithm": {
                "name": res.algorithm,
                "version": SWAY_VERSION,
                "params_hash": self._phash,
            },
        }

    def whole_record(self) -> None:
        ring = self.st.ring
        self.measure(ring.oldest, ring.head)
