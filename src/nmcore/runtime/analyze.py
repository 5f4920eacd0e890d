"""`nmcore analyze`: the live pipeline run over a CSV file as fast as the machine allows.

The file's columns are described by the station's `[[streams]]`; its rows become
`SampleBlock`s fed to the same `Pipeline`, `TrialEngine` and `SwayStage` the daemon wires,
so every onset, trial result and sway window is the one the daemon would have published
(same payload models, through `runtime.messages.to_message`). The `t` column is passed as
the samples' host times: the clock model is bypassed and every time in the output is in the
file's own time base, exactly.

After the last row: the open trial is closed, the whole record's sway is measured
(`cop_sway.whole_record`) and the whole record's landing is measured (`detectors.landing`,
which only runs here).

CSV layout: a header row; the first column `t` (seconds, increasing); then one column per
channel, named as the channel in `[[streams]]` (or `<stream id>.<channel>` where two streams
share a channel name). Extra columns are ignored with a warning. Missing rows (a step in
`t` of more than one period) become counted gaps, as a device's dropped samples would.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit
from nmcore.config.models import LandingConfig, StationConfig
from nmcore.detect.emg import params_hash
from nmcore.detect.landing import LandingResult, landing_measures
from nmcore.errors import ConfigError, ProtocolError
from nmcore.model import ChannelSpec, Event, SampleBlock, StreamDescriptor
from nmcore.runtime.messages import to_message
from nmcore.runtime.pipeline import Pipeline, StreamState
from nmcore.trials import SwayStage, TrialEngine

__all__ = [
    "LANDING_VERSION",
    "MAX_BLOCK_S",
    "AnalysisInput",
    "AnalyzeSummary",
    "analyze",
    "analyze_arrays",
    "block_rows_for",
    "descriptors_from_config",
    "landing_output",
    "load_csv",
    "session_from_path",
]

log = logging.getLogger("nmcore.runtime.analyze")

FloatArray = npt.NDArray[np.float64]
Out = Callable[[dict[str, Any]], None]

# Rows per SampleBlock (see `block_rows_for`): long blocks cost fewer Python calls per
# sample; these bounds keep every result the same as with a device's short packets.
MAX_BLOCK_S = 0.5
MAX_BLOCK_ROWS = 4096
MOTION_CHECK_S = 0.05  # TrialEngine tests an IMU/force-plate source for an onset every 50 ms
RATE_TOLERANCE = 0.01  # |measured / configured - 1| above this: the file is not that stream
# The ring keeps the whole record (look-back for finish() and the whole-record measures);
# the margin absorbs a file rate up to RATE_TOLERANCE above the configured one.
HISTORY_MARGIN_S = 1.0
LANDING_VERSION = "1"
# LandingResult fields that are times of the record (seconds from its first sample there):
# shifted by the first sample's `t` so they are in the file's time base like every other time.
_LANDING_TIMES = ("step_on_s", "takeoff_s", "landing_s", "step_off_s")
_LANDING_MEASURES = (
    "step_on_s",
    "body_weight_n",
    "takeoff_s",
    "landing_s",
    "flight_time_s",
    "jump_height_m",
    "peak_landing_force_bw",
    "step_off_s",
    "post_landing_available_s",
    "tts_seqavg_s",
    "tts_band_s",
    "vsi",
    "mlsi",
    "apsi",
    "dpsi",
)
_SESSION_MAX = 58  # trial ids are "<session>-NNNN" and must fit a 64-character identifier


@dataclass(slots=True)
class AnalysisInput:
    """A parsed file: times, one (n, n_channels) C-contiguous array per stream, the measured
    sampling rate (from the `t` column) and each row's sample index (gaps skip indices)."""

    t_s: FloatArray
    streams: dict[str, FloatArray]
    rate_hz: float
    index: npt.NDArray[np.int64]
    ignored_columns: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AnalyzeSummary:
    """What one run did. `process_s` excludes reading the file (`parse_s`)."""

    session: str
    rows: int = 0
    duration_s: float = 0.0
    rate_hz: float = 0.0
    channel_samples: int = 0
    missing_samples: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    parse_s: float = 0.0
    process_s: float = 0.0

    @property
    def trials(self) -> int:
        return self.messages["trial_result"]

    @property
    def onsets(self) -> int:
        return self.messages["onset"]

    @property
    def samples_per_s(self) -> float:
        """Channel-samples processed per second of processing (parsing excluded)."""
        return self.channel_samples / self.process_s if self.process_s > 0 else math.inf


def session_from_path(path: Path) -> str:
    """The trial-id prefix for a file: its name without extension, reduced to letters,
    digits, '_' and '-' (so trial ids stay valid identifiers)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_-")
    return name[:_SESSION_MAX] or "analyze"


def descriptors_from_config(station: StationConfig) -> list[StreamDescriptor]:
    """One descriptor per `[[streams]]`; the device id is the part of the id before the dot."""
    if not station.streams:
        raise ConfigError(
            "analyze needs [[streams]] describing the file's columns",
            ["streams: add one [[streams]] table per stream (id, kind, rate_hz, channels)"],
        )
    out: list[StreamDescriptor] = []
    seen: set[str] = set()
    for i, s in enumerate(station.streams):
        if s.id in seen:
            raise ConfigError(
                "invalid [[streams]]", [f"streams[{i}].id: {s.id!r} is used twice; rename one"]
            )
        seen.add(s.id)
        names = [c.name for c in s.channels]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(
                "invalid [[streams]]",
                [f"streams[{i}].channels: {sorted(dup)[0]!r} is listed twice; rename one"],
            )
        out.append(
            StreamDescriptor(
                stream_id=s.id,
                device_id=s.id.split(".", 1)[0],
                kind=s.kind,
                rate_hz=s.rate_hz,
                channels=tuple(ChannelSpec(c.name, c.unit) for c in s.channels),
            )
        )
    return out


# -- CSV kernel ------------------------------------------------------------------------------
# np.loadtxt reads ~2 M values/s on these machines (a 60 s x 16 ch 2 kHz file: ~1 s); this
# kernel ~3-4x that. It is exact: a number whose digits form an integer m <= 2**53 and whose
# decimal exponent e is within +-22 is m * 10**e or m / 10**-e with both operands exact in
# float64, one correctly rounded operation (Clinger's fast path), so it equals what
# strtod/loadtxt give bit for bit. Anything else ("hard": about 16+ significant digits, huge
# exponents) is left to Python's float(), or to np.loadtxt when there are many.
_ST_OK = 0
_ST_FIELDS = 1  # a row with the wrong number of fields
_ST_NUMBER = 2  # a cell that is not a number
_ST_HARD_FULL = 3  # more hard cells than the caller made room for
_MAX_SIG = 18  # digits kept in the int64 mantissa
_TWO53 = 2**53
_POW10_F = np.array([10.0**i for i in range(23)])
_POW10_I = np.array([10**i for i in range(19)], dtype=np.int64)
_NUM_OK = 0
_NUM_HARD = 1
_NUM_BAD = 2


@jit
def _lower(c: int) -> int:
    return c | 32


@jit
def _parse_number(buf: np.ndarray, s: int, e: int) -> tuple[int, float]:
    """(status, value) of the ASCII number buf[s:e] (already stripped)."""
    if s >= e:
        return _NUM_BAD, np.nan
    neg = False
    if buf[s] == 45:  # '-'
        neg = True
        s += 1
    elif buf[s] == 43:  # '+'
        s += 1
    if s >= e:
        return _NUM_BAD, np.nan
    c0 = _lower(buf[s])
    if c0 == 110 or c0 == 105:  # 'n', 'i'
        n = e - s
        if n == 3 and c0 == 110 and _lower(buf[s + 1]) == 97 and _lower(buf[s + 2]) == 110:
            return _NUM_OK, np.nan
        if (
            c0 == 105
            and (n == 3 or n == 8)
            and _lower(buf[s + 1]) == 110
            and _lower(buf[s + 2]) == 102
            and (n == 3 or _lower(buf[s + 3]) == 105)
        ):
            return _NUM_OK, -np.inf if neg else np.inf
        return _NUM_BAD, np.nan
    m = 0
    sig = 0
    zeros = 0  # zeros after the last non-zero digit, not yet folded into m
    n_frac = 0
    n_digits = 0
    too_long = False
    in_frac = False
    while s < e:
        c = buf[s]
        if 48 <= c <= 57:
            d = c - 48
            n_digits += 1
            if in_frac:
                n_frac += 1
            if d == 0:
                if m != 0:
                    zeros += 1
            elif sig + zeros + 1 > _MAX_SIG:
                too_long = True
            else:
                m = m * _POW10_I[zeros + 1] + d
                sig += zeros + 1
                zeros = 0
        elif c == 46 and not in_frac:  # '.'
            in_frac = True
        else:
            break
        s += 1
    if n_digits == 0:
        return _NUM_BAD, np.nan
    exp = 0
    if s < e and _lower(buf[s]) == 101:  # 'e'
        s += 1
        eneg = False
        if s < e and (buf[s] == 45 or buf[s] == 43):
            eneg = buf[s] == 45
            s += 1
        if s >= e:
            return _NUM_BAD, np.nan
        while s < e and 48 <= buf[s] <= 57:
            if exp < 100000:
                exp = exp * 10 + (buf[s] - 48)
            s += 1
        if eneg:
            exp = -exp
    if s != e:
        return _NUM_BAD, np.nan
    if too_long:
        return _NUM_HARD, np.nan
    if m == 0:
        return _NUM_OK, -0.0 if neg else 0.0
    exp += zeros - n_frac
    if m > _TWO53 or exp > 22 or exp < -22:
        return _NUM_HARD, np.nan
    v = m * _POW10_F[exp] if exp >= 0 else m / _POW10_F[-exp]
    return _NUM_OK, -v if neg else v


@jit
def _parse_csv(
    buf: np.ndarray,
    pos: int,
    colmap: np.ndarray,
    out: np.ndarray,
    hard: np.ndarray,
    info: np.ndarray,
) -> int:
    """Parse comma-separated rows of buf[pos:] into out[row, colmap[field]] (fields whose
    colmap is -1 are skipped unread); every row must have len(colmap) fields. Blank lines and
    lines starting with '#' are skipped. Hard cells are written NaN and listed in `hard` as
    (row, out column, start, end). Returns the rows parsed; info <- [status, line number,
    field, cell start, cell end, number of hard cells]; the header is line 1."""
    n = buf.shape[0]
    n_fields = colmap.shape[0]
    row = 0
    line = 2
    n_hard = 0
    info[0] = _ST_OK
    while pos < n:
        # blank or comment line?
        q = pos
        while q < n and (buf[q] == 32 or buf[q] == 9 or buf[q] == 13):
            q += 1
        if q >= n:
            break
        if buf[q] == 10 or buf[q] == 35:  # '\n', '#'
            while q < n and buf[q] != 10:
                q += 1
            pos = q + 1
            line += 1
            continue
        field = 0
        while True:
            s = pos
            while pos < n and buf[pos] != 44 and buf[pos] != 10:
                pos += 1
            e = pos
            while s < e and (buf[s] == 32 or buf[s] == 9):
                s += 1
            while e > s and (buf[e - 1] == 32 or buf[e - 1] == 9 or buf[e - 1] == 13):
                e -= 1
            if field < n_fields and colmap[field] >= 0:
                st, v = _parse_number(buf, s, e)
                if st == _NUM_BAD:
                    info[0] = _ST_NUMBER
                    info[1] = line
                    info[2] = field
                    info[3] = s
                    info[4] = e
                    info[5] = n_hard
                    return row
                if st == _NUM_HARD:
                    if n_hard >= hard.shape[0]:
                        info[0] = _ST_HARD_FULL
                        info[1] = line
                        info[5] = n_hard
                        return row
                    hard[n_hard, 0] = row
                    hard[n_hard, 1] = colmap[field]
                    hard[n_hard, 2] = s
                    hard[n_hard, 3] = e
                    n_hard += 1
                out[row, colmap[field]] = v
            field += 1
            if pos >= n or buf[pos] == 10:
                break
            pos += 1
        if field != n_fields:
            info[0] = _ST_FIELDS
            info[1] = line
            info[2] = field
            info[5] = n_hard
            return row
        row += 1
        pos += 1
        line += 1
    info[5] = n_hard
    return row


# -- reading ---------------------------------------------------------------------------------
def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except FileNotFoundError as exc:
        raise ProtocolError(f"{path}: no such file; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read as a UTF-8 text file: {exc}") from exc
    if not first.strip():
        raise ProtocolError(
            f"{path}: empty file (or empty first line); expected a header row 't,<channels...>'"
        )
    return [c.strip() for c in next(csv.reader([first]))]


def _locate_bad_cell(path: Path, header: list[str], usecols: list[int]) -> str:
    """The first row/column that loadtxt could not read, described for a person."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for line_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                return (
                    f"line {line_no} has {len(row)} fields, the header has {len(header)}; "
                    "every row needs one value per column"
                )
            for c in usecols:
                cell = row[c].strip()
                try:
                    float(cell)
                except ValueError:
                    return (
                        f"line {line_no}, column {header[c]!r}: {cell!r} is not a number "
                        "(write NaN for a missing value)"
                    )
    return "a row could not be read"


def _resolve_columns(
    station: StationConfig, header: list[str], path: Path
) -> tuple[dict[str, list[int]], list[str]]:
    """Column index of every configured channel, per stream; and the ignored columns."""
    if not header or header[0] != "t":
        found = header[0] if header else ""
        hint = (
            "; columns must be separated by commas"
            if len(header) == 1 and any(c in found for c in ";\t ")
            else ""
        )
        raise ProtocolError(
            f"{path}: the first column must be 't' (sample time in seconds); found {found!r}{hint}"
        )
    where: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in where:
            raise ProtocolError(f"{path}: column {name!r} appears twice in the header")
        where[name] = i
    cols: dict[str, list[int]] = {}
    missing: list[str] = []
    for s in station.streams:
        idx: list[int] = []
        for ch in s.channels:
            qualified = f"{s.id}.{ch.name}"
            if qualified in where:
                idx.append(where[qualified])
            elif ch.name in where:
                idx.append(where[ch.name])
            else:
                missing.append(ch.name)
        cols[s.id] = idx
    if missing:
        raise ProtocolError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} that [[streams]] "
            f"declares; columns found: {', '.join(header)}"
        )
    used = {0} | {i for idx in cols.values() for i in idx}
    ignored = [name for i, name in enumerate(header) if i not in used]
    return cols, ignored


def _measure_period(t: FloatArray, path: Path) -> tuple[float, npt.NDArray[np.int64]]:
    """The sampling period and each row's sample index (a step of several periods in `t`
    is a run of missing rows). Two passes: the median step, then the end-to-end slope,
    so a `t` written with few decimals does not drift by a sample over a long record."""
    if not np.all(np.isfinite(t)):
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ProtocolError(f"{path}: line {bad + 2}, column 't' is not a finite number")
    dt = np.diff(t)
    if np.any(dt <= 0):
        bad = int(np.flatnonzero(dt <= 0)[0])
        raise ProtocolError(
            f"{path}: column 't' must increase; line {bad + 3} ({t[bad + 1]!r}) is not after "
            f"line {bad + 2} ({t[bad]!r})"
        )
    period = float(np.median(dt))
    idx = np.rint((t - t[0]) / period).astype(np.int64)
    if idx[-1] > 0:
        period = float(t[-1] - t[0]) / float(idx[-1])
        idx = np.rint((t - t[0]) / period).astype(np.int64)
    steps = np.diff(idx)
    if np.any(steps < 1):
        bad = int(np.flatnonzero(steps < 1)[0])
        raise ProtocolError(
            f"{path}: column 't' is irregular: lines {bad + 2} and {bad + 3} fall on the same "
            f"sample of a {1.0 / period:.6g} Hz grid"
        )
    return period, idx


def _read_table(path: Path, header: list[str], usecols: list[int]) -> FloatArray:
    """The data rows' `usecols` columns as (n_rows, len(usecols)) float64, read by the CSV
    kernel; with many hard cells (numbers of 19+ significant digits, as '%.18e' writes), by
    np.loadtxt, which gives the same values more slowly."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read: {exc}") from exc
    nl = np.flatnonzero(buf == 10)
    start = int(nl[0]) + 1 if nl.size else buf.shape[0]
    colmap = np.full(len(header), -1, dtype=np.int64)
    for j, c in enumerate(usecols):
        colmap[c] = j
    out = np.empty((nl.size + 1, len(usecols)))
    # room for a quarter of the cells (as much memory as `out`): beyond that np.loadtxt is
    # about as fast as fixing each hard cell up with float()
    hard = np.empty((max(1024, out.size // 4), 4), dtype=np.int64)
    info = np.zeros(6, dtype=np.int64)
    n_rows = _parse_csv(buf, start, colmap, out, hard, info)
    status, line, fld, cell_s, cell_e, n_hard = (int(v) for v in info)
    if status == _ST_NUMBER:
        cell = bytes(buf[cell_s:cell_e]).decode("utf-8", "replace")
        raise ProtocolError(
            f"{path}: line {line}, column {header[fld]!r}: {cell!r} is not a number "
            "(write NaN for a missing value)"
        )
    if status == _ST_FIELDS:
        raise ProtocolError(
            f"{path}: line {line} has {fld} field(s), the header has {len(header)}; "
            "every row needs one value per column"
        )
    if status == _ST_HARD_FULL:
        log.debug("%s: long numbers; reading with np.loadtxt", path)
        try:
            table = np.loadtxt(
                path, delimiter=",", skiprows=1, usecols=usecols, dtype=np.float64, ndmin=2
            )
        except ValueError as exc:
            raise ProtocolError(f"{path}: {_locate_bad_cell(path, header, usecols)}") from exc
        return np.asarray(table, dtype=np.float64)
    if n_hard:
        raw = buf.tobytes()
        for r, c, s, e in hard[:n_hard].tolist():
            out[r, c] = float(raw[s:e])
    return out[:n_rows]


def load_csv(station: StationConfig, path: Path) -> AnalysisInput:
    """Read and check a CSV file against the station's `[[streams]]` (ProtocolError, exit 65,
    naming the problem when the file does not fit)."""
    descriptors_from_config(station)  # a config without streams is a config error first
    header = _header(path)
    cols, ignored = _resolve_columns(station, header, path)
    if ignored:
        log.warning("%s: ignoring column(s) no stream declares: %s", path, ", ".join(ignored))
    usecols = sorted({0} | {i for idx in cols.values() for i in idx})
    table = _read_table(path, header, usecols)
    if table.shape[0] < 2:
        raise ProtocolError(
            f"{path}: {table.shape[0]} data row(s); at least 2 are needed to check the rate"
        )
    pos = {c: j for j, c in enumerate(usecols)}
    t = np.ascontiguousarray(table[:, 0])
    period, index = _measure_period(t, path)
    rate_hz = 1.0 / period
    for s in station.streams:
        if abs(rate_hz / s.rate_hz - 1.0) > RATE_TOLERANCE:
            raise ProtocolError(
                f"{path}: column 't' is sampled at {rate_hz:.6g} Hz but stream {s.id!r} has "
                f"rate_hz = {s.rate_hz:g}; fix rate_hz in the config or check the file"
            )
    streams = {
        sid: np.ascontiguousarray(table[:, [pos[c] for c in idx]]) for sid, idx in cols.items()
    }
    return AnalysisInput(
        t_s=t, streams=streams, rate_hz=rate_hz, index=index, ignored_columns=ignored
    )


# -- running ---------------------------------------------------------------------------------
def landing_output(
    cfg: LandingConfig, st: StreamState, *, phash: str
) -> tuple[dict[str, Any], LandingResult]:
    """Landing measures of a stream's whole record (what its ring holds), as the runtime
    output dict `to_message` turns into a `landing` message. With Fx and Fy channels in the
    same stream the horizontal stability indices are computed too."""
    names = list(st.desc.channel_names)
    if cfg.channel not in names:
        raise ConfigError(
            "invalid detectors.landing",
            [
                f"detectors.landing.channel: stream {cfg.stream!r} has no channel "
                f"{cfg.channel!r} (channels: {', '.join(names)})"
            ],
        )
    ring = st.ring
    w = ring.window_by_index(ring.oldest, ring.head)
    fz = np.ascontiguousarray(w.data[:, names.index(cfg.channel)])
    horizontal = cfg.channel not in ("Fx", "Fy") and "Fx" in names and "Fy" in names
    fx = np.ascontiguousarray(w.data[:, names.index("Fx")]) if horizontal else None
    fy = np.ascontiguousarray(w.data[:, names.index("Fy")]) if horizontal else None
    res = landing_measures(fz, st.desc.rate_hz, cfg.params, fx, fy)
    rate = st.desc.rate_hz

    def file_time(rel_s: float) -> float:
        """The `t` of the sample `rel_s` after the record's first one (exact, not summed)."""
        i = round(rel_s * rate)
        if 0 <= i < w.t_s.shape[0] and math.isfinite(w.t_s[i]):
            return float(w.t_s[i])
        return float(w.t_s[0]) + rel_s

    measures: dict[str, float | None] = {}
    for name in _LANDING_MEASURES:
        value = getattr(res, name)
        if value is not None and name in _LANDING_TIMES:
            value = file_time(value)
        measures[name] = None if value is None else float(value)
    end_s = float(np.nanmax(w.t_s))
    landing_s = measures["landing_s"]
    obj: dict[str, Any] = {
        "type": "landing",
        "t_s": landing_s if landing_s is not None else end_s,
        "stream_id": st.desc.stream_id,
        "status": res.status,
        "measures": measures,
        "params": {
            **res.params,
            "rate_hz": res.rate_hz,
            "channel": cfg.channel,
            "horizontal_forces": horizontal,
        },
        "algorithm": {"name": res.algorithm, "version": LANDING_VERSION, "params_hash": phash},
        "notes": list(res.notes),
    }
    return obj, res


def block_rows_for(station: StationConfig, rate_hz: float) -> int:
    """Rows per block such that block size does not change any result:

    - a trial is never ready to close in the block whose trigger opened it (the EMG detector
      must first test the samples after the stimulus): at most half the time a trial needs
      (response window end + look-back + refine);
    - two stimuli never share a block: at most half the refractory period;
    - an IMU/force-plate perturbation source is tested every 50 ms, as live.
    """
    block_s = MAX_BLOCK_S
    d = station.detectors
    if d.perturbation is not None:
        if d.perturbation.refractory_s > 0:
            block_s = min(block_s, 0.5 * d.perturbation.refractory_s)
        if d.perturbation.source != "trigger":
            block_s = min(block_s, MOTION_CHECK_S)
        if d.emg_onset is not None:
            p = d.emg_onset.params
            need_ms = station.trial.response_window_ms[1] + p.lookback_ms + p.refine_ms
            block_s = min(block_s, 0.5 * need_ms * 1e-3)
    return max(1, min(MAX_BLOCK_ROWS, math.floor(block_s * rate_hz)))


def _block_bounds(
    idx: npt.NDArray[np.int64], block_rows: int, extra_cuts: npt.NDArray[np.int64]
) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of at most block_rows rows, also cut where rows are missing (a
    block's samples are consecutive, as a device's packet is) and before the rows whose
    sample index is in `extra_cuts` (sliding-window update points)."""
    n = idx.shape[0]
    cuts = set(range(0, n, block_rows))
    cuts.update((np.flatnonzero(np.diff(idx) != 1) + 1).tolist())
    cuts.update(np.searchsorted(idx, extra_cuts).tolist())
    edges = sorted(c for c in cuts if 0 <= c < n)
    edges.append(n)
    return list(itertools.pairwise(edges))


def _sway_cuts(station: StationConfig, n_samples: int) -> npt.NDArray[np.int64]:
    """Sample indices at which SwayStage's sliding windows end (it measures when the ring's
    head reaches them): cutting blocks there puts every window where short packets would."""
    cfg = station.detectors.cop_sway
    stream = next((s for s in station.streams if cfg and s.id == cfg.stream), None)
    if cfg is None or stream is None:
        return np.empty(0, dtype=np.int64)
    window_n = round(cfg.window_s * stream.rate_hz)
    update_n = max(1, round(cfg.update_every_s * stream.rate_hz))
    return np.arange(window_n, n_samples, update_n, dtype=np.int64)


def _perturbation_stream(station: StationConfig) -> str | None:
    p = station.detectors.perturbation
    if p is None:
        return None
    return {"trigger": p.trigger_stream, "imu": p.imu_stream, "forceplate": p.force_stream}[
        p.source
    ]


class OfflineRun:
    """The daemon's stages wired for offline input (a CSV file or a recording): one Pipeline,
    TrialEngine and SwayStage, each output stamped as its published payload (`seq` and
    `station` as the publisher stamps them; no `utc`/`sent_s`: nothing is sent)."""

    def __init__(
        self,
        station: StationConfig,
        descriptors: list[StreamDescriptor],
        *,
        history_s: float,
        session: str,
        summary: AnalyzeSummary,
        out: Out,
        what: str = "invalid detectors",
    ) -> None:
        self.station = station
        self._session = session
        self._summary = summary
        self._out = out
        self._seq = 0
        self.pipeline = Pipeline(descriptors, history_s=history_s, emit=self.emit)
        try:
            self.trials = TrialEngine(station, self.pipeline.streams, self.deliver)
            sway_cfg = station.detectors.cop_sway
            self.sway = (
                SwayStage(sway_cfg, self.pipeline.streams, self.deliver)
                if sway_cfg is not None
                else None
            )
        except ValueError as exc:
            raise ConfigError(what, [str(exc)]) from exc
        self.pipeline.add_listener(self.trials.on_block)
        if self.sway is not None:
            self.pipeline.add_listener(self.sway.on_block)
        self._check_landing()

    def deliver(self, obj: dict[str, Any]) -> None:
        msg = to_message(obj, self._session)
        if msg is None:
            return
        self._seq += 1
        payload = msg.model_dump(mode="json")
        payload["seq"] = self._seq
        payload["station"] = self.station.station.id
        self._summary.messages[str(payload.get("type", ""))] += 1
        self._out(payload)

    def emit(self, event: Event) -> None:
        self.deliver({"type": event.type, "t_s": event.t_s, "source": event.source, **event.data})

    def _check_landing(self) -> None:
        land_cfg = self.station.detectors.landing
        if land_cfg is None:
            return
        streams = self.pipeline.streams
        land_st = streams.get(land_cfg.stream)
        if land_st is None:
            known = ", ".join(sorted(streams))
            raise ConfigError(
                "invalid detectors.landing",
                [f"detectors.landing.stream: no stream {land_cfg.stream!r} (streams: {known})"],
            )
        if land_cfg.channel not in land_st.desc.channel_names:
            raise ConfigError(
                "invalid detectors.landing",
                [
                    f"detectors.landing.channel: stream {land_cfg.stream!r} has no channel "
                    f"{land_cfg.channel!r} (channels: {', '.join(land_st.desc.channel_names)})"
                ],
            )

    def finish(self) -> None:
        """End of input: close the open trial, whole-record sway, landing; count samples."""
        self.trials.finish()
        if self.sway is not None and self.sway.cfg.whole_record:
            self.sway.whole_record()
        land_cfg = self.station.detectors.landing
        if land_cfg is not None:
            obj, res = landing_output(
                land_cfg, self.pipeline.streams[land_cfg.stream], phash=params_hash(land_cfg.params)
            )
            for note in res.notes:
                log.info("landing on %s: %s: %s", land_cfg.stream, res.status, note)
            self.deliver(obj)
        for st in self.pipeline.streams.values():
            self._summary.channel_samples += st.counters.samples * st.desc.n_channels
            self._summary.missing_samples += st.counters.missing_samples


def analyze_arrays(
    station: StationConfig,
    data: AnalysisInput,
    out: Out,
    *,
    session: str,
    block_rows: int | None = None,
) -> AnalyzeSummary:
    """Run the pipeline over parsed data (see `load_csv`); every output goes to `out` as its
    published payload (a JSON-ready dict). Times are in the data's own time base.
    `block_rows`: rows per SampleBlock (default `block_rows_for`)."""
    if block_rows is not None and block_rows < 1:
        raise ValueError(f"block_rows must be >= 1 (got {block_rows})")
    descriptors = descriptors_from_config(station)
    t = data.t_s
    n_rows = int(t.shape[0])
    idx = data.index
    summary = AnalyzeSummary(session=session, rows=n_rows, rate_hz=data.rate_hz)
    summary.duration_s = float(idx[-1] + 1) / data.rate_hz
    t_start = time.perf_counter()
    # the ring holds the whole record: finish() and the whole-record measures look back over it
    history_s = max(
        (float(idx[-1] + 1) / d.rate_hz) * (1.0 + RATE_TOLERANCE) + HISTORY_MARGIN_S
        for d in descriptors
    )
    run = OfflineRun(
        station, descriptors, history_s=history_s, session=session, summary=summary, out=out
    )
    pipeline = run.pipeline

    # The perturbation source goes last in each block: when it opens a trial, every other
    # stream has reached the block's end, so a trial never waits on data already in memory
    # and the previous trial has closed before the next stimulus is seen.
    source = _perturbation_stream(station)
    order = sorted(
        ((d.stream_id, data.streams[d.stream_id]) for d in descriptors),
        key=lambda item: item[0] == source,
    )
    mask = (1 << 32) - 1  # StreamDescriptor.counter_bits
    rows = block_rows or block_rows_for(station, data.rate_hz)
    for lo, hi in _block_bounds(idx, rows, _sway_cuts(station, int(idx[-1]) + 1)):
        counter = int(idx[lo]) & mask
        t_blk = t[lo:hi]
        arrival_s = float(t_blk[-1])
        for sid, arr in order:
            pipeline.ingest(SampleBlock(sid, counter, arr[lo:hi], arrival_s, host_t_s=t_blk))
    run.finish()
    summary.process_s = time.perf_counter() - t_start
    return summary


def analyze(
    station: StationConfig,
    input_path: Path,
    out: Out,
    *,
    block_rows: int | None = None,
) -> AnalyzeSummary:
    """Read `input_path` (CSV, see the module docstring) and run the station's detectors over
    it with the daemon's pipeline code; each event and result goes to `out` as its published
    payload. Raises ProtocolError (exit 65) for a file that does not fit the config and
    ConfigError (exit 78) for a config analyze cannot run. A recording (a session directory
    or a seg-*.nmrec file) is read with its recorded host times and gaps instead
    (`runtime.replay.analyze_recording`); `block_rows` does not apply to it."""
    from nmcore.runtime.replay import analyze_recording, is_recording  # imports this module

    if is_recording(input_path):
        return analyze_recording(station, input_path, out)
    t0 = time.perf_counter()
    data = load_csv(station, input_path)
    parse_s = time.perf_counter() - t0
    summary = analyze_arrays(
        station, data, out, session=session_from_path(input_path), block_rows=block_rows
    )
    summary.parse_s = parse_s
    return summary
