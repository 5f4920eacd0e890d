"""Calibration bench, force plates: offsets and gains as configured, load-cell split, masses,
subject, shake, and effective times that never rewrite generated samples."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.driver import DriverContext
from nmcore.errors import ConfigError
from nmcore.hostclock import VirtualClock
from nmcore.sim.bench import Bench
from nmcore.sim.forceplate import cop_from_plate, load_cell_split
from nmcore.sim.run import run_station, stream_record
from nmcore.sim.scenario import G_MPS2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))
import bench_harness as harness
from bench_harness import run_script, sample_times

from nmcore_drivers.sim import SimForcePlateDriver

T0_S = 30.0
make_ctx = partial(harness.make_ctx, T0_S)
IDEAL = {"kind": "ideal"}
QUIET = {"force_noise_n": 0.0, "moment_noise_nm": 0.0}


def test_load_cell_split_sums_to_fz_and_gives_the_cop() -> None:
    rng = np.random.default_rng(3)
    cells = ((0.21, 0.33), (-0.19, 0.28), (-0.22, -0.31), (0.18, -0.27))  # not a rectangle
    fz = rng.uniform(50.0, 1500.0, 200)
    cop = rng.uniform(-0.15, 0.15, (200, 2))
    mx0, my0 = cop[:, 1] * fz, -cop[:, 0] * fz
    f = load_cell_split(fz, mx0, my0, cells)
    xs = np.array([c[0] for c in cells])
    ys = np.array([c[1] for c in cells])
    np.testing.assert_allclose(f.sum(axis=1), fz, rtol=1e-12)
    np.testing.assert_allclose(f @ xs / fz, cop[:, 0], atol=1e-12)
    np.testing.assert_allclose(f @ ys / fz, cop[:, 1], atol=1e-12)
    # on the default rectangle a centred load is shared equally
    rect = ((0.2, 0.3), (-0.2, 0.3), (-0.2, -0.3), (0.2, -0.3))
    np.testing.assert_allclose(load_cell_split(fz[:1], fz[:1] * 0, fz[:1] * 0, rect), fz[0] / 4)


async def test_offsets_and_gains_appear_exactly_and_masses_take_effect_after_settle() -> None:
    ctx, clock, truth = make_ctx()
    gain = [1.01, 0.98, 1.03, 0.97, 1.02, 0.99]
    offset = [1.5, -2.0, 12.0, 0.4, -0.3, 0.05]
    opts = {"transport": IDEAL, "gain": gain, "zero_offset": offset, "plate_dz_m": 0.03, **QUIET}
    bench = Bench.install(ctx.shared, clock)
    drv = SimForcePlateDriver("fp", opts, ctx)
    t_call = T0_S + 1.0
    mass_kg, x_m, y_m = 20.0, 0.05, -0.08
    script = [(t_call, lambda: bench.place_masses("fp", [(mass_kg, x_m, y_m)]))]
    run = await run_script([drv], clock, T0_S + 3.0, script)
    rec = stream_record(run.blocks["fp.force"], 24)
    t = sample_times(truth, "fp", "fp.force", rec.index)
    act = next(a for a in bench.truth()["actions"] if a["action"] == "place_masses")
    assert act["t_call_s"] == t_call
    assert act["t_s"] == pytest.approx(t_call + 0.5)
    before, after = t < act["t_s"], t >= act["t_s"]
    assert before.sum() > 900
    assert after.sum() > 1400
    # unloaded: the raw output is the zero offset, exactly
    np.testing.assert_array_equal(rec.data[before], np.broadcast_to(offset, (before.sum(), 6)))
    w = mass_kg * G_MPS2
    true = np.array([0.0, 0.0, w, y_m * w, -x_m * w, 0.0])
    want = np.asarray(gain) * true + np.asarray(offset)
    np.testing.assert_allclose(rec.data[after], np.broadcast_to(want, (after.sum(), 6)), rtol=1e-14)
    # the truth gives what a calibration compares against
    errs = bench.truth()["devices"]["fp"]
    assert errs["gain"] == gain
    assert errs["zero_offset"] == offset
    assert drv.truth_errors() == errs
    assert act["fz_n"] == pytest.approx(w)
    assert act["cop_m"] == pytest.approx([x_m, y_m])


async def test_load_cells_read_the_same_cop_as_a_six_axis_plate_under_the_subject() -> None:
    ctx, clock, _truth = make_ctx()
    six = SimForcePlateDriver("six", {"transport": IDEAL, **QUIET}, ctx)
    cells = SimForcePlateDriver("cells", {"transport": IDEAL, "output": "load_cells", **QUIET}, ctx)
    assert [c.name for c in cells.streams[0].channels] == ["c0", "c1", "c2", "c3"]
    run = await run_station([six, cells], clock, T0_S + 4.0)
    a = stream_record(run.blocks["six.force"], 24)
    b = stream_record(run.blocks["cells.force"], 24)
    n = min(a.index.size, b.index.size)
    assert n > 3500
    fz = b.data[:n].sum(axis=1)
    np.testing.assert_allclose(fz, a.data[:n, 2], rtol=1e-12)
    xs = np.array([0.2, -0.2, -0.2, 0.2])
    ys = np.array([0.3, 0.3, -0.3, -0.3])
    cop_cells = np.column_stack([b.data[:n] @ xs / fz, b.data[:n] @ ys / fz])
    np.testing.assert_allclose(cop_cells, cop_from_plate(a.data[:n], 0.04), atol=1e-12)


async def test_load_cell_gains_and_offsets_and_a_placed_mass() -> None:
    ctx, clock, truth = make_ctx()
    cell_gain, cell_off = [1.02, 0.99, 1.01, 0.97], [3.0, -1.0, 0.5, 2.0]
    opts = {
        "transport": IDEAL,
        "output": "load_cells",
        "cell_gain": cell_gain,
        "cell_offset_n": cell_off,
        **QUIET,
    }
    bench = Bench.install(ctx.shared, clock)
    drv = SimForcePlateDriver("fp", opts, ctx)
    script = [(T0_S + 0.5, lambda: bench.place_masses("fp", [(10.0, 0.1, 0.1), (5.0, -0.1, 0.0)]))]
    run = await run_script([drv], clock, T0_S + 2.0, script)
    rec = stream_record(run.blocks["fp.force"], 24)
    t = sample_times(truth, "fp", "fp.force", rec.index)
    t_eff = bench.truth()["actions"][-1]["t_s"]
    np.testing.assert_array_equal(
        rec.data[t < t_eff], np.broadcast_to(cell_off, ((t < t_eff).sum(), 4))
    )
    f = (rec.data[t >= t_eff] - cell_off) / cell_gain
    np.testing.assert_allclose(f.sum(axis=1), 15.0 * G_MPS2, rtol=1e-12)
    xs = np.array([0.2, -0.2, -0.2, 0.2])
    np.testing.assert_allclose(
        f @ xs / (15.0 * G_MPS2), (10.0 * 0.1 - 5.0 * 0.1) / 15.0, atol=1e-12
    )
    assert drv.truth_errors()["cell_gain"] == cell_gain


async def test_mass_with_noise_subject_and_shake() -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    drv = SimForcePlateDriver(
        "fp", {"transport": {"kind": "serial"}, "gain": [1, 1, 1.05, 1, 1, 1]}, ctx
    )
    script = [
        (T0_S + 2.0, lambda: bench.place_masses("fp", [(20.0, 0.0, 0.0)])),
        (T0_S + 4.0, lambda: bench.shake_plate("fp", 15.0)),
        (T0_S + 6.0, lambda: bench.shake_plate("fp", 0.0)),
        (T0_S + 6.0, lambda: bench.subject_steps_on("fp")),
    ]
    run = await run_script([drv], clock, T0_S + 9.0, script)
    rec = stream_record(run.blocks["fp.force"], 24)
    t = sample_times(truth, "fp", "fp.force", rec.index)
    fz = rec.data[:, 2]

    def span(a: float, b: float) -> Any:
        return fz[(t >= T0_S + a) & (t < T0_S + b)]

    unloaded, mass, shaken, subject = span(0.2, 2.4), span(2.6, 4.4), span(4.6, 6.4), span(7.0, 9.0)
    assert np.mean(unloaded) == pytest.approx(0.0, abs=0.05)
    assert np.std(unloaded) == pytest.approx(0.3, rel=0.15)  # the plate's noise, nothing else
    assert np.mean(mass) == pytest.approx(20.0 * G_MPS2 * 1.05, abs=0.05)
    assert np.std(mass) < 0.4
    assert np.std(shaken) > 8.0  # a shaken plate is not a quiet one
    assert np.mean(subject) == pytest.approx(70.0 * G_MPS2 * 1.05, rel=0.005)
    # the subject's sway moves the COP; the masses did not
    cop = cop_from_plate(rec.data / [1, 1, 1.05, 1, 1, 1], 0.04)
    in_mass = (t >= T0_S + 2.6) & (t < T0_S + 4.4)
    in_subject = t >= T0_S + 7.0
    assert np.std(cop[in_mass, 1]) < 2e-3 < np.std(cop[in_subject, 1])
    with pytest.raises(ValueError, match="no emg stream"):
        bench.contract("fp", 0.5)  # an open device of the wrong kind


async def test_calibration_mode_unloads_the_plate_from_an_unwritten_time() -> None:
    """Installed mid-run: the subject leaves the plate after every sample already generated;
    those samples are the same as in a run without the bench."""
    results = []
    for with_bench in (False, True):
        ctx, clock, truth = make_ctx()
        drv = SimForcePlateDriver("fp", {"transport": IDEAL}, ctx)
        seen: dict[str, float] = {}

        def install(
            ctx: DriverContext = ctx,
            clock: VirtualClock = clock,
            seen: Any = seen,
            drv: SimForcePlateDriver = drv,
        ) -> None:
            dev = drv.device
            assert dev is not None
            seen["horizon_s"] = dev.generated_until_s()
            seen["t_cal"] = Bench.install(ctx.shared, clock).calibration_from_s

        script = [(T0_S + 1.3, install)] if with_bench else []
        run = await run_script([drv], clock, T0_S + 2.5, script)
        rec = stream_record(run.blocks["fp.force"], 24)
        results.append((rec, sample_times(truth, "fp", "fp.force", rec.index), seen))
    (plain, t, _), (cal, t2, seen) = results
    np.testing.assert_array_equal(t, t2)
    assert seen["horizon_s"] > T0_S + 1.3  # the generator had run ahead
    assert seen["t_cal"] >= seen["horizon_s"]
    old = t < seen["t_cal"]
    np.testing.assert_array_equal(cal.data[old], plain.data[old])
    assert np.all(np.abs(cal.data[~old, 2]) < 2.0)  # unloaded: noise only
    assert np.all(plain.data[~old, 2] > 500.0)


def test_plate_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="gain"):
        SimForcePlateDriver.describe("fp", {"gain": [1, 1, 0, 1, 1, 1]})
    with pytest.raises(ConfigError, match="zero_offset"):
        SimForcePlateDriver.describe("fp", {"zero_offset": [1, 2, 3]})
    with pytest.raises(ConfigError, match="one line"):
        SimForcePlateDriver.describe(
            "fp", {"output": "load_cells", "cell_positions_m": [[0, 0], [0, 1], [0, 2], [0, 3]]}
        )
    with pytest.raises(ConfigError, match="did you mean 'cell_gain'"):
        SimForcePlateDriver.describe("fp", {"cell_gains": [1, 1, 1, 1]})
    bench = Bench({}, VirtualClock(0.0))
    with pytest.raises(ValueError, match="mass_kg"):
        bench.place_masses("fp", [(-1.0, 0.0, 0.0)])
