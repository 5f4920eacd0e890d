"""Export to CSV and XDF, read back independently (csv module, pyxdf, a small chunk walker)."""

from __future__ import annotations

import csv
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import SessionRecorder, export_csv, export_xdf, open_session

CONFIG = '[station]\nid = "lab-3"\n'


class ManualClock:
    def __init__(self, t_s: float = 7000.0) -> None:
        self.t_s = t_s

    def now(self) -> float:
        return self.t_s

    async def sleep_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


EMG = StreamDescriptor(
    "emg", "d1", StreamKind.EMG, 2000.0, (ChannelSpec("TA", "uV"), ChannelSpec("SOL", "uV"))
)
PLATE = StreamDescriptor(
    "plate", "d2", StreamKind.FORCE, 1000.0, tuple(ChannelSpec(n, "N") for n in ("fx", "fz"))
)
EVENTS = [
    {"type": "perturbation", "t_s": 7000.05, "source": "platform", "direction": "back"},
    {"type": "trial_result", "t_s": 7000.4, "trial": 1, "latency_ms": {"TA": 61.0}},
]


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    rec = SessionRecorder(
        tmp_path / "rec",
        "lab-3",
        CONFIG,
        clock=ManualClock(),
        min_free_mb=0,
        utc_now=lambda: datetime(2026, 5, 6, tzinfo=UTC),
    )
    rec.declare_stream(EMG)
    rec.declare_stream(PLATE, dtype="float64")
    t0 = 7000.0
    # emg: two blocks with a 30-sample hole between them, one invalid sample
    emg_idx = np.r_[0:100, 130:200]
    emg = rng.normal(size=(170, 2)) * 50
    valid = np.ones(170, bool)
    valid[5] = False
    rec.write_samples(EMG, 0, emg[:100], t0 + emg_idx[:100] / 2000, valid[:100])
    rec.write_samples(EMG, 130, emg[100:], t0 + emg_idx[100:] / 2000, valid[100:])
    plate = rng.normal(size=(60, 2)) * 300
    rec.write_samples(PLATE, 10, plate, t0 + np.arange(10, 70) / 1000)
    for e in EVENTS:
        rec.write_event(e)
    rec.close()
    assert rec.session_dir is not None
    return rec.session_dir


def test_csv_export_keeps_values_times_and_gaps(session_dir: Path, tmp_path: Path) -> None:
    s = open_session(session_dir)
    paths = export_csv(s, tmp_path / "csv")
    assert sorted(p.name for p in paths) == ["emg.csv", "plate.csv"]
    with (tmp_path / "csv" / "emg.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["t_s", "TA [uV]", "SOL [uV]", "valid"]
    body = rows[1:]
    assert len(body) == 200  # indices 0..199, the hole included
    idx, t, data, valid = s.read_stream("emg")
    by_index = {int(i): k for k, i in enumerate(idx)}
    for i, row in enumerate(body):
        if i in by_index:
            k = by_index[i]
            assert float(row[0]) == pytest.approx(t[k], abs=1e-9)
            assert [float(x) for x in row[1:3]] == data[k].tolist()  # %.17g round-trips
            assert row[3] == ("1" if valid[k] else "0")
        else:
            assert row == ["", "", "", "0"]
    assert body[5][3] == "0"
    with (tmp_path / "csv" / "plate.csv").open(encoding="utf-8") as f:
        prow = list(csv.reader(f))
    assert len(prow) == 61


def _walk_xdf(path: Path) -> list[tuple[int, bytes]]:
    """A minimal XDF chunk walker written from the spec: (tag, content) per chunk."""
    buf = path.read_bytes()
    assert buf[:4] == b"XDF:"
    pos, out = 4, []
    while pos < len(buf):
        nbytes = buf[pos]
        assert nbytes in (1, 4, 8)
        length = int.from_bytes(buf[pos + 1 : pos + 1 + nbytes], "little")
        pos += 1 + nbytes
        (tag,) = struct.unpack_from("<H", buf, pos)
        out.append((tag, buf[pos + 2 : pos + length]))
        pos += length
    assert pos == len(buf)
    return out


def _varlen(buf: bytes, pos: int) -> tuple[int, int]:
    nbytes = buf[pos]
    return int.from_bytes(buf[pos + 1 : pos + 1 + nbytes], "little"), pos + 1 + nbytes


def test_xdf_chunks_follow_the_spec(session_dir: Path, tmp_path: Path) -> None:
    s = open_session(session_dir)
    path = export_xdf(s, tmp_path / "s.xdf")
    chunks = _walk_xdf(path)
    tags = [t for t, _ in chunks]
    assert tags[0] == 1  # FileHeader first
    assert tags.count(2) == 3
    assert tags.count(6) == 3
    assert b"<version>1.0</version>" in chunks[0][1]
    # decode the float64 plate stream's samples by hand: 8-byte stamps + 3 doubles each
    (plate_num,) = [
        struct.unpack_from("<I", c)[0] for t, c in chunks if t == 2 and b"<name>plate<" in c
    ]
    stamps, rows = [], []
    for tag, c in chunks:
        if tag != 3 or struct.unpack_from("<I", c)[0] != plate_num:
            continue
        n, pos = _varlen(c, 4)
        for _ in range(n):
            assert c[pos] == 8
            stamps.append(struct.unpack_from("<d", c, pos + 1)[0])
            rows.append(struct.unpack_from("<3d", c, pos + 9))
            pos += 9 + 24
        assert pos == len(c)
    _i, t, data, valid = s.read_stream("plate")
    assert stamps == t.tolist()
    np.testing.assert_array_equal(np.array(rows)[:, :2], data)
    np.testing.assert_array_equal(np.array(rows)[:, 2], valid.astype(float))


def test_xdf_reads_back_with_pyxdf(session_dir: Path, tmp_path: Path) -> None:
    pyxdf = pytest.importorskip("pyxdf", reason="pyxdf not installed (dev extra)")
    s = open_session(session_dir)
    path = export_xdf(s, tmp_path / "s.xdf")
    streams, header = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    assert header["info"]["station_id"] == ["lab-3"]
    by_name: dict[str, Any] = {st["info"]["name"][0]: st for st in streams}
    assert set(by_name) == {"emg", "plate", "lab-3_events"}
    for sid, dtype in (("emg", np.float32), ("plate", np.float64)):
        st = by_name[sid]
        _i, t, data, valid = s.read_stream(sid)
        assert st["info"]["channel_format"] == ["float32" if dtype == np.float32 else "double64"]
        assert float(st["info"]["nominal_srate"][0]) == s.streams[sid].rate_hz
        labels = [c["label"][0] for c in st["info"]["desc"][0]["channels"][0]["channel"]]
        assert labels == [*s.streams[sid].channel_names, "valid"]
        np.testing.assert_array_equal(st["time_stamps"], t)
        np.testing.assert_array_equal(st["time_series"][:, :-1], data.astype(dtype))
        np.testing.assert_array_equal(st["time_series"][:, -1], valid.astype(dtype))
        assert int(st["footer"]["info"]["sample_count"][0]) == len(t)
    ev = by_name["lab-3_events"]
    assert [json.loads(x[0]) for x in ev["time_series"]] == EVENTS
    np.testing.assert_array_equal(ev["time_stamps"], [e["t_s"] for e in EVENTS])


def test_export_unknown_stream_names_the_known_ones(session_dir: Path, tmp_path: Path) -> None:
    s = open_session(session_dir)
    with pytest.raises(KeyError, match="emg, plate"):
        export_csv(s, tmp_path, stream_ids=["nope"])
    with pytest.raises(KeyError, match="emg, plate"):
        s.read_stream("nope")
