"""`nmcore analyze`: the live pipeline over CSV files, through the CLI, against known truth
(synthetic EMG with scheduled onsets) and the shared reference data (force plate, landing)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.cli.main import main
from nmcore.config import load_station
from nmcore.runtime import analyze as an
from nmcore.sim.emg import EmgGenerator

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DATA = REPO / ".." / "shared" / "data"
RATE_HZ = 2000.0
T0_S = 1000.0  # the file's time origin: every output time must be in this base
STIMULI_S = (2.0, 4.5, 7.0, 9.5, 12.0)
LATENCY_MS = (60.0, 75.0, 90.0, 110.0)  # truth per channel
SNR_DB = (20.0, 16.0, 13.0, 10.0)
TRIGGER_MS = 10.0
DURATION_S = 14.0
ONSET_TOL_MS = (2.0, 2.0, 4.0, 6.0)  # "within a few ms" of the truth, per channel's SNR
REL_TOL = 1e-6
ONSET_KEYS = {"type", "trial_id", "channel", "onset_s", "alarm_s", "latency_ms", "algorithm"}


# -- helpers ---------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], cols: list[np.ndarray], fmt: str = "%.10g") -> Path:
    np.savetxt(
        path, np.column_stack(cols), delimiter=",", header=",".join(header), comments="", fmt=fmt
    )
    return path


def _emg_columns(*, bursts: bool, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t, trigger, emg (n, 4) in µV with bursts at stimulus + LATENCY_MS (or none)."""
    n = round(DURATION_S * RATE_HZ)
    gen = EmgGenerator(rate_hz=RATE_HZ, n_channels=4, rng=np.random.default_rng(seed))
    trigger = np.zeros(n)
    for s in STIMULI_S:
        i = round(s * RATE_HZ)
        trigger[i : i + round(TRIGGER_MS * 1e-3 * RATE_HZ)] = 1.0
        if bursts:
            for c, (lat, snr) in enumerate(zip(LATENCY_MS, SNR_DB, strict=True)):
                onset = i + round(lat * 1e-3 * RATE_HZ)
                gen.schedule_burst(c, onset, round(0.4 * RATE_HZ), snr)
    t = T0_S + np.arange(n) / RATE_HZ
    return t, trigger, gen.generate(n)


def _emg_csv(path: Path, *, bursts: bool = True, scale: float = 1.0) -> Path:
    t, trig, emg = _emg_columns(bursts=bursts)
    header = ["t", "trigger", "emg1", "emg2", "emg3", "emg4"]
    return _write_csv(path, header, [t, trig, *(emg * scale).T])


def _run(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path
) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["analyze", str(config), str(data)])
    cap = capsys.readouterr()
    return code, [json.loads(line) for line in cap.out.splitlines()], cap.err


def _of(msgs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == kind]


EMG_CFG = CONFIGS / "analyze-emg-trigger.toml"


# -- EMG after a trigger ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def emg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _emg_csv(tmp_path_factory.mktemp("emg") / "s01 trial#1.csv")


def test_emg_trigger_onsets_in_input_time_base(
    emg_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, msgs, err = _run(capsys, EMG_CFG, emg_file)
    assert code == 0, err
    edges = [T0_S + round(s * RATE_HZ) / RATE_HZ for s in STIMULI_S]
    perts = _of(msgs, "perturbation")
    # the trigger edge is the t of its first row, exactly: no clock model in between
    assert [p["onset_s"] for p in perts] == edges
    assert [p["trial_id"] for p in perts] == [f"s01_trial_1-{k:04d}" for k in range(1, 6)]
    onsets = _of(msgs, "onset")
    assert len(onsets) == len(STIMULI_S) * len(LATENCY_MS)
    for o in onsets:
        assert o.keys() >= ONSET_KEYS
        trial = int(o["trial_id"].rsplit("-", 1)[1])
        edge = edges[trial - 1]
        c = int(o["channel"].removeprefix("emg")) - 1
        truth = edge + round(LATENCY_MS[c] * 1e-3 * RATE_HZ) / RATE_HZ
        assert abs(o["onset_s"] - truth) * 1e3 <= ONSET_TOL_MS[c], (
            o["channel"],
            o["onset_s"],
            truth,
        )
        assert o["latency_ms"] == pytest.approx((o["onset_s"] - edge) * 1e3, abs=1e-9)
        assert o["alarm_s"] >= o["onset_s"]
        assert o["algorithm"] == "aglr"
        assert o["stream_id"] == "emg.emg"
    results = _of(msgs, "trial_result")
    assert len(results) == len(STIMULI_S)
    for r in results:
        assert r["quality"]["missed"] == []
        assert [m["channel"] for m in r["onsets"]] == ["emg1", "emg2", "emg3", "emg4"]
        assert all(m["detected"] for m in r["onsets"])
    assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
    assert {m["station"] for m in msgs} == {"analyze-emg"}
    assert "5 trials, 20 onsets" in err


def test_emg_noise_only_gives_no_onsets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, msgs, err = _run(capsys, EMG_CFG, _emg_csv(tmp_path / "noise.csv", bursts=False))
    assert code == 0, err
    assert len(_of(msgs, "perturbation")) == len(STIMULI_S)
    assert _of(msgs, "onset") == []
    for r in _of(msgs, "trial_result"):
        assert sorted(r["quality"]["missed"]) == ["emg1", "emg2", "emg3", "emg4"]


def test_emg_scaled_input_gives_the_same_onsets(
    tmp_path: Path, emg_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, msgs_uv, _ = _run(capsys, EMG_CFG, emg_file)
    scaled = _emg_csv(tmp_path / "s01 trial#1.csv", scale=1e-6)  # volts instead of µV
    code, msgs_v, err = _run(capsys, EMG_CFG, scaled)
    assert code == 0, err

    def key(ms: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
        return [(o["trial_id"], o["channel"], o["onset_s"], o["alarm_s"]) for o in _of(ms, "onset")]

    assert key(msgs_v) == key(msgs_uv)
    assert len(key(msgs_v)) == len(STIMULI_S) * len(LATENCY_MS)


def test_block_size_does_not_change_results(emg_file: Path) -> None:
    station = load_station(EMG_CFG)
    data = an.load_csv(station, emg_file)
    runs = []
    for rows in (7, 64, None):
        out: list[dict[str, Any]] = []
        an.analyze_arrays(station, data, out.append, session="s", block_rows=rows)
        runs.append(
            sorted(
                (o["trial_id"], o["channel"], o["onset_s"], o["alarm_s"])
                for o in out
                if o["type"] == "onset"
            )
        )
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == len(STIMULI_S) * len(LATENCY_MS)


def test_missing_rows_are_a_counted_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t, trig, emg = _emg_columns(bursts=False)
    keep = np.r_[0:5000, 5100 : t.size]
    path = _write_csv(
        tmp_path / "gap.csv",
        ["t", "trigger", "emg1", "emg2", "emg3", "emg4"],
        [t[keep], trig[keep], *emg[keep].T],
    )
    code, msgs, err = _run(capsys, EMG_CFG, path)
    assert code == 0, err
    gaps = _of(msgs, "gap")
    assert {g["stream_id"] for g in gaps} == {"stim.trigger", "emg.emg"}
    assert all(g["missing_samples"] == 100 and g["first_index"] == 5000 for g in gaps)
    assert "100 samples missing" in err or "200 samples missing" in err


# -- force plate, COP, landing against the reference data ------------------------------------
def _cop_reference() -> dict[str, float]:
    with (DATA / "forceplate" / "cop_reference_measures.csv").open() as fh:
        rows = list(csv.reader(fh))
    return {r[0]: float(r[1]) for r in rows[1:]}  # the "raw, 100 Hz" column


@pytest.fixture(scope="module")
def amti() -> np.ndarray:
    a = np.loadtxt(DATA / "forceplate" / "amti_quiet_standing.csv", delimiter=",", skiprows=35)
    return np.asarray(a[4000:7000, 3:9])  # Fx Fy Fz Mx My Mz, the reference's rows


def _assert_sway_matches_reference(msgs: list[dict[str, Any]], stream_id: str) -> None:
    sway = _of(msgs, "sway")
    whole = sway[-1]  # the whole record comes last, after the 10 s windows
    assert [s["window_s"] for s in sway] == [10.0, 10.0, 10.0, 30.0]
    assert [s["t_s"] for s in sway[:3]] == pytest.approx([9.99, 19.99, 29.99], abs=1e-12)
    assert whole["stream_id"] == stream_id
    assert whole["status"] == "ok"
    assert (whole["n_samples"], whole["n_excluded"]) == (3000, 0)
    ref = _cop_reference()
    assert ref["T_s"] == whole["window_s"]
    compared = 0
    for key, value in ref.items():
        if key in ("n", "fs", "T_s"):
            continue
        ours = whole["measures"][
            {"BMC_hyperellipsoid_area95": "AREA_PE95_Fexact_ddof1"}.get(key, key)
        ]
        assert ours is not None, key
        assert abs(ours - value) <= REL_TOL * abs(value), (key, ours, value)
        compared += 1
    assert compared == 36
    assert whole["units"]["MDIST"] == "cm"
    assert whole["units"]["AREA_CE95_Prieto"] == "cm^2"
    assert whole["params"]["lowpass_hz"] is None


def test_forceplate_whole_record_matches_reference(
    tmp_path: Path, amti: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    t = np.arange(amti.shape[0]) / 100.0
    path = _write_csv(
        tmp_path / "amti.csv", ["t", "Fx", "Fy", "Fz", "Mx", "My", "Mz"], [t, *amti.T]
    )
    code, msgs, err = _run(capsys, CONFIGS / "analyze-forceplate.toml", path)
    assert code == 0, err
    _assert_sway_matches_reference(msgs, "plate.force")
    assert _of(msgs, "sway")[-1]["params"]["cop_input"] == "six_axis"


def test_cop_whole_record_matches_reference(
    tmp_path: Path, amti: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    fz, mx, my = amti[:, 2], amti[:, 3], amti[:, 4]
    t = np.arange(amti.shape[0]) / 100.0
    # %.17g: every value round-trips (and the file takes the long-number reading path)
    path = _write_csv(
        tmp_path / "cop.csv", ["t", "cop_x", "cop_y"], [t, -my / fz, mx / fz], fmt="%.17g"
    )
    code, msgs, err = _run(capsys, CONFIGS / "analyze-cop.toml", path)
    assert code == 0, err
    _assert_sway_matches_reference(msgs, "plate.cop")


LANDING_FIELDS = {
    "step_on_s": "step_on_s",
    "BW_N": "body_weight_n",
    "takeoff_s": "takeoff_s",
    "landing_s": "landing_s",
    "flight_time_s": "flight_time_s",
    "jump_height_flight_m": "jump_height_m",
    "peak_landing_F_BW": "peak_landing_force_bw",
    "TTS_seqavg_s": "tts_seqavg_s",
    "TTS_5pctBW_1s_s": "tts_band_s",
    "VSI_3s": "vsi",
    "post_landing_available_s": "post_landing_available_s",
}


def _jump_reference() -> dict[str, dict[str, str]]:
    with (DATA / "landing" / "jump_reference_measures.csv").open() as fh:
        rows = list(csv.reader(fh))
    return {name: {r[0]: r[j + 1] for r in rows[1:]} for j, name in enumerate(rows[0][1:])}


def _jump_csv(tmp_path: Path, name: str) -> Path:
    a = np.loadtxt(DATA / "landing" / f"{name}.txt", skiprows=1)
    return _write_csv(tmp_path / f"{name}.csv", ["t", "Fz"], [a[:, 0], a[:, 1]], fmt="%.17g")


@pytest.mark.parametrize("name", ["jump1", "jump2"])
def test_landing_matches_reference(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, msgs, err = _run(capsys, CONFIGS / "analyze-landing.toml", _jump_csv(tmp_path, name))
    assert code == 0, err
    (land,) = msgs
    assert land["type"] == "landing"
    assert land["stream_id"] == "plate.force"
    assert land["provenance"]["algorithms"]["landing"]["version"] == "1"
    ref = _jump_reference()[f"{name}.txt"]
    m = land["measures"]
    assert set(m) >= set(LANDING_FIELDS.values())
    invalid = {"TTS_seqavg_s"} if name == "jump2" else set()  # reference: "window invalid"
    compared = 0
    for key, ours_key in LANDING_FIELDS.items():
        if ref[key] == "" or key in invalid:
            assert m[ours_key] is None, key
            continue
        assert m[ours_key] is not None, key
        assert abs(m[ours_key] - float(ref[key])) <= REL_TOL * abs(float(ref[key])), key
        compared += 1
    if name == "jump1":
        assert land["status"] == "ok"
        assert compared == 11
        assert land["t_s"] == m["landing_s"]
    else:
        assert land["status"] == "stepped_off"
        assert compared == 8
        assert m["vsi"] is None
        assert "stepped_off" in err


def test_landing_times_are_the_files_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = np.loadtxt(DATA / "landing" / "jump1.txt", skiprows=1)
    t = 3600.0 + a[:, 0]  # a recording that does not start at 0
    path = _write_csv(tmp_path / "late.csv", ["t", "Fz"], [t, a[:, 1]], fmt="%.17g")
    code, msgs, err = _run(capsys, CONFIGS / "analyze-landing.toml", path)
    assert code == 0, err
    m = msgs[0]["measures"]
    ref = _jump_reference()["jump1.txt"]
    for key in ("step_on_s", "takeoff_s", "landing_s"):
        assert m[key] in set(t.tolist())  # a sample's own t, not a sum that drifts an ulp
        assert m[key] == pytest.approx(3600.0 + float(ref[key]), abs=1e-9)
    assert m["flight_time_s"] == pytest.approx(float(ref["flight_time_s"]), rel=REL_TOL)


def test_subprocess_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmcore.cli.main",
            "analyze",
            str(CONFIGS / "analyze-landing.toml"),
            str(_jump_csv(tmp_path, "jump1")),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    (line,) = out.read_text().splitlines()
    msg = json.loads(line)
    assert msg["type"] == "landing"
    assert msg["status"] == "ok"
    assert "1 messages" in proc.stderr


# -- bad input and bad config ----------------------------------------------------------------
def _small_emg(tmp_path: Path, text_fn: Any = None) -> Path:
    t, trig, emg = _emg_columns(bursts=False)
    path = _write_csv(
        tmp_path / "in.csv", ["t", "trigger", "emg1", "emg2", "emg3", "emg4"], [t, trig, *emg.T]
    )
    if text_fn is not None:
        path.write_text(text_fn(path.read_text()))
    return path


def _replace_line(text: str, line_no: int, new: str) -> str:
    lines = text.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (
            lambda s: s.replace("t,trigger,emg1,emg2,emg3,emg4", "t,trigger,emg1,emg2,emg4", 1),
            ["missing column", "'emg3'", "columns found: t, trigger, emg1, emg2, emg4"],
        ),
        (
            lambda s: _replace_line(s, 7, "1000.0025,0,1.5,abc,2,3"),
            ["line 7", "'emg2'", "'abc' is not a number"],
        ),
        (lambda s: _replace_line(s, 9, "1000.0035,0,1.5,2"), ["line 9 has 4 field(s)"]),
        (lambda s: "", ["empty file"]),
        (lambda s: s.splitlines()[0] + "\n", ["0 data row(s)"]),
        (lambda s: s.replace("t,trigger", "time,trigger", 1), ["must be 't'", "found 'time'"]),
        (lambda s: s.replace(",", ";"), ["separated by commas"]),
    ],
    ids=[
        "missing-column",
        "non-numeric",
        "short-row",
        "empty",
        "header-only",
        "no-t",
        "semicolons",
    ],
)
def test_bad_input_exits_65_naming_the_problem(
    tmp_path: Path, edit: Any, expect: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, msgs, err = _run(capsys, EMG_CFG, _small_emg(tmp_path, edit))
    assert code == 65
    assert msgs == []
    for text in expect:
        assert text in err


def test_wrong_rate_exits_65_with_measured_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = np.arange(3000) / 1000.0  # 1 kHz, the config says 2 kHz
    z = np.zeros(3000)
    path = _write_csv(
        tmp_path / "slow.csv", ["t", "trigger", "emg1", "emg2", "emg3", "emg4"], [t, z, z, z, z, z]
    )
    code, _, err = _run(capsys, EMG_CFG, path)
    assert code == 65
    assert "sampled at 1000 Hz" in err
    assert "rate_hz = 2000" in err


def test_time_going_backwards_exits_65(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _small_emg(tmp_path, lambda s: _replace_line(s, 5, "999,0,1,2,3,4"))
    code, _, err = _run(capsys, EMG_CFG, path)
    assert code == 65
    assert "column 't' must increase" in err


def test_extra_columns_are_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t, trig, emg = _emg_columns(bursts=False)
    path = _write_csv(
        tmp_path / "extra.csv",
        ["t", "trigger", "emg1", "emg2", "emg3", "emg4", "note"],
        [t, trig, *emg.T, np.full(t.size, 7.0)],
    )
    path.write_text(path.read_text().replace(",7\n", ",n/a\n"))  # unread: not a number is fine
    code, msgs, err = _run(capsys, EMG_CFG, path)
    assert code == 0, err
    assert "ignoring column(s) no stream declares: note" in err
    assert len(_of(msgs, "perturbation")) == len(STIMULI_S)


@pytest.mark.parametrize(
    ("toml", "expect"),
    [
        ('[[streams]]\nid = "a.b"\nkind = "emg"\nrate_hz = 2000\nchanels = []\n', "chanels"),
        ("[station]\nid = 'x'\n", "[[streams]]"),
        (
            '[[streams]]\nid = "a.b"\nkind = "emg"\nrate_hz = 2000.0\n'
            'channels = [{ name = "emg1" }]\n[detectors.emg_onset]\nstream = "a.c"\n',
            "no stream 'a.c'",
        ),
        (
            '[[streams]]\nid = "a.b"\nkind = "force"\nrate_hz = 2000.0\n'
            'channels = [{ name = "emg1" }]\n[detectors.landing]\nstream = "a.b"\n',
            "no channel 'Fz'",
        ),
    ],
    ids=["unknown-key", "no-streams", "unknown-stream", "landing-channel"],
)
def test_bad_config_exits_78(
    tmp_path: Path, toml: str, expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    code, msgs, err = _run(capsys, cfg, _small_emg(tmp_path))
    assert code == 78
    assert msgs == []
    assert expect in err


# -- the CSV kernel --------------------------------------------------------------------------
def _number_cells(rng: np.random.Generator, n: int) -> list[str]:
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-9, 9, n)
    fmts = ["%.6f", "%.9g", "%.15g", "%.17g", "%e", "%.3E", "%d", "%+.4f", "%.18e"]
    cells = [fmts[i % len(fmts)] % v for i, v in enumerate(x)]
    cells[::37] = ["nan"] * len(cells[::37])
    cells[5::41] = [" -inf"] * len(cells[5::41])
    cells[7::43] = ["  .5 "] * len(cells[7::43])
    cells[9::47] = ["5."] * len(cells[9::47])
    cells[11::53] = ["-0.0"] * len(cells[11::53])
    cells[13::59] = ["1E5"] * len(cells[13::59])
    return cells


@pytest.mark.parametrize("jitted", [True, False], ids=["jit", "py_func"])
def test_csv_kernel_is_bit_exact_against_loadtxt(tmp_path: Path, jitted: bool) -> None:
    rng = np.random.default_rng(11)
    n_rows, n_cols = 400 if jitted else 60, 5
    cells = _number_cells(rng, n_rows * n_cols)
    lines = [",".join(cells[r * n_cols : (r + 1) * n_cols]) for r in range(n_rows)]
    text = "a,b,c,d,e\r\n" + "\r\n".join(lines[:10]) + "\r\n\r\n# a comment\n"
    text += "\n".join(lines[10:]) + "\n"
    path = tmp_path / "cells.csv"
    path.write_text(text)
    ref = np.loadtxt(path, delimiter=",", skiprows=1)
    buf = np.fromfile(path, dtype=np.uint8)
    out = np.empty((n_rows + 5, 3))
    hard = np.empty((n_rows * n_cols, 4), dtype=np.int64)
    info = np.zeros(6, dtype=np.int64)
    colmap = np.array([0, -1, 1, -1, 2])  # b and d are skipped
    fn = an._parse_csv if jitted else an._parse_csv.py_func
    start = text.index("\n") + 1
    rows = fn(buf, start, colmap, out, hard, info)
    assert rows == n_rows
    assert info[0] == an._ST_OK
    n_hard = int(info[5])
    assert n_hard > 0  # the %.17g / %.18e cells
    for r, c, s, e in hard[:n_hard].tolist():
        out[r, c] = float(bytes(buf[s:e]))
    np.testing.assert_array_equal(out[:rows], ref[:, [0, 2, 4]])
    assert np.signbit(out[:rows]).tolist() == np.signbit(ref[:, [0, 2, 4]]).tolist()


def test_read_table_with_long_numbers_equals_loadtxt(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 2))
    path = _write_csv(tmp_path / "long.csv", ["t", "a", "b"], [np.arange(3000) / 10, *x.T], "%.18e")
    got = an._read_table(path, ["t", "a", "b"], [0, 1, 2])  # too many long cells: loadtxt path
    np.testing.assert_array_equal(got, np.loadtxt(path, delimiter=",", skiprows=1))
    short = _write_csv(tmp_path / "short.csv", ["t", "a", "b"], [np.arange(3000) / 10, *x.T])
    got = an._read_table(short, ["t", "a", "b"], [0, 2])
    np.testing.assert_array_equal(got, np.loadtxt(short, delimiter=",", skiprows=1)[:, [0, 2]])
    # a full-precision time column (a sixth of the cells hard) next to short data: the
    # kernel reads the short cells and float() fixes the long ones up
    y = rng.standard_normal((3000, 5))
    header = ["t", "a", "b", "c", "d", "e"]
    mixed = tmp_path / "mixed.csv"
    np.savetxt(
        mixed,
        np.column_stack([np.arange(3000) / 450.0, y]),
        delimiter=",",
        header=",".join(header),
        comments="",
        fmt=["%.17g"] + ["%.6g"] * 5,
    )
    got = an._read_table(mixed, header, list(range(6)))
    np.testing.assert_array_equal(got, np.loadtxt(mixed, delimiter=",", skiprows=1))
    np.testing.assert_array_equal(got[:, 0], np.arange(3000) / 450.0)


def test_parse_number_rejects_garbage() -> None:
    for cell in ["", "-", "1e", "1.2.3", "abc", "1,5", "--1", "e5", "infx", "0x10"]:
        buf = np.frombuffer(cell.encode(), dtype=np.uint8)
        status, _ = an._parse_number(buf, 0, buf.size)
        assert status == an._NUM_BAD, cell
        assert an._parse_number.py_func(buf, 0, buf.size)[0] == an._NUM_BAD, cell


def test_session_from_path() -> None:
    assert an.session_from_path(Path("/x/s01 trial#1.csv")) == "s01_trial_1"
    assert an.session_from_path(Path("...csv")) == "analyze"
    assert len(an.session_from_path(Path("a" * 200 + ".csv"))) == 58
