"""Calibration model and store: validation, ids, corrections, atomic never-overwriting saves,
refusal of failed calibrations, clear errors on bad files, latest/list/resolve."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from nmcore.calibration import (
    Calibration,
    CalibrationStore,
    Check,
    ForcePlateValues,
    LatencyValues,
    StreamCorrection,
    mean_sem,
    new_id,
)
from nmcore.calibration.model import mean_cov
from nmcore.errors import CalibrationError

T0 = datetime(2026, 11, 21, 1, 59, 0, tzinfo=UTC)
SIX = ["Fx", "Fy", "Fz", "Mx", "My", "Mz"]


def plate_values() -> ForcePlateValues:
    return ForcePlateValues(
        layout="six_axis",
        offsets=[1.0, 2.0, 10.0, 0.5, -0.5, 0.0],
        offset_sigmas=[0.01] * 6,
        gains=[1.0, 1.0, 1.02, 0.98, 1.01, 1.0],
        gain_sigmas=[0.0, 0.0, 1e-4, 1e-3, 1e-3, 0.0],
        gain_calibrated=[False, False, True, True, True, False],
        residuals=[],
        g_mps2=9.80665,
    )


def latency_values(delay_ms: float = 12.5) -> LatencyValues:
    return LatencyValues(
        delay_ms=delay_ms,
        sigma_ms=0.05,
        sd_ms=0.4,
        n_events=50,
        n_missing=0,
        method="loopback",
        path="DO0 -> trigger",
        sample_period_ms=1.0,
    )


def ok(name: str = "x") -> Check:
    return Check(name=name, passed=True, message="fine")


def bad(name: str = "unloaded") -> Check:
    return Check(
        name=name,
        passed=False,
        value=212.4,
        limit=20.0,
        unit="N",
        message="Fz reads 212.4 N with the plate meant to be unloaded (limit 20 N): "
        "take everything off the plate",
    )


def plate_cal(now: datetime = T0, checks: list[Check] | None = None, **kw) -> Calibration:
    return Calibration.create(
        plate_values(),
        device_id=kw.pop("device_id", "plate"),
        stream_id="plate.force",
        channels=SIX,
        now_utc=now,
        stats={"zero": {"means": np.arange(6.0), "n": np.int64(4000)}},
        checks=checks if checks is not None else [ok()],
        **kw,
    )


def test_new_id_format_and_uniqueness() -> None:
    assert new_id("plate", "forceplate", T0) == "plate-forceplate-20261121T015900Z"
    taken = {"plate-forceplate-20261121T015900Z", "plate-forceplate-20261121T015900Z-2"}
    assert new_id("plate", "forceplate", T0, taken) == "plate-forceplate-20261121T015900Z-3"
    local = T0.astimezone(timezone(timedelta(hours=2)))
    assert new_id("plate", "forceplate", local) == "plate-forceplate-20261121T015900Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        new_id("plate", "forceplate", T0.replace(tzinfo=None))


def test_calibration_validation() -> None:
    cal = plate_cal()
    assert cal.kind == "forceplate"
    assert cal.passed
    assert cal.stats["zero"]["n"] == 4000
    assert isinstance(cal.stats["zero"]["means"], list)
    with pytest.raises(ValidationError, match="timezone-aware"):
        Calibration.model_validate(
            {**plate_cal().model_dump(), "created_utc": "2026-11-21T01:59:00"}
        )
    with pytest.raises(ValidationError, match="must agree"):
        Calibration.model_validate({**plate_cal().model_dump(), "kind": "emg"})
    with pytest.raises(ValidationError, match="one name per calibrated channel"):
        Calibration.model_validate({**plate_cal().model_dump(), "channels": ["Fz"]})
    with pytest.raises(ValidationError, match="extra"):
        Calibration.model_validate({**plate_cal().model_dump(), "colour": "red"})
    with pytest.raises(ValidationError):
        Check(name="x", passed=True, message="m", severity="fatal")  # type: ignore[arg-type]


def test_passed_failures_and_age() -> None:
    warn = Check(name="mains", passed=False, severity="warn", message="noisy")
    cal = plate_cal(checks=[ok(), warn])
    assert cal.passed
    assert cal.failures() == []
    assert cal.warnings() == [warn]
    cal = plate_cal(checks=[ok(), bad()])
    assert not cal.passed
    assert [c.name for c in cal.failures()] == ["unloaded"]
    assert cal.age_s(T0 + timedelta(hours=1)) == pytest.approx(3600.0)


def test_stream_correction_arrays_and_apply() -> None:
    corr = plate_cal().correction()
    assert corr is not None
    offset, m = corr.as_arrays()
    np.testing.assert_allclose(offset, [1.0, 2.0, 10.0, 0.5, -0.5, 0.0])
    np.testing.assert_allclose(np.diag(m), [1.0, 1.0, 1.02, 0.98, 1.01, 1.0])
    x = np.array([[1.0, 2.0, 110.0, 0.5, -0.5, 0.0]])
    np.testing.assert_allclose(corr.apply(x), [[0, 0, 102.0, 0, 0, 0]])
    plain = StreamCorrection(stream_id="s", channels=["a", "b"], offsets=[1.0, 2.0])
    np.testing.assert_array_equal(plain.as_arrays()[1], np.eye(2))
    with pytest.raises(ValidationError, match="one value per channel"):
        StreamCorrection(stream_id="s", channels=["a", "b"], offsets=[1.0])
    with pytest.raises(ValidationError, match="2 x 2"):
        StreamCorrection(stream_id="s", channels=["a", "b"], offsets=[0, 0], matrix=[[1.0]])
    lat = Calibration.create(
        latency_values(), device_id="trig", stream_id="trig.t", channels=["t"], now_utc=T0
    )
    assert lat.correction() is None


def test_json_roundtrip_of_every_kind(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    cal = plate_cal()
    path = store.save(cal)
    assert path == tmp_path / f"{cal.id}.json"
    text = path.read_text()
    assert text.startswith("{\n  ")  # human-readable, indent=2
    assert json.loads(text)["values"]["kind"] == "forceplate"
    assert store.load(cal.id) == cal
    lat = Calibration.create(
        latency_values(), device_id="trig", stream_id="trig.t", channels=["t"], now_utc=T0
    )
    store.save(lat)
    assert store.load(lat.id).values == lat.values


def test_save_refuses_a_failed_calibration_and_says_why(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    cal = plate_cal(checks=[ok(), bad()])
    with pytest.raises(CalibrationError, match="take everything off the plate") as info:
        store.save(cal)
    assert info.value.exit_code == 65
    assert "unloaded" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_save_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path / "cal")
    cal = plate_cal()
    store.save(cal)
    other = cal.model_copy(update={"operator": "someone else"})
    with pytest.raises(CalibrationError, match="never overwritten"):
        store.save(other)
    assert store.load(cal.id).operator is None
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == [f"{cal.id}.json"]
    # the store's new_id avoids the taken id
    nid = store.new_id("plate", "forceplate", T0)
    assert nid == f"{cal.id}-2"
    store.save(plate_cal(taken=store.ids()))
    assert store.ids() == {cal.id, nid}


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    with pytest.raises(CalibrationError, match="no calibration file"):
        store.load("plate-forceplate-20261121T015900Z")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CalibrationError, match=r"broken\.json is not a valid calibration"):
        store.load("broken")
    cal = plate_cal()
    data = json.loads(cal.model_dump_json())
    data["values"]["gains"] = [1.0]
    (tmp_path / f"{cal.id}.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=r"values\.forceplate"):
        store.load(cal.id)
    good = plate_cal(device_id="other")
    (tmp_path / "renamed.json").write_text(good.model_dump_json())
    with pytest.raises(CalibrationError, match="named after their id"):
        store.load("renamed")
    with pytest.raises(CalibrationError, match="not a calibration id"):
        store.load("../etc/passwd")
    with pytest.raises(CalibrationError):
        store.list()
    assert store.list(skip_bad=True) == []


def test_list_latest_and_resolve(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    assert store.latest("plate", "forceplate") is None
    assert store.list() == []
    first = plate_cal(now=T0)
    second = plate_cal(now=T0 + timedelta(days=1))
    other = plate_cal(now=T0 + timedelta(days=2), device_id="plate2")
    lat = Calibration.create(
        latency_values(), device_id="plate", stream_id="plate.t", channels=["t"], now_utc=T0
    )
    for c in (second, other, first, lat):
        store.save(c)
    assert [c.id for c in store.list()] == [first.id, lat.id, second.id, other.id]
    assert [c.id for c in store.list("plate", "forceplate")] == [first.id, second.id]
    assert [c.id for c in store.list(kind="latency")] == [lat.id]
    assert store.latest("plate", "forceplate") == second
    assert store.resolve("latest", "plate", "forceplate") == second
    assert store.resolve(first.id, "plate", "forceplate") == first
    with pytest.raises(CalibrationError, match="belongs to device plate2"):
        store.resolve(other.id, "plate", "forceplate")
    with pytest.raises(CalibrationError, match="is a latency calibration"):
        store.resolve(lat.id, "plate", "forceplate")
    with pytest.raises(CalibrationError, match="run `nmcore calibrate imu` first"):
        store.resolve("latest", "plate", "imu")


def test_mean_sem_is_honest_for_white_and_correlated_noise() -> None:
    rng = np.random.default_rng(0)
    z_white, z_corr = [], []
    for _ in range(300):
        white = rng.standard_normal(2000)
        m, s = mean_sem(white)
        z_white.append(m[0] / s[0])
        corr = np.convolve(rng.standard_normal(2100), np.ones(20) / 20, mode="valid")[:2000]
        m, s = mean_sem(corr)
        z_corr.append(m[0] / s[0])
        # sd/sqrt(n) would understate the correlated SE by ~sqrt(20)
        assert s[0] > 2.5 * corr.std() / np.sqrt(2000)
    for z in (np.array(z_white), np.array(z_corr)):
        assert (np.abs(z) <= 3).mean() >= 0.97
        assert 0.7 < (z * z).mean() < 1.6
    # short records fall back to sd / sqrt(n); mean_cov agrees with mean_sem on the diagonal
    m, s = mean_sem(np.array([1.0, 2.0, 3.0]))
    assert s[0] == pytest.approx(np.std([1, 2, 3], ddof=1) / np.sqrt(3))
    x = rng.standard_normal((1000, 3))
    _, cov = mean_cov(x)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), mean_sem(x)[1])


def test_saved_file_is_complete_before_it_appears(tmp_path: Path) -> None:
    # the temporary file lives in the same directory (same filesystem: link is atomic) and
    # starts with a dot, so ids() never sees it
    store = CalibrationStore(tmp_path)
    (tmp_path / ".plate-forceplate-x.tmp").write_text("partial")
    assert store.ids() == set()
    cal = plate_cal()
    path = store.save(cal)
    assert os.stat(path).st_nlink == 1  # the temporary link is gone
