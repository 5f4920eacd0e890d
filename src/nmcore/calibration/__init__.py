"""Calibration: pure computations (numbers in, models out) and the calibration file store.

`nmcore calibrate <what>` records data, calls one of `forceplate`, `emg`, `imu`, `latency`,
wraps the values, the statistics behind them and the quality checks in a `Calibration`, and
saves it with `CalibrationStore` (which refuses a calibration whose checks failed). The daemon
loads it and applies `Calibration.correction()`; results reference it by id.
"""

from __future__ import annotations

from nmcore.calibration.model import (
    Calibration,
    CalibrationKind,
    Check,
    CopCheck,
    EmgChannelValues,
    EmgValues,
    ForcePlateValues,
    ImuValues,
    LatencyValues,
    MassResidual,
    OnsetRestStats,
    StreamCorrection,
    mean_sem,
    new_id,
)
from nmcore.calibration.store import CalibrationStore

__all__ = [
    "Calibration",
    "CalibrationKind",
    "CalibrationStore",
    "Check",
    "CopCheck",
    "EmgChannelValues",
    "EmgValues",
    "ForcePlateValues",
    "ImuValues",
    "LatencyValues",
    "MassResidual",
    "OnsetRestStats",
    "StreamCorrection",
    "mean_sem",
    "new_id",
]
