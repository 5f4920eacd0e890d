"""SwayStage on a ring with gaps: what a sliding window with nothing received gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from nmcore.config.models import CopSwayConfig
from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.runtime.pipeline import Pipeline
from nmcore.trials import SwayStage

RATE_HZ = 100.0


def _stage() -> tuple[SwayStage, Any, list[dict[str, Any]]]:
    names = ("Fx", "Fy", "Fz", "Mx", "My", "Mz")
    desc = StreamDescriptor(
        "plate.force",
        "plate",
        StreamKind.FORCE,
        RATE_HZ,
        tuple(ChannelSpec(n, "N" if n.startswith("F") else "N.m") for n in names),
    )
    pipeline = Pipeline([desc], history_s=60.0, emit=lambda _event: None)
    st = pipeline.streams["plate.force"]
    out: list[dict[str, Any]] = []
    cfg = CopSwayConfig(stream="plate.force", window_s=2.0)
    return SwayStage(cfg, pipeline.streams, out.append), st, out


def _standing(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros((n, 6))
    x[:, 2] = 700.0 + rng.normal(0.0, 2.0, n)  # Fz: someone on the plate
    x[:, 3:5] = rng.normal(0.0, 3.0, (n, 2))
    return x


def test_a_window_with_nothing_received_gives_no_sway_result() -> None:
    # its end time is unknown (NaN): published, it broke the schema (t_s null) and, before
    # the stamp was mended, stopped the daemon
    stage, st, out = _stage()
    rng = np.random.default_rng(3)
    st.ring.push(0, _standing(300, rng), np.arange(300) / RATE_HZ)
    st.ring.push(900, _standing(300, rng), np.arange(900, 1200) / RATE_HZ)  # 300..899 missing
    stage.measure(400, 600)  # wholly inside the gap
    assert out == []
    stage.measure(100, 300)
    stage.measure(800, 1000)  # half in the gap: measured, with its end time
    assert len(out) == 2
    assert all(np.isfinite(r["t_s"]) for r in out)
    assert out[1]["n_excluded"] == 100  # the missing half is counted, not hidden
