"""Force plate calibration on synthetic plates with KNOWN offsets and gains and correlated
(AR(1)) amplifier noise: estimates within their stated uncertainty over many seeds, and the
quality checks reject a moving plate, a loaded zero, a missing mass and a misplaced COP."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from nmcore.calibration import Calibration, CalibrationStore
from nmcore.calibration import forceplate as fp
from nmcore.calibration.model import ForcePlateValues

G = 9.80665
RATE_HZ = 1000.0
CH = ["Fx", "Fy", "Fz", "Mx", "My", "Mz"]
TRUE_OFFSETS = np.array([3.1, -2.4, 15.7, 0.8, -1.2, 0.3])
TRUE_GAINS = np.array([1.0, 1.0, 1.03, 0.97, 1.02, 1.0])  # N per raw unit
NOISE_SD = np.array([0.3, 0.3, 0.6, 0.08, 0.08, 0.04])
PHI = 0.7  # noise correlation from sample to sample (filtered amplifier noise)
# (mass kg, x m, y m)
MASSES = [(10.0, 0.0, 0.0), (20.0, 0.12, 0.15), (20.0, -0.15, -0.1), (30.0, 0.1, -0.12)]
CELL_POS = [(0.2, 0.15), (0.2, -0.15), (-0.2, 0.15), (-0.2, -0.15)]
CELL_GAINS = np.array([0.98, 1.04, 1.01, 0.95])
CELL_OFFSETS = np.array([12.0, -8.0, 5.5, 20.0])


def ar_noise(rng: np.random.Generator, n: int, sd: np.ndarray, phi: float = PHI) -> np.ndarray:
    burn = 100
    white = rng.standard_normal((n + burn, len(sd)))
    x = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], white, axis=0)[burn:]
    return x * sd


def six_axis_load(mass_kg: float, x_m: float, y_m: float) -> np.ndarray:
    w = mass_kg * G
    return np.array([0.0, 0.0, w, y_m * w, -x_m * w, 0.0])


def raw_six(rng: np.random.Generator, load: np.ndarray, n: int = 4000) -> np.ndarray:
    return load / TRUE_GAINS + TRUE_OFFSETS + ar_noise(rng, n, NOISE_SD)


def cell_load(mass_kg: float, x_m: float, y_m: float) -> np.ndarray:
    """Forces on the 4 corner cells of a flexible plate: bilinear shares (they balance force
    and both moments exactly; the x*y twist term is what a perfectly rigid plate lacks, and
    what lets dead weights tell 4 gains apart)."""
    pos = np.array(CELL_POS)
    hx, hy = np.abs(pos[:, 0]), np.abs(pos[:, 1])
    share = 0.25 * (1 + x_m * np.sign(pos[:, 0]) / hx) * (1 + y_m * np.sign(pos[:, 1]) / hy)
    return mass_kg * G * share


def raw_cells(rng: np.random.Generator, load: np.ndarray, n: int = 4000) -> np.ndarray:
    return load / CELL_GAINS + CELL_OFFSETS + ar_noise(rng, n, np.full(4, 0.5))


def six_axis_session(seed: int, cop: tuple[float, float, float] | None = (25.0, 0.05, 0.1)):
    rng = np.random.default_rng(seed)
    z, z_checks = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)), CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES
    ]
    cop_step = (
        fp.mass_step(raw_six(rng, six_axis_load(*cop)), CH, RATE_HZ, *cop, label="cop")
        if cop
        else None
    )
    values, stats, checks = fp.fit(z, steps, cop_check=cop_step)
    return values, stats, z_checks + checks


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed and c.severity == "fail"]


def coverage(z: np.ndarray) -> None:
    """z: (seeds, params) of (estimate - truth) / stated sigma. Honest: ~99 % within 3 sigma
    (batch-mean SEs make z Student t with 19 dof: 99.3 %), and neither too small nor
    inflated: mean z^2 near 19/17 = 1.12 (its spread over 200 seeds is ~0.15; heavy-tailed)."""
    within = (np.abs(z) <= 3.0).mean(axis=0)
    assert np.all(within >= 0.97), within
    mean_sq = (z * z).mean(axis=0)
    assert np.all(mean_sq > 0.6), mean_sq
    assert np.all(mean_sq < 1.8), mean_sq


def test_six_axis_recovers_known_offsets_and_gains_within_stated_sigma() -> None:
    zs = []
    for seed in range(200):
        values, _, checks = six_axis_session(seed, cop=None)
        assert failed(checks) == [], (seed, failed(checks))
        off = (np.array(values.offsets) - TRUE_OFFSETS) / np.array(values.offset_sigmas)
        g = np.array(values.gains)
        gs = np.array(values.gain_sigmas)
        gains = [(g[i] - TRUE_GAINS[i]) / gs[i] for i in (2, 3, 4)]
        zs.append([*off, *gains])
    coverage(np.array(zs))


def test_six_axis_values_checks_and_notes() -> None:
    values, stats, checks = six_axis_session(1)
    assert failed(checks) == []
    assert values.layout == "six_axis"
    assert values.gain_calibrated == [False, False, True, True, True, False]
    assert values.gains[0] == values.gains[1] == values.gains[5] == 1.0
    assert any("Fx" in n and "1.0" in n for n in stats["notes"])
    assert len(values.residuals) == len(MASSES)
    for r in values.residuals:
        assert abs(r.residual_n) < 0.01 * r.expected_n
    assert values.cop_check is not None
    assert values.cop_check.error_mm < 1.0
    # the correction turns raw into physical units
    corr_load = six_axis_load(20.0, 0.12, 0.15)
    raw = corr_load / TRUE_GAINS + TRUE_OFFSETS
    corrected = np.array(values.gains) * (raw - np.array(values.offsets))
    np.testing.assert_allclose(corrected[2:5], corr_load[2:5], rtol=2e-3, atol=0.05)


def test_centre_mass_only_keeps_moment_gains_and_says_so() -> None:
    rng = np.random.default_rng(3)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    step = fp.mass_step(raw_six(rng, six_axis_load(20.0, 0.0, 0.0)), CH, RATE_HZ, 20.0, 0.0, 0.0)
    values, stats, checks = fp.fit(z, [step])
    assert failed(checks) == []
    assert values.gain_calibrated == [False, False, True, False, False, False]
    assert values.gains[3] == values.gains[4] == 1.0
    assert any(n.startswith("Mx") and "off centre" in n for n in stats["notes"])
    assert abs(values.gains[2] - TRUE_GAINS[2]) <= 3 * values.gain_sigmas[2]


def test_zero_rejects_a_moving_plate() -> None:
    rng = np.random.default_rng(4)
    data = raw_six(rng, np.zeros(6))
    t = np.arange(data.shape[0]) / RATE_HZ
    data[:, 2] += 15.0 * np.sin(2 * np.pi * 1.5 * t)  # someone rocking the plate
    data[:, 3] += 3.0 * np.sin(2 * np.pi * 1.5 * t)
    step, checks = fp.zero(data, CH, RATE_HZ)
    assert not step.still
    bad = [c for c in checks if not c.passed]
    assert [c.name for c in bad] == ["still:zero"]
    assert "Fz SD" in bad[0].message
    assert "record the step again" in bad[0].message


def test_zero_rejects_a_loaded_plate_and_a_moved_offset() -> None:
    rng = np.random.default_rng(5)
    _, checks = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    assert failed(checks) == []
    _, checks = fp.zero(raw_six(rng, six_axis_load(20.0, 0.0, 0.0)), CH, RATE_HZ)
    bad = [c for c in checks if not c.passed]
    assert [c.name for c in bad] == ["unloaded"]
    assert "take everything off the plate" in bad[0].message
    assert bad[0].value is not None
    assert bad[0].value > 190
    # within the absolute limit, but 8 N more than at the previous calibration
    values, _, _ = six_axis_session(6, cop=None)
    _, checks = fp.zero(raw_six(rng, np.array([0, 0, 12.0, 0, 0, 0])), CH, RATE_HZ, previous=values)
    assert "offset_change" in failed(checks)
    _, checks = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ, previous=values)
    assert failed(checks) == []


def test_fit_rejects_a_missing_mass_naming_the_step() -> None:
    rng = np.random.default_rng(7)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)), CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES[:2]
    ]
    # the technician entered 30 kg but put nothing on the plate
    steps.append(fp.mass_step(raw_six(rng, np.zeros(6)), CH, RATE_HZ, 30.0, 0.1, -0.12))
    values, _, checks = fp.fit(z, steps)
    names = failed(checks)
    assert names == ["mass_present:mass 30 kg at (+0.100, -0.120) m"]
    msg = next(c.message for c in checks if c.name == names[0])
    assert "30 kg" in msg
    assert "not on the plate" in msg
    # the bad step is left out: the gain is still right
    assert abs(values.gains[2] - TRUE_GAINS[2]) <= 3 * values.gain_sigmas[2]


def test_fit_rejects_a_wrong_mass_value_through_the_residual() -> None:
    rng = np.random.default_rng(8)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)), CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES
    ]
    # 22 kg on the plate, 20 kg entered: 10 % off, within the missing-mass range
    steps[1] = fp.mass_step(
        raw_six(rng, six_axis_load(22.0, 0.12, 0.15)), CH, RATE_HZ, 20.0, 0.12, 0.15
    )
    _, _, checks = fp.fit(z, steps)
    assert any(n.startswith("residual:") for n in failed(checks))


def test_moving_mass_step_fails() -> None:
    rng = np.random.default_rng(9)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    data = raw_six(rng, six_axis_load(20.0, 0.1, 0.1))
    data[: data.shape[0] // 2, 2] -= 40.0  # placed halfway through the recording
    step = fp.mass_step(data, CH, RATE_HZ, 20.0, 0.1, 0.1)
    _, _, checks = fp.fit(z, [step])
    assert f"still:{step.label}" in failed(checks)


def test_cop_check_reports_error_in_mm_and_fails_when_misplaced() -> None:
    rng = np.random.default_rng(10)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)), CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES
    ]
    # the mass sits 8 mm further in x than the technician says
    cop = fp.mass_step(
        raw_six(rng, six_axis_load(25.0, 0.058, 0.1)), CH, RATE_HZ, 25.0, 0.05, 0.1, label="cop"
    )
    values, _, checks = fp.fit(z, steps, cop_check=cop)
    assert values.cop_check is not None
    assert values.cop_check.error_mm == pytest.approx(8.0, abs=0.5)
    assert "cop_position" in failed(checks)


def test_reversed_polarity_fails_and_a_missing_cop_mass_is_named() -> None:
    rng = np.random.default_rng(13)
    z, _ = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    flip = np.array([1, 1, 1, -1, 1, 1.0])  # Mx wired with the wrong sign
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)) * flip, CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES
    ]
    empty = fp.mass_step(raw_six(rng, np.zeros(6)), CH, RATE_HZ, 25.0, 0.05, 0.1, label="cop")
    z_flipped = z.model_copy(update={"means": (z.mean_array() * flip).tolist()})
    values, _, checks = fp.fit(z_flipped, steps, cop_check=empty)
    assert values.gains[3] < 0
    names = failed(checks)
    assert "gain_sign:Mx" in names
    assert "mass_present:cop" in names
    assert "cop_position" in names
    assert "polarity" in next(c.message for c in checks if c.name == "gain_sign:Mx")


def test_load_cells_recover_per_cell_gains_within_stated_sigma() -> None:
    positions = [(20.0, 0.15, 0.1), (20.0, 0.15, -0.1), (20.0, -0.15, 0.1), (20.0, -0.15, -0.1)]
    positions += [(30.0, 0.0, 0.0)]
    zs = []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        names = ["c0", "c1", "c2", "c3"]
        # raw load-cell offsets are arbitrary (ADC counts): no absolute unloaded check
        z, z_checks = fp.zero(raw_cells(rng, np.zeros(4)), names, RATE_HZ, max_fz_n=None)
        steps = [
            fp.mass_step(raw_cells(rng, cell_load(m, x, y)), names, RATE_HZ, m, x, y)
            for m, x, y in positions
        ]
        cop = fp.mass_step(
            raw_cells(rng, cell_load(25.0, 0.05, -0.05)), names, RATE_HZ, 25.0, 0.05, -0.05
        )
        values, _, checks = fp.fit(z, steps, cell_positions_m=CELL_POS, cop_check=cop)
        assert failed(z_checks + checks) == [], (seed, failed(z_checks + checks))
        assert values.cop_check is not None
        assert values.cop_check.error_mm < 2.0
        zs.append((np.array(values.gains) - CELL_GAINS) / np.array(values.gain_sigmas))
    coverage(np.array(zs))


def test_load_cells_need_loadings_that_separate_the_cells() -> None:
    rng = np.random.default_rng(11)
    names = ["c0", "c1", "c2", "c3"]
    z, _ = fp.zero(raw_cells(rng, np.zeros(4)), names, RATE_HZ)
    steps = [
        fp.mass_step(raw_cells(rng, cell_load(m, 0.0, 0.0)), names, RATE_HZ, m, 0.0, 0.0)
        for m in (10.0, 20.0, 30.0, 40.0)
    ]
    values, _, checks = fp.fit(z, steps, cell_positions_m=CELL_POS)
    assert "gain_fit" in failed(checks)
    assert values.gain_calibrated == [False] * 4
    with pytest.raises(ValueError, match="cell_positions_m"):
        fp.fit(z, steps)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"\(n_samples, 6\)"):
        fp.zero(np.zeros((100, 5)), CH, RATE_HZ)
    data = np.zeros((100, 6))
    data[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fp.zero(data, CH, RATE_HZ)
    with pytest.raises(ValueError, match="mass_kg"):
        fp.mass_step(np.zeros((100, 6)), CH, RATE_HZ, 0.0, 0.0, 0.0)


def test_values_roundtrip_json() -> None:
    values, _, _ = six_axis_session(12)
    again = ForcePlateValues.model_validate_json(values.model_dump_json())
    assert again == values


def test_full_session_saves_loads_and_corrects(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    z, z_checks = fp.zero(raw_six(rng, np.zeros(6)), CH, RATE_HZ)
    steps = [
        fp.mass_step(raw_six(rng, six_axis_load(m, x, y)), CH, RATE_HZ, m, x, y)
        for m, x, y in MASSES
    ]
    values, stats, checks = fp.fit(z, steps)
    store = CalibrationStore(tmp_path)
    now = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    cal = Calibration.create(
        values,
        device_id="plate",
        stream_id="plate.force",
        channels=CH,
        now_utc=now,
        stats=stats,
        checks=z_checks + checks,
        taken=store.ids(),
    )
    loaded = store.load(store.save(cal).stem)
    assert loaded == cal
    corr = loaded.correction()
    assert corr is not None
    load = six_axis_load(30.0, -0.1, 0.2)
    out = corr.apply((load / TRUE_GAINS + TRUE_OFFSETS)[None, :])[0]
    np.testing.assert_allclose(out[2:5], load[2:5], rtol=1e-3, atol=0.05)
