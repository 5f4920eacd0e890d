"""Which calibrations the daemon applies, and applying them to the pipeline and trials.

`[calibration] apply = "latest"` (default): per enabled device, the ids pinned in
`devices[].calibration`, plus the newest passing file of every other kind in the store;
"pinned": only the pinned ids; "none": raw device units. A pinned id that cannot be read, or a
calibration that does not fit its stream (other channels), is a configuration error: results
must never silently run on the wrong calibration.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmcore.calibration.model import CalibrationKind
from nmcore.errors import ConfigError, NmcoreError

if TYPE_CHECKING:
    from nmcore.calibration.model import Calibration
    from nmcore.config import StationConfig
    from nmcore.runtime.pipeline import Pipeline
    from nmcore.trials import TrialEngine

__all__ = ["apply_calibrations", "calibration_dir", "select_calibrations"]

log = logging.getLogger("nmcore.calibration")

KINDS: tuple[CalibrationKind, ...] = ("forceplate", "emg", "imu", "latency")


def calibration_dir(station: StationConfig, state_dir: Path) -> Path:
    return station.calibration.directory or state_dir / "calibration"


def _pinned(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def select_calibrations(
    station: StationConfig, state_dir: Path, now_utc: datetime | None = None
) -> list[Calibration]:
    """The calibrations to apply, one per (device, kind, stream)."""
    from nmcore.calibration.store import CalibrationStore

    cfg = station.calibration
    if cfg.apply == "none":
        return []
    now_utc = now_utc or datetime.now(UTC)
    store = CalibrationStore(calibration_dir(station, state_dir))
    chosen: list[Calibration] = []
    problems: list[str] = []
    # one pass over the store (a file per calibration, kept for years): newest per device
    # and kind, instead of a directory scan per device and kind at every start
    newest: dict[tuple[str, str], Calibration] = {}
    if cfg.apply == "latest":
        for cal in store.list():  # oldest first
            newest[(cal.device_id, cal.kind)] = cal
    for i, dev in enumerate(station.devices):
        if not dev.enabled:
            continue
        have: set[str] = set()
        for cal_id in _pinned(dev.calibration):
            try:
                cal = store.load(cal_id)
            except (NmcoreError, OSError, ValueError) as exc:
                problems.append(f"devices[{i}].calibration: {cal_id!r}: {exc}")
                continue
            if cal.device_id != dev.id:
                problems.append(
                    f"devices[{i}].calibration: {cal_id!r} belongs to device {cal.device_id!r}, "
                    f"not {dev.id!r}"
                )
                continue
            chosen.append(cal)
            have.add(cal.kind)
        if cfg.apply == "latest":
            for kind in KINDS:
                if kind in have:
                    continue
                found = newest.get((dev.id, kind))
                if found is not None:
                    chosen.append(found)
    if problems:
        raise ConfigError("calibration not usable", problems)
    for cal in chosen:
        age_h = cal.age_s(now_utc) / 3600.0
        if age_h > cfg.max_age_h:
            log.warning(
                "%s: calibration %s is %.1f h old (calibration.max_age_h = %g): recalibrate",
                cal.device_id,
                cal.id,
                age_h,
                cfg.max_age_h,
            )
    return chosen


def apply_calibrations(
    calibrations: list[Calibration], pipeline: Pipeline, trials: TrialEngine
) -> list[dict[str, Any]]:
    """Wire each calibration into the stage that uses it; returns a summary per calibration."""
    applied: list[dict[str, Any]] = []
    for cal in calibrations:
        st = pipeline.streams.get(cal.stream_id)
        if st is None:
            raise ConfigError(
                "calibration not usable",
                [
                    f"calibration {cal.id}: stream {cal.stream_id!r} is not announced by device "
                    f"{cal.device_id!r} (streams: {', '.join(sorted(pipeline.streams))})"
                ],
            )
        names = list(st.desc.channel_names)
        corr = cal.correction()
        if corr is not None:
            if not set(corr.channels) <= set(names):
                raise ConfigError(
                    "calibration not usable",
                    [
                        f"calibration {cal.id} was made for channels {corr.channels} but "
                        f"{cal.stream_id} has {names}: recalibrate (`nmcore calibrate "
                        f"{cal.kind} --device {cal.device_id}`) or unpin it"
                    ],
                )
            sub_off, sub_m = corr.as_arrays()
            # a correction of some channels (an IMU's acc and gyro beside a magnetometer):
            # identity on the others
            idx = np.array([names.index(c) for c in corr.channels])
            offsets = np.zeros(len(names))
            matrix = np.eye(len(names))
            offsets[idx] = sub_off
            matrix[np.ix_(idx, idx)] = sub_m
            pipeline.set_correction(cal.stream_id, offsets, matrix)
        if cal.kind == "latency":
            delay_ms = float(cal.values.delay_ms)  # type: ignore[union-attr]
            trials.set_input_latency(cal.stream_id, delay_ms * 1e-3, cal.id)
        elif cal.kind == "emg":
            trials.set_emg_rest(cal.stream_id, cal)
        else:
            trials.calibrated(cal.stream_id, cal.id)
        log.info("%s: applying calibration %s (%s)", cal.stream_id, cal.id, cal.kind)
        applied.append(
            {"id": cal.id, "kind": cal.kind, "stream_id": cal.stream_id, "device_id": cal.device_id}
        )
    return applied
