"""Export a recorded session to CSV (one file per stream) and to XDF (Lab Streaming Layer).

CSV: header ``t_s,<channel> [<unit>],...,valid``; one row per absolute sample index from the
first to the last recorded one. Samples the recorder never received (index gaps) are rows
with empty time and values and ``valid`` 0: a gap is visible, never closed up.

XDF 1.0 (https://github.com/sccn/xdf/wiki/Specifications), written with `struct`: the
``XDF:`` magic, a FileHeader chunk (with the station id and the station file's SHA-256), then
per stream a StreamHeader (XML: name, type, channel_count, nominal_srate, channel_format,
channel labels/units), Samples chunks with a float64 time stamp on every sample, and a
StreamFooter (first/last time stamp, sample count). Each data stream gets one extra channel,
``valid`` (1.0/0.0), so invalid samples stay marked; samples never received are absent
(XDF has no "missing" value; the per-sample time stamps show the hole). Events and trial
results become one irregular string stream ``<station>_events`` holding each record as JSON.
All time stamps are nmcore host seconds already, so no ClockOffset chunks are written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

from nmcore.record import format as fmt
from nmcore.record.reader import Session

__all__ = ["export_csv", "export_xdf"]

_CSV_ROWS_PER_WRITE = 65536
_XDF_SAMPLES_PER_CHUNK = 4096  # ~0.5 MB chunks for a 16-channel stream

# XDF chunk tags
_FILE_HEADER = 1
_STREAM_HEADER = 2
_SAMPLES = 3
_STREAM_FOOTER = 6


def _stream_ids(session: Session, stream_ids: Iterable[str] | None) -> list[str]:
    ids = list(session.streams) if stream_ids is None else list(stream_ids)
    for sid in ids:
        if sid not in session.streams:
            known = ", ".join(sorted(session.streams)) or "none"
            raise KeyError(f"no stream {sid!r} in the session (streams: {known})")
    return ids


def _filled(
    indices: npt.NDArray[np.int64],
    t_s: npt.NDArray[np.float64],
    data: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Rows for every index from the first to the last; never-received ones NaN / invalid."""
    n = int(indices[-1] - indices[0] + 1)
    if n == indices.shape[0] and bool(np.all(np.diff(indices) == 1)):
        return t_s, data, valid
    pos = indices - indices[0]
    t_out = np.full(n, np.nan)
    d_out = np.full((n, data.shape[1]), np.nan)
    v_out = np.zeros(n, np.bool_)
    t_out[pos] = t_s
    d_out[pos] = data
    v_out[pos] = valid
    return t_out, d_out, v_out


def export_csv(
    session: Session, out_dir: str | os.PathLike[str], *, stream_ids: Iterable[str] | None = None
) -> list[Path]:
    """Write `<out_dir>/<stream_id>.csv` per stream; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sid in _stream_ids(session, stream_ids):
        desc = session.streams[sid]
        indices, t_s, data, valid = session.read_stream(sid)
        path = out / f"{sid}.csv"
        header = ",".join(["t_s", *(f"{c.name} [{c.unit}]" for c in desc.channels), "valid"])
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.write(header + "\n")
            if indices.size:
                t_f, d_f, v_f = _filled(indices, t_s, data, valid)
                for lo in range(0, t_f.shape[0], _CSV_ROWS_PER_WRITE):
                    hi = lo + _CSV_ROWS_PER_WRITE
                    _csv_rows(f, t_f[lo:hi], d_f[lo:hi], v_f[lo:hi])
        written.append(path)
    return written


def _csv_rows(
    f: IO[str],
    t_s: npt.NDArray[np.float64],
    data: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
) -> None:
    # %.9f keeps nanoseconds of host time; %.17g round-trips float64 (and so float32) exactly
    t_txt = np.char.mod("%.9f", t_s)
    d_txt = np.char.mod("%.17g", data)
    t_txt[np.isnan(t_s)] = ""
    d_txt[np.isnan(data)] = ""
    rows = np.column_stack([t_txt, d_txt, np.where(valid, "1", "0")])
    f.write("\n".join(",".join(r) for r in rows.tolist()))
    f.write("\n")


# -- XDF ------------------------------------------------------------------------------------


def _varlen(n: int) -> bytes:
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2**32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def _xdf_chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


def _xml(elements: list[tuple[str, str]], extra: str = "") -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in elements)
    return f'<?xml version="1.0"?><info>{inner}{extra}</info>'.encode()


def _numeric_samples(
    stream_num: int, t_s: npt.NDArray[np.float64], values: npt.NDArray[Any]
) -> bytes:
    n, n_ch = values.shape
    rec = np.dtype([("tsb", "u1"), ("ts", "<f8"), ("v", values.dtype.newbyteorder("<"), (n_ch,))])
    arr = np.empty(n, dtype=rec)
    arr["tsb"] = 8
    arr["ts"] = t_s
    arr["v"] = values
    content = struct.pack("<I", stream_num) + _varlen(n) + arr.tobytes()
    return _xdf_chunk(_SAMPLES, content)


def _string_samples(stream_num: int, items: list[tuple[float, bytes]]) -> bytes:
    parts = [struct.pack("<I", stream_num), _varlen(len(items))]
    for t, s in items:
        parts.append(struct.pack("<Bd", 8, t))
        parts.append(_varlen(len(s)))
        parts.append(s)
    return _xdf_chunk(_SAMPLES, b"".join(parts))


def _footer(stream_num: int, first: float, last: float, count: int) -> bytes:
    xml = _xml(
        [
            ("first_timestamp", repr(first)),
            ("last_timestamp", repr(last)),
            ("sample_count", str(count)),
        ],
        "<clock_offsets></clock_offsets>",
    )
    return _xdf_chunk(_STREAM_FOOTER, struct.pack("<I", stream_num) + xml)


def export_xdf(
    session: Session,
    out_path: str | os.PathLike[str],
    *,
    stream_ids: Iterable[str] | None = None,
    include_events: bool = True,
) -> Path:
    """Write the session as one XDF file; returns its path. Stream numbers are 1, 2, ... in
    `stream_ids` order (events last)."""
    path = Path(out_path)
    ids = _stream_ids(session, stream_ids)
    station = session.station_id or "nmcore"
    with path.open("wb") as f:
        f.write(b"XDF:")
        f.write(
            _xdf_chunk(
                _FILE_HEADER,
                _xml(
                    [
                        ("version", "1.0"),
                        ("writer", "nmcore"),
                        ("station_id", station),
                        ("config_sha256", session.config_sha256 or ""),
                    ]
                ),
            )
        )
        num = 0
        for num, sid in enumerate(ids, start=1):
            desc = session.streams[sid]
            dtype = session.stream_dtypes.get(sid, "float64")
            fmt_name = "float32" if dtype == "float32" else "double64"
            chans = "".join(
                f"<channel><label>{escape(c.name)}</label><unit>{escape(c.unit)}</unit>"
                f"<type>{escape(str(desc.kind))}</type></channel>"
                for c in desc.channels
            )
            chans += "<channel><label>valid</label><unit>bool</unit><type>valid</type></channel>"
            header = _xml(
                [
                    ("name", sid),
                    ("type", str(desc.kind)),
                    ("channel_count", str(desc.n_channels + 1)),
                    ("nominal_srate", repr(float(desc.rate_hz))),
                    ("channel_format", fmt_name),
                    ("source_id", f"{station}/{desc.device_id}/{sid}"),
                ],
                f"<desc><device_id>{escape(desc.device_id)}</device_id>"
                f"<channels>{chans}</channels></desc>",
            )
            f.write(_xdf_chunk(_STREAM_HEADER, struct.pack("<I", num) + header))
            _indices, t_s, data, valid = session.read_stream(sid)
            np_dtype = np.float32 if fmt_name == "float32" else np.float64
            values = np.empty((t_s.shape[0], desc.n_channels + 1), dtype=np_dtype)
            values[:, :-1] = data
            values[:, -1] = valid
            for lo in range(0, t_s.shape[0], _XDF_SAMPLES_PER_CHUNK):
                hi = lo + _XDF_SAMPLES_PER_CHUNK
                f.write(_numeric_samples(num, t_s[lo:hi], values[lo:hi]))
            n = int(t_s.shape[0])
            first = float(t_s[0]) if n else 0.0
            last = float(t_s[-1]) if n else 0.0
            f.write(_footer(num, first, last, n))
        if include_events:
            num += 1
            header = _xml(
                [
                    ("name", f"{station}_events"),
                    ("type", "Markers"),
                    ("channel_count", "1"),
                    ("nominal_srate", "0"),
                    ("channel_format", "string"),
                    ("source_id", f"{station}/events"),
                ],
                "<desc><encoding>json</encoding></desc>",
            )
            f.write(_xdf_chunk(_STREAM_HEADER, struct.pack("<I", num) + header))
            items = [(float(e.get("t_s", np.nan)), fmt.encode_json(e)) for e in session.events()]
            for lo in range(0, len(items), _XDF_SAMPLES_PER_CHUNK):
                f.write(_string_samples(num, items[lo : lo + _XDF_SAMPLES_PER_CHUNK]))
            first = items[0][0] if items else 0.0
            last = items[-1][0] if items else 0.0
            f.write(_footer(num, first, last, len(items)))
    return path
