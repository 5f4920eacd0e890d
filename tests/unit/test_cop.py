"""COP from a 6-axis plate, from load cells, or given: checked against a real AMTI recording
(shared/data/forceplate/amti_quiet_standing.csv, which carries the recorder's own Cx, Cy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmcore.detect._sway_kernels import cop_load_cells_kernel, cop_six_axis_kernel
from nmcore.detect.cop import (
    WII_BALANCE_BOARD,
    LoadCellGeometry,
    cop_from_load_cells,
    cop_from_six_axis,
    cop_given,
    rectangular_geometry,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "forceplate"
AMTI_HEADER_LINES = 35  # 31-line Motive header, blank lines, then the column names
AMTI_DECIMALS_UNIT = 1e-6  # every AMTI column is written with 6 decimals


@pytest.fixture(scope="module")
def amti() -> np.ndarray:
    return np.loadtxt(DATA / "amti_quiet_standing.csv", delimiter=",", skiprows=AMTI_HEADER_LINES)


def test_amti_cop_from_moments_equals_recorded_cop(amti: np.ndarray) -> None:
    fx, fy, fz, mx, my, _mz, cx, cy = (amti[:, i] for i in range(3, 11))
    cop = cop_from_six_axis(fx, fy, fz, mx, my, dz_m=0.0, min_fz_n=50.0)
    v = cop.valid
    # The file rounds Cx (and the channels it came from) to 1e-6: the recorded Cx can differ
    # from -My/Fz by half a unit plus the rounding of My and Fz carried through the division.
    # One frame (Fz 575.906 N, My -41.146484 N m) is 2.4e-9 m beyond that: the recorder
    # evidently computed Cx in single precision, so allow one float32 rounding (2**-24 |C|).
    half = AMTI_DECIMALS_UNIT / 2
    f32 = 2.0**-24
    bound_x = half + half / fz[v] + np.abs(my[v]) * half / fz[v] ** 2 + f32 * np.abs(cx[v])
    bound_y = half + half / fz[v] + np.abs(mx[v]) * half / fz[v] ** 2 + f32 * np.abs(cy[v])
    err_x = np.abs(cop.x_m[v] - cx[v])
    err_y = np.abs(cop.y_m[v] - cy[v])
    assert np.all(err_x <= bound_x * (1 + 1e-9))
    assert np.all(err_y <= bound_y * (1 + 1e-9))
    # and the rounding is the whole story: errors fill the half-unit, no systematic offset
    assert 4.9e-7 < err_x.max() < 5.1e-7
    assert abs(float(np.mean(cop.x_m[v] - cx[v]))) < 2e-8
    # AP = Cy, ML = Cx
    np.testing.assert_array_equal(cop.ap_m, cop.y_m)
    np.testing.assert_array_equal(cop.ml_m, cop.x_m)


def test_amti_dropped_frames_are_flagged_never_numbers(amti: np.ndarray) -> None:
    fz = amti[:, 5]
    dropped = np.all(amti[:, 3:11] == 0.0, axis=1)
    assert dropped.sum() == 7  # what the README says the file holds
    cop = cop_from_six_axis(*(amti[:, i] for i in (3, 4, 5, 6, 7)))
    np.testing.assert_array_equal(cop.valid, fz > 50.0)
    np.testing.assert_array_equal(~cop.valid, dropped)
    assert cop.n_excluded == 7
    assert np.isnan(cop.x_m[dropped]).all()
    assert np.isnan(cop.y_m[dropped]).all()
    assert np.isfinite(cop.x_m[~dropped]).all()


def _moments_about_origin(
    x_m: np.ndarray, y_m: np.ndarray, dz_m: float, f: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """M = r x F for a force F applied at (x, y) on a surface dz above the origin, in a frame
    whose z axis points down (so the surface is at z = -dz, and Fz > 0 under load)."""
    r = np.stack([x_m, y_m, np.full_like(x_m, -dz_m)], axis=1)
    m = np.cross(r, f)
    return m[:, 0], m[:, 1]


@pytest.mark.parametrize("dz_m", [0.0, 0.04, 0.057])
def test_six_axis_recovers_point_of_application_with_plate_thickness(dz_m: float) -> None:
    rng = np.random.default_rng(3)
    n = 500
    x = rng.uniform(-0.2, 0.2, n)
    y = rng.uniform(-0.3, 0.3, n)
    f = np.stack([rng.normal(0, 30, n), rng.normal(0, 30, n), rng.uniform(100, 1500, n)], axis=1)
    mx, my = _moments_about_origin(x, y, dz_m, f)
    cop = cop_from_six_axis(f[:, 0], f[:, 1], f[:, 2], mx, my, dz_m=dz_m)
    np.testing.assert_allclose(cop.x_m, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cop.y_m, y, rtol=0, atol=1e-12)
    if dz_m > 0:  # ignoring the thickness would be wrong by dz * Fh / Fz
        wrong = cop_from_six_axis(f[:, 0], f[:, 1], f[:, 2], mx, my, dz_m=0.0)
        assert np.abs(wrong.x_m - x).max() > 1e-3


def test_six_axis_cop_is_force_scale_invariant(amti: np.ndarray) -> None:
    ch = [amti[4000:5000, i] for i in (3, 4, 5, 6, 7)]
    a = cop_from_six_axis(*ch, dz_m=0.01)
    b = cop_from_six_axis(*(c * 3.5 for c in ch), dz_m=0.01)
    np.testing.assert_allclose(b.x_m, a.x_m, rtol=1e-13)
    np.testing.assert_allclose(b.y_m, a.y_m, rtol=1e-13)


def test_six_axis_threshold_and_nan_channels() -> None:
    fz = np.array([600.0, 49.0, 50.0, 51.0, np.nan, 700.0, -600.0])
    fx = np.zeros(7)
    fy = np.zeros(7)
    fx[5] = np.nan
    mx = np.full(7, 6.0)
    my = np.full(7, -3.0)
    cop = cop_from_six_axis(fx, fy, fz, mx, my, min_fz_n=50.0)
    np.testing.assert_array_equal(cop.valid, [True, False, False, True, False, False, False])
    assert cop.n_excluded == 5
    assert cop.x_m[0] == pytest.approx(3.0 / 600.0)
    assert cop.y_m[3] == pytest.approx(6.0 / 51.0)


def test_six_axis_input_errors_name_the_field() -> None:
    one = np.ones(5)
    with pytest.raises(ValueError, match="dz_m"):
        cop_from_six_axis(one, one, one, one, one, dz_m=-0.01)
    with pytest.raises(ValueError, match="same length"):
        cop_from_six_axis(one, one, np.ones(4), one, one)
    with pytest.raises(ValueError, match="fx_n must be 1-D"):
        cop_from_six_axis(np.ones((5, 2)), one, one, one, one)


def test_wii_balance_board_geometry_and_corner_loads() -> None:
    g = WII_BALANCE_BOARD
    assert g.cell_names == ("top_right", "bottom_right", "top_left", "bottom_left")
    assert max(g.x_m) - min(g.x_m) == pytest.approx(0.433)
    assert max(g.y_m) - min(g.y_m) == pytest.approx(0.238)
    loads = np.array(
        [
            [400.0, 0, 0, 0],  # all on top-right
            [0, 0, 0, 400.0],  # all on bottom-left
            [100.0, 100.0, 100.0, 100.0],  # centred
            [300.0, 300.0, 100.0, 100.0],  # right-heavy
            [5.0, 5.0, 5.0, 5.0],  # nobody on the board
        ]
    )
    cop = cop_from_load_cells(loads, g, min_fz_n=50.0)
    np.testing.assert_allclose(cop.x_m[:4], [0.2165, -0.2165, 0.0, 0.2165 / 2], atol=1e-15)
    np.testing.assert_allclose(cop.y_m[:4], [0.119, -0.119, 0.0, 0.0], atol=1e-15)
    assert not cop.valid[4]
    assert np.isnan(cop.x_m[4])
    assert cop.n_excluded == 1


def test_load_cells_generic_geometry_matches_weighted_mean() -> None:
    rng = np.random.default_rng(7)
    g = LoadCellGeometry(
        name="triangle", cell_names=("a", "b", "c"), x_m=(0.0, 0.3, -0.1), y_m=(0.2, -0.1, -0.2)
    )
    f = rng.uniform(0, 300, (200, 3))
    cop = cop_from_load_cells(f, g, min_fz_n=10.0)
    ref_x = f @ np.array(g.x_m) / f.sum(axis=1)
    ref_y = f @ np.array(g.y_m) / f.sum(axis=1)
    np.testing.assert_allclose(cop.x_m, ref_x, rtol=1e-13)
    np.testing.assert_allclose(cop.y_m, ref_y, rtol=1e-13)
    with pytest.raises(ValueError, match=r"\(n_frames, 3\)"):
        cop_from_load_cells(f[:, :2], g)
    with pytest.raises(ValueError, match="same length"):
        LoadCellGeometry(name="bad", cell_names=("a", "b", "c"), x_m=(0.0, 1.0), y_m=(0, 0, 0))
    with pytest.raises(ValueError, match="width_m"):
        rectangular_geometry(0.0, 0.2)


def test_cop_given_excludes_nan_and_unloaded_frames() -> None:
    x = np.array([0.01, np.nan, 0.02, 0.03])
    y = np.array([0.0, 0.1, 0.2, 0.3])
    fz = np.array([500.0, 500.0, 10.0, 500.0])
    cop = cop_given(x, y, fz, min_fz_n=50.0)
    np.testing.assert_array_equal(cop.valid, [True, False, False, True])
    assert np.isnan(cop.y_m[1])
    assert np.isnan(cop.y_m[2])
    assert cop.n_excluded == 2
    assert cop_given(x, y).n_excluded == 1


def _six_axis_numpy(
    fx: np.ndarray,
    fy: np.ndarray,
    fz: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    dz: float,
    thr: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (fz > thr) & np.isfinite(fx + fy + fz + mx + my)
        x = np.where(ok, (-my - dz * fx) / fz, np.nan)
        y = np.where(ok, (mx - dz * fy) / fz, np.nan)
    return x, y, ok


@pytest.mark.parametrize("impl", ["jit", "py_func"])
def test_cop_kernels_match_numpy_reference(impl: str) -> None:
    rng = np.random.default_rng(11)
    n = 400
    ch = [
        rng.normal(0, 20, n),
        rng.normal(0, 20, n),
        rng.uniform(-100, 900, n),
        rng.normal(0, 30, n),
        rng.normal(0, 30, n),
    ]
    ch[3][5] = np.nan
    six = cop_six_axis_kernel if impl == "jit" else cop_six_axis_kernel.py_func  # type: ignore[attr-defined]
    x, y, v = np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_)
    fx, fy, fz, mx, my = ch
    n_valid = six(fx, fy, fz, mx, my, 0.03, 50.0, x, y, v)
    rx, ry, rv = _six_axis_numpy(fx, fy, fz, mx, my, 0.03, 50.0)
    np.testing.assert_array_equal(v, rv)
    assert n_valid == rv.sum()
    np.testing.assert_allclose(x, rx, rtol=1e-14, equal_nan=True)
    np.testing.assert_allclose(y, ry, rtol=1e-14, equal_nan=True)

    cells = rng.uniform(-5, 200, (n, 4))
    cells[9, 2] = np.inf
    lc = cop_load_cells_kernel if impl == "jit" else cop_load_cells_kernel.py_func  # type: ignore[attr-defined]
    gx = np.asarray(WII_BALANCE_BOARD.x_m)
    gy = np.asarray(WII_BALANCE_BOARD.y_m)
    n_valid = lc(cells, gx, gy, 50.0, x, y, v)
    ok = np.asarray(np.isfinite(cells).all(axis=1))
    ok[ok] = cells[ok].sum(axis=1) > 50.0
    np.testing.assert_array_equal(v, ok)
    assert n_valid == ok.sum()
    good = cells[ok]
    np.testing.assert_allclose(x[ok], good @ gx / good.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(y[ok], good @ gy / good.sum(axis=1), rtol=1e-12)
    assert np.isnan(x[~ok]).all()
