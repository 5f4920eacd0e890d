"""Centre of pressure (COP) from a 6-axis force plate, from load cells, or given directly.

Frames where nobody stands on the plate (vertical force at or below `min_fz_n`), and frames a
recorder dropped (all-zero rows, NaN), are excluded: their COP is NaN and `valid` is False.
They are never turned into numbers; downstream measures count them.

Axes: x is medio-lateral (ML), y is antero-posterior (AP), metres, in the plate's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nmcore.detect._sway_kernels import cop_load_cells_kernel, cop_six_axis_kernel

__all__ = [
    "DEFAULT_MIN_FZ_N",
    "WII_BALANCE_BOARD",
    "CopResult",
    "LoadCellGeometry",
    "cop_from_load_cells",
    "cop_from_six_axis",
    "cop_given",
    "rectangular_geometry",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# 50 N: well above the noise of an unloaded lab plate (a few N), well below a child's weight;
# the same threshold as the Kistler reference (|Fz| > 50 N).
DEFAULT_MIN_FZ_N = 50.0


@dataclass(frozen=True, slots=True)
class CopResult:
    """COP in metres with NaN where `valid` is False. `n_excluded` = frames not valid."""

    x_m: FloatArray
    y_m: FloatArray
    valid: BoolArray
    n_excluded: int
    algorithm: str

    @property
    def ml_m(self) -> FloatArray:
        return self.x_m

    @property
    def ap_m(self) -> FloatArray:
        return self.y_m


@dataclass(frozen=True, slots=True)
class LoadCellGeometry:
    """Where each load cell sits on the plate (metres, plate frame: x = ML, y = AP)."""

    name: str
    cell_names: tuple[str, ...]
    x_m: tuple[float, ...]
    y_m: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.cell_names)
        if n < 3 or len(self.x_m) != n or len(self.y_m) != n:
            raise ValueError(
                f"LoadCellGeometry {self.name!r}: cell_names, x_m and y_m need the same length "
                f">= 3 (got {n}, {len(self.x_m)}, {len(self.y_m)})"
            )


def rectangular_geometry(
    width_m: float, length_m: float, name: str = "rectangular"
) -> LoadCellGeometry:
    """Four cells at the corners of a width (x, ML) by length (y, AP) rectangle centred on 0.

    Cell order: top_right, bottom_right, top_left, bottom_left ("top" = +y, "right" = +x).
    """
    if not (width_m > 0 and length_m > 0):
        raise ValueError(f"width_m and length_m must be > 0 (got {width_m}, {length_m})")
    hx, hy = width_m / 2.0, length_m / 2.0
    return LoadCellGeometry(
        name=name,
        cell_names=("top_right", "bottom_right", "top_left", "bottom_left"),
        x_m=(hx, hx, -hx, -hx),
        y_m=(hy, -hy, hy, -hy),
    )


# Wii Balance Board: sensor centres 433 mm apart side to side and 238 mm front to back
# (Leach et al. 2014, Sensors 14:18244), cells in the order the board's extension report
# carries them: top-right, bottom-right, top-left, bottom-left.
WII_BALANCE_BOARD = rectangular_geometry(0.433, 0.238, name="wii_balance_board")


def _as_1d(name: str, a: npt.ArrayLike) -> FloatArray:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (got shape {arr.shape})")
    return arr


def cop_from_six_axis(
    fx_n: npt.ArrayLike,
    fy_n: npt.ArrayLike,
    fz_n: npt.ArrayLike,
    mx_nm: npt.ArrayLike,
    my_nm: npt.ArrayLike,
    *,
    dz_m: float = 0.0,
    min_fz_n: float = DEFAULT_MIN_FZ_N,
) -> CopResult:
    """COP from plate forces and moments about the plate origin (AMTI/Bertec/Kistler convention).

    The z axis points down into the plate, so Fz is positive under load, and the top surface
    lies `dz_m` above the origin (dz_m >= 0; 0 when the moments are already referred to the
    surface, as in Motive's AMTI export):
        x = (-My - dz*Fx) / Fz,   y = (Mx - dz*Fy) / Fz.
    Mz is not needed for the COP. Frames with Fz <= min_fz_n are excluded.
    """
    if dz_m < 0:
        raise ValueError(
            f"dz_m must be >= 0: the distance from the plate surface down to the origin "
            f"(got {dz_m}); a plate whose origin lies above its surface is not supported"
        )
    arrays = [
        _as_1d(n, a)
        for n, a in (
            ("fx_n", fx_n),
            ("fy_n", fy_n),
            ("fz_n", fz_n),
            ("mx_nm", mx_nm),
            ("my_nm", my_nm),
        )
    ]
    n = arrays[2].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"all channels need the same length (got {[a.shape[0] for a in arrays]})")
    x = np.empty(n)
    y = np.empty(n)
    valid = np.empty(n, dtype=np.bool_)
    fx, fy, fz, mx, my = arrays
    n_valid = cop_six_axis_kernel(fx, fy, fz, mx, my, float(dz_m), float(min_fz_n), x, y, valid)
    return CopResult(x, y, valid, n - int(n_valid), f"six_axis(dz_m={dz_m}, min_fz_n={min_fz_n})")


def cop_from_load_cells(
    forces_n: npt.ArrayLike,
    geometry: LoadCellGeometry = WII_BALANCE_BOARD,
    *,
    min_fz_n: float = DEFAULT_MIN_FZ_N,
) -> CopResult:
    """COP from vertical load cells: x = sum(f_i x_i)/sum(f_i), y likewise.

    forces_n: (n_frames, n_cells) in the geometry's cell order. Frames whose total force is
    <= min_fz_n are excluded.
    """
    f = np.ascontiguousarray(forces_n, dtype=np.float64)
    n_cells = len(geometry.cell_names)
    if f.ndim != 2 or f.shape[1] != n_cells:
        raise ValueError(
            f"forces_n must be (n_frames, {n_cells}) for geometry {geometry.name!r} "
            f"with cells {geometry.cell_names} (got shape {f.shape})"
        )
    n = f.shape[0]
    x = np.empty(n)
    y = np.empty(n)
    valid = np.empty(n, dtype=np.bool_)
    n_valid = cop_load_cells_kernel(
        f, np.asarray(geometry.x_m), np.asarray(geometry.y_m), float(min_fz_n), x, y, valid
    )
    return CopResult(
        x, y, valid, n - int(n_valid), f"load_cells({geometry.name}, min_fz_n={min_fz_n})"
    )


def cop_given(
    x_m: npt.ArrayLike,
    y_m: npt.ArrayLike,
    fz_n: npt.ArrayLike | None = None,
    *,
    min_fz_n: float = DEFAULT_MIN_FZ_N,
) -> CopResult:
    """COP a device computed itself. With fz_n, frames with Fz <= min_fz_n are excluded; NaN
    coordinates are always excluded."""
    x = _as_1d("x_m", x_m).copy()
    y = _as_1d("y_m", y_m).copy()
    if x.shape != y.shape:
        raise ValueError(f"x_m and y_m need the same length (got {x.shape[0]}, {y.shape[0]})")
    valid = np.isfinite(x) & np.isfinite(y)
    if fz_n is not None:
        fz = _as_1d("fz_n", fz_n)
        if fz.shape != x.shape:
            raise ValueError(f"fz_n needs the length of x_m (got {fz.shape[0]}, {x.shape[0]})")
        with np.errstate(invalid="ignore"):
            valid &= fz > min_fz_n
    x[~valid] = np.nan
    y[~valid] = np.nan
    return CopResult(x, y, valid, int((~valid).sum()), f"given(min_fz_n={min_fz_n})")
