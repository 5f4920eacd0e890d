"""The calibration data model: what was calibrated, when, on which device, the values with
their uncertainty, the raw statistics behind them and the quality checks that passed or failed.

A `Calibration` is written once (see `store.py`) and never changed; results reference it by
`id`. `correction()` turns it into the per-stream linear map the daemon applies,
y = M (x - offset).

Also here: the one estimator of a mean's standard error every calibration uses
(`mean_sem`): batch means, so noise that is correlated from sample to sample (filtered
amplifier noise, a slowly wandering plate) does not make the stated uncertainty too small.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import nmcore

__all__ = [
    "Calibration",
    "CalibrationKind",
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
    "Strict",
    "mean_sem",
    "new_id",
]

FloatArray = npt.NDArray[np.float64]
CalibrationKind = Literal["forceplate", "emg", "imu", "latency"]

# 20 batches: the batch-mean SE then has 19 degrees of freedom, so |error| <= 3 sigma holds
# ~99.3 % of the time (Student t), while batches stay long enough (>= 50 samples in a second
# at 1 kHz) for the correlation of filtered sensor noise to die out within one batch.
N_BATCHES = 20
_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(Strict):
    """One quality check. `message` says what was wrong and how to fix it (or what was fine)."""

    name: str
    passed: bool
    severity: Literal["fail", "warn"] = "fail"
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    message: str


class StreamCorrection(Strict):
    """Linear correction of one stream's channels: y = M (x - offset)."""

    stream_id: str
    channels: list[str] = Field(min_length=1)
    offsets: list[float] = Field(description="subtracted first, in the raw units")
    matrix: list[list[float]] | None = Field(None, description="c x c, applied after the offset")
    gains: list[float] | None = Field(None, description="diagonal, used when matrix is None")

    @model_validator(mode="after")
    def _shapes(self) -> StreamCorrection:
        c = len(self.channels)
        if len(self.offsets) != c:
            raise ValueError(f"offsets needs one value per channel ({c}), got {len(self.offsets)}")
        if self.gains is not None and len(self.gains) != c:
            raise ValueError(f"gains needs one value per channel ({c}), got {len(self.gains)}")
        if self.matrix is not None and (
            len(self.matrix) != c or any(len(row) != c for row in self.matrix)
        ):
            raise ValueError(f"matrix must be {c} x {c} (one row and column per channel)")
        return self

    def as_arrays(self) -> tuple[FloatArray, FloatArray]:
        """(offset (c,), matrix (c, c)): diag(gains), or the identity when neither is given."""
        offset = np.asarray(self.offsets, dtype=np.float64)
        if self.matrix is not None:
            return offset, np.asarray(self.matrix, dtype=np.float64)
        if self.gains is not None:
            return offset, np.diag(np.asarray(self.gains, dtype=np.float64))
        return offset, np.eye(len(self.channels))

    def apply(self, x: npt.ArrayLike) -> FloatArray:
        """Correct samples x (n, c): y = (x - offset) M^T."""
        offset, m = self.as_arrays()
        return (np.asarray(x, dtype=np.float64) - offset) @ m.T


# ---------------------------------------------------------------- force plate


class MassResidual(Strict):
    """One mass step of the gain fit: the known load and what the corrected plate read."""

    step: int
    mass_kg: float
    x_m: float
    y_m: float
    expected_n: float = Field(description="m g (six-axis: Fz; load cells: the cells' sum)")
    measured_n: float = Field(description="the corrected reading")
    residual_n: float = Field(description="measured - expected")


class CopCheck(Strict):
    """COP measured with a mass at a known location, from the corrected means."""

    mass_kg: float
    x_m: float
    y_m: float
    measured_x_m: float
    measured_y_m: float
    error_mm: float
    limit_mm: float


class ForcePlateValues(Strict):
    """Offsets and gains per channel (in the order of `Calibration.channels`): corrected =
    gain * (raw - offset), in N and N·m (load cells: N per cell)."""

    kind: Literal["forceplate"] = "forceplate"
    layout: Literal["six_axis", "load_cells"]
    offsets: list[float]
    offset_sigmas: list[float]
    gains: list[float]
    gain_sigmas: list[float]
    gain_calibrated: list[bool] = Field(
        description="False: no dead-weight step can calibrate it, the gain is kept at 1.0"
    )
    residuals: list[MassResidual]
    cop_check: CopCheck | None = None
    g_mps2: float
    dz_m: float = 0.0
    cell_positions_m: list[tuple[float, float]] | None = Field(
        None, description="load cells: (x, y) of each cell, metres, plate frame"
    )

    @model_validator(mode="after")
    def _lengths(self) -> ForcePlateValues:
        n = len(self.offsets)
        for name in ("offset_sigmas", "gains", "gain_sigmas", "gain_calibrated"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs one entry per channel ({n})")
        if self.layout == "load_cells" and (
            self.cell_positions_m is None or len(self.cell_positions_m) != n
        ):
            raise ValueError("layout 'load_cells' needs cell_positions_m, one (x, y) per cell")
        return self


# ---------------------------------------------------------------- EMG


class OnsetRestStats(Strict):
    """The rest statistics `EmgOnsetDetector.arm` computes from a pre-stimulus window, here from
    the rest recording through the same chain (same params): mean and SD of the test-domain
    value (envelope for hodges_bui/tkeo, y**2 for bonato/aglr/cusum) and the mean square of the
    band-passed signal. In `unit` (mu, sd: unit for envelopes, unit**2 for y**2; sig2: unit**2).
    `params_hash`: `detect.emg.rest_params_hash`, over the parameters these depend on (method,
    band, order, envelope low-pass), so a changed threshold or look-back keeps them usable."""

    method: str
    params_hash: str
    rate_hz: float
    mu: float
    sd: float
    sig2: float
    n_samples: int
    unit: str = "uV"

    def scaled(self, factor: float, unit: str) -> OnsetRestStats:
        """The same statistics for a signal in another unit: x_new = factor * x. The
        Hodges-Bui envelope is linear in x; TKEO's envelope and y**2 are quadratic."""
        linear = self.method == "hodges_bui"
        k_mu = abs(factor) if linear else factor * factor
        return self.model_copy(
            update={
                "mu": self.mu * k_mu,
                "sd": self.sd * k_mu,
                "sig2": self.sig2 * factor * factor,
                "unit": unit,
            }
        )


class EmgChannelValues(Strict):
    name: str
    rest_rms_uv: float = Field(description="rms after removing DC, trend and the mains lines")
    rest_rms_sigma_uv: float
    mains_amplitude_uv: list[float] = Field(description="peak amplitude per harmonic 1..n")
    mains_amplitude_sigma_uv: float
    snr_db: float | None = None
    mvc_rms_uv: float | None = None
    dead: bool
    saturated: bool
    saturated_fraction: float
    mvc_saturated_fraction: float | None = None
    onset_rest: OnsetRestStats | None = None


class EmgValues(Strict):
    kind: Literal["emg"] = "emg"
    mains_hz: float = Field(description="mains fundamental fitted (refined near 50 or 60 Hz)")
    mains_nominal_hz: Literal[50, 60]
    mains_source: Literal["given", "auto"]
    mains_method: str = "least-squares sinusoids (DC, trend, all harmonics jointly)"
    n_harmonics: int
    channels: list[EmgChannelValues] = Field(min_length=1)


# ---------------------------------------------------------------- IMU


class ImuValues(Strict):
    """Gyro bias (dps) and the rotation from the sensor frame to the target frame; apply as
    gyro_target = R (gyro - bias), acc_target = R acc."""

    kind: Literal["imu"] = "imu"
    acc_channels: list[str] = Field(min_length=3, max_length=3)
    gyro_channels: list[str] = Field(min_length=3, max_length=3)
    gyro_bias_dps: list[float] = Field(min_length=3, max_length=3)
    gyro_bias_sigma_dps: list[float] = Field(min_length=3, max_length=3)
    acc_mean_mps2: list[float] = Field(min_length=3, max_length=3)
    acc_mean_sigma_mps2: list[float] = Field(min_length=3, max_length=3)
    gravity_mps2: float = Field(description="|mean acceleration| while still")
    gravity_sigma_mps2: float
    rotation: list[list[float]] = Field(description="3 x 3, sensor -> target frame")
    rotation_method: Literal["gravity_minimal", "triad"]
    target_up: tuple[float, float, float]
    target_axis: tuple[float, float, float] | None = None
    tilt_deg: float = Field(description="angle between measured gravity and target_up")
    tilt_sigma_deg: float
    roll_deg: float
    pitch_deg: float
    heading_sigma_deg: float | None = Field(None, description="triad only: the motion axis")
    rate_hz_nominal: float
    rate_hz_measured: float
    rate_error_ppm: float
    rate_error_sigma_ppm: float

    @field_validator("rotation")
    @classmethod
    def _is_3x3(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) != 3 or any(len(row) != 3 for row in v):
            raise ValueError("rotation must be a 3 x 3 matrix")
        return v


# ---------------------------------------------------------------- latency


class LatencyValues(Strict):
    """Constant delay from a physical event to the daemon's timestamp of it (add nothing to
    results: subtract delay_ms from a timestamp to get the event time)."""

    kind: Literal["latency"] = "latency"
    delay_ms: float
    sigma_ms: float = Field(description="standard error of the mean delay")
    sd_ms: float = Field(description="spread of single events")
    n_events: int
    n_missing: int
    method: Literal["loopback", "tap"]
    path: str = Field("", description="what the event went through, e.g. 'DO0 -> trigger in'")
    sample_period_ms: float


Values = Annotated[
    ForcePlateValues | EmgValues | ImuValues | LatencyValues, Field(discriminator="kind")
]


class Calibration(Strict):
    schema_version: Literal[1] = 1
    id: str = Field(pattern=_ID_PATTERN)
    kind: CalibrationKind
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    stream_id: str
    channels: list[str]
    created_utc: datetime
    nmcore_version: str = nmcore.__version__
    station_id: str = "lab"
    operator: str | None = None
    values: Values
    stats: dict[str, Any] = Field(default_factory=dict)
    checks: list[Check] = Field(default_factory=list)

    @field_validator("created_utc")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError(
                "created_utc must be timezone-aware (e.g. datetime.now(UTC)); got a naive time"
            )
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if self.values.kind != self.kind:
            raise ValueError(
                f"kind is {self.kind!r} but values are {self.values.kind!r}: they must agree"
            )
        v = self.values
        if isinstance(v, ForcePlateValues) and len(v.offsets) != len(self.channels):
            raise ValueError(
                f"forceplate values have {len(v.offsets)} channels but channels lists "
                f"{len(self.channels)}: give one name per calibrated channel"
            )
        if isinstance(v, ImuValues):
            missing = [c for c in (*v.acc_channels, *v.gyro_channels) if c not in self.channels]
            if missing:
                raise ValueError(f"imu channels {missing} are not in channels {self.channels}")
        return self

    @property
    def passed(self) -> bool:
        """No failed check of severity 'fail'."""
        return not self.failures()

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "fail"]

    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "warn"]

    def age_s(self, now_utc: datetime) -> float:
        if now_utc.tzinfo is None:
            raise ValueError("now_utc must be timezone-aware (datetime.now(UTC))")
        return (now_utc - self.created_utc).total_seconds()

    def correction(self) -> StreamCorrection | None:
        """The linear map for the stream; None for kinds that do not correct samples."""
        v = self.values
        if isinstance(v, ForcePlateValues):
            return StreamCorrection(
                stream_id=self.stream_id,
                channels=list(self.channels),
                offsets=list(v.offsets),
                gains=list(v.gains),
            )
        if isinstance(v, ImuValues):
            names = [*v.acc_channels, *v.gyro_channels]
            r = np.asarray(v.rotation, dtype=np.float64)
            block = np.zeros((6, 6))
            for i in range(3):
                for j in range(3):
                    block[i, j] = r[i, j]
                    block[3 + i, 3 + j] = r[i, j]
            return StreamCorrection(
                stream_id=self.stream_id,
                channels=names,
                offsets=[0.0, 0.0, 0.0, *v.gyro_bias_dps],
                matrix=block.tolist(),
            )
        return None

    @classmethod
    def create(
        cls,
        values: ForcePlateValues | EmgValues | ImuValues | LatencyValues,
        *,
        device_id: str,
        stream_id: str,
        channels: list[str],
        now_utc: datetime,
        stats: dict[str, Any] | None = None,
        checks: list[Check] | None = None,
        station_id: str = "lab",
        operator: str | None = None,
        taken: Collection[str] = (),
    ) -> Calibration:
        """A calibration with a fresh id (`new_id`, avoiding the ids in `taken`)."""
        return cls(
            id=new_id(device_id, values.kind, now_utc, taken),
            kind=values.kind,
            device_id=device_id,
            stream_id=stream_id,
            channels=channels,
            created_utc=now_utc,
            station_id=station_id,
            operator=operator,
            values=values,
            stats=jsonable(stats or {}),
            checks=checks or [],
        )


def new_id(device_id: str, kind: str, now_utc: datetime, taken: Collection[str] = ()) -> str:
    """'<device>-<kind>-<YYYYmmddTHHMMSSZ>', with '-2', '-3', ... if that id is in `taken`."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware (datetime.now(UTC))")
    base = f"{device_id}-{kind}-{now_utc.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def jsonable(obj: Any) -> Any:
    """Numpy scalars and arrays to plain Python (so stats serialise); NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, BaseModel):
        return jsonable(obj.model_dump(mode="json"))
    return obj


def mean_sem(x: npt.ArrayLike, n_batches: int = N_BATCHES) -> tuple[FloatArray, FloatArray]:
    """Column means of x (n,) or (n, c) and their standard errors by batch means (arrays of
    shape (c,), or (1,) for a 1-D x).

    The record is cut into `n_batches` equal consecutive batches; the SE is the SD of the batch
    means over sqrt(n_batches). Unlike sd/sqrt(n) this stays honest when the noise is
    correlated over less than a batch (filtered noise, slow sway). Records shorter than
    2 * n_batches samples fall back to sd/sqrt(n).
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples for a standard error (got {n})")
    mean = a.mean(axis=0)
    if n < 2 * n_batches:
        sem = a.std(axis=0, ddof=1) / math.sqrt(n)
    else:
        length = n // n_batches
        used = a[: length * n_batches].reshape(n_batches, length, a.shape[1])
        bm = used.mean(axis=1)
        sem = bm.std(axis=0, ddof=1) / math.sqrt(n_batches)
    return mean, sem


def mean_cov(x: npt.ArrayLike, n_batches: int = N_BATCHES) -> tuple[FloatArray, FloatArray]:
    """Column means of x (n, c) and the covariance matrix of those means by batch means."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x must be (n_samples, n_channels), got shape {a.shape}")
    n, c = a.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance (got {n})")
    mean = a.mean(axis=0)
    if n < 2 * n_batches:
        cov = np.cov(a.T, ddof=1).reshape(c, c) / n
    else:
        length = n // n_batches
        bm = a[: length * n_batches].reshape(n_batches, length, c).mean(axis=1)
        cov = np.cov(bm.T, ddof=1).reshape(c, c) / n_batches
    return mean, cov
