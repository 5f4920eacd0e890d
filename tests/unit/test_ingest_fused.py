"""The daemon's fused EMG ingest (ring push + EMG chain in one jitted call) gives exactly what
the two-call path gives: ring contents, counters, onsets, trial results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.config import load_station
from nmcore.model import SampleBlock
from nmcore.runtime.daemon import Daemon

SIM_RIG = Path(__file__).resolve().parents[2] / "src/nmcore/configs_builtin/sim-rig.toml"
EMG = "emg.emg"


def _lossy(daemon: Daemon) -> None:
    """Drop every 37th EMG block, repeat every 53rd, swap two every 71st (the same blocks
    in every run: counted per stream), so the gap, duplicate and late paths run too."""
    n = {"count": 0}
    held: list[SampleBlock] = []
    ingest = daemon.pipeline.ingest

    def tap(block: SampleBlock) -> None:
        if block.stream_id != EMG:
            ingest(block)
            return
        n["count"] += 1
        k = n["count"]
        if held:
            ingest(block)
            ingest(held.pop())  # late: already counted missing
            return
        if k % 71 == 0:
            held.append(block)
            return
        if k % 37 == 0:
            return
        ingest(block)
        if k % 53 == 0:
            ingest(block)

    for sup in daemon.supervisors.values():
        sup._on_block = tap


async def _run(*, fused: bool, lossy: bool, seconds: float = 12.0) -> Daemon:
    station = load_station(SIM_RIG)
    daemon = Daemon(station, realtime=False, publish=False)
    st = daemon.pipeline.streams[EMG]
    if not fused:
        st.chain = None  # the two-call path: ring.push, then the engine feeds the detector
    if lossy:
        _lossy(daemon)
    await daemon.run(duration_s=seconds)
    return daemon


def _strip(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if o.get("type") != "status"]


@pytest.mark.parametrize("lossy", [False, True], ids=["clean", "lossy"])
async def test_fused_ingest_matches_two_call_path(lossy: bool) -> None:
    fused = await _run(fused=True, lossy=lossy)
    plain = await _run(fused=False, lossy=lossy)
    a, b = fused.pipeline.streams[EMG], plain.pipeline.streams[EMG]
    assert a.chain is not None
    assert b.chain is None
    assert a.counters.fused_blocks > 0.9 * a.counters.blocks  # the steady state is fused
    assert b.counters.fused_blocks == 0
    for x, y in zip(a.ring.state, b.ring.state, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.ring.head == b.ring.head
    assert {**vars_of(a.counters), "fused_blocks": 0} == vars_of(b.counters)
    det_a, det_b = fused.trials._emg, plain.trials._emg
    assert det_a is not None
    assert det_b is not None
    np.testing.assert_array_equal(det_a.istate, det_b.istate)
    np.testing.assert_array_equal(det_a.work, det_b.work)
    out_a, out_b = _strip(fused.outputs), _strip(plain.outputs)
    assert out_a == out_b
    onsets = [o for o in out_a if o.get("type") == "onset"]
    results = [o for o in out_a if o.get("type") == "trial_result"]
    assert onsets
    assert results
    if lossy:
        assert a.counters.missing_samples > 0
        assert a.counters.duplicate_samples > 0
        assert a.counters.late_samples > 0
        assert any(o.get("type") == "gap" and o.get("source") == EMG for o in out_a)


def vars_of(counters: Any) -> dict[str, int]:
    return {name: getattr(counters, name) for name in counters.__slots__}


async def test_subset_of_channels_or_emg_trigger_keeps_the_two_call_path() -> None:
    station = load_station(SIM_RIG)
    emg = station.detectors.emg_onset
    assert emg is not None
    subset = emg.model_copy(update={"channels": ["soleus", "tibialis_anterior"]})
    detectors = station.detectors.model_copy(update={"emg_onset": subset})
    daemon = Daemon(station.model_copy(update={"detectors": detectors}), realtime=False)
    assert daemon.pipeline.streams[EMG].chain is None


def _four_channel_fused_stream() -> tuple[Any, Any]:
    """A 4-channel 2 kHz EMG stream state with a detector chain bound (a 1 s ring)."""
    from nmcore.detect.emg import EmgOnsetDetector
    from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
    from nmcore.runtime.pipeline import Pipeline

    desc = StreamDescriptor(
        EMG, "emg", StreamKind.EMG, 2000.0, tuple(ChannelSpec(f"c{i}", "uV") for i in range(4))
    )
    st = Pipeline([desc], history_s=1.0, emit=lambda _e: None).streams[EMG]
    det = EmgOnsetDetector(2000.0, 4)
    st.chain = (det.work, det.istate, det.hist)
    return st, det


def test_push_chain_fuses_only_the_compiled_array_type() -> None:
    """A read-only or strided block would need a new compiled specialisation inside the
    event loop: it takes the two-call path instead, with the same ring contents."""
    st, det = _four_channel_fused_stream()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 4))
    t = np.arange(32.0)
    assert st.push_chain(0, x, t).written == 32
    assert (st.counters.fused_blocks, st.chain_events, det.head) == (1, 0, 32)
    wide = rng.standard_normal((32, 8))
    frozen = x.copy()
    frozen.flags.writeable = False
    for data in (wide[:, ::2], frozen):  # strided, read-only
        st.chain_events = -1
        res = st.push_chain(st.ring.head, data, t + st.ring.head)
        assert res.written == 32
        assert st.chain_events == -1  # the chain did not run: the listener feeds it
        assert st.counters.fused_blocks == 1
        np.testing.assert_array_equal(st.ring.latest(32).data, data)
    assert det.head == 32


def test_push_chain_entry_point_refuses_every_other_block_type() -> None:
    """The fused call skips numba's dispatch, so the facade's own check is all that keeps a
    block of another type from being misread: byte-swapped, unaligned, read-only times,
    a non-int index all take the two-call path with the same ring contents; a wrong
    number of dimensions is refused by the ring. Replacing the chain rebinds the call."""
    st, det = _four_channel_fused_stream()
    rng = np.random.default_rng(9)
    t = np.arange(32.0)
    assert st.push_chain(0, rng.standard_normal((32, 4)), t).written == 32
    assert st.counters.fused_blocks == 1
    raw = bytearray(32 * 4 * 8 + 1)
    unaligned = np.frombuffer(raw, dtype=np.uint8, offset=1).view(np.float64).reshape(32, 4)
    unaligned[...] = rng.standard_normal((32, 4))
    assert not unaligned.flags.aligned
    frozen_t = np.arange(32.0)
    frozen_t.flags.writeable = False
    x = rng.standard_normal((32, 4))
    # byte-swapped: numba's dtype number is the same, the bytes are not; the ring refuses it
    for data, swap_t in ((x.astype(">f8"), False), (x, True)):
        head = st.ring.head
        times = (t + head).astype(">f8") if swap_t else t + head
        with pytest.raises(ValueError, match="push needs data of shape"):
            st.push_chain(head, data, times)
        assert (st.ring.head, st.counters.fused_blocks, det.head) == (head, 1, head)
    cases: list[tuple[Any, np.ndarray, np.ndarray]] = [
        (0, unaligned, t),
        (0, x, frozen_t),
        (np.int64(0), x, t),
    ]
    for first, data, times in cases:
        head = st.ring.head
        st.chain_events = -1
        times = times + head if times is t else times
        res = st.push_chain(first + head, data, times)
        assert res.written == 32
        assert st.chain_events == -1  # not fused: the listener feeds the chain
        assert st.counters.fused_blocks == 1
        np.testing.assert_array_equal(st.ring.latest(32).data, data)
        np.testing.assert_array_equal(st.ring.latest(32).t_s, times)
    with pytest.raises(ValueError, match="push needs data of shape"):
        st.push_chain(st.ring.head, np.zeros((32, 4, 1)), t)
    with pytest.raises(ValueError, match="push needs data of shape"):
        st.push_chain(st.ring.head, np.zeros(32), t)
    # a new chain (a new trial's detector) at the ring's head: the fused call uses its arrays
    from nmcore.detect import _emg_kernels as emg_k
    from nmcore.detect.emg import EmgOnsetDetector

    det2 = EmgOnsetDetector(2000.0, 4)
    det2.istate[:, emg_k.I_HEAD] = st.ring.head  # the detector continues the ring
    st.chain = (det2.work, det2.istate, det2.hist)
    head = st.ring.head
    assert st.push_chain(head, x, t + head).written == 32
    assert (st.counters.fused_blocks, st.chain_events, det2.head) == (2, 0, head + 32)
    st.chain = None
    assert st.push_chain(st.ring.head, x, t).written == 32
    assert st.counters.fused_blocks == 2


def test_a_chain_that_cannot_bind_never_leaves_the_old_one_running() -> None:
    """Replacing the chain with arrays the kernel cannot take (a read-only history) fails
    loudly on every block, naming the array; the previous chain's detector is never fed in
    its place."""
    from nmcore.detect import _emg_kernels as emg_k
    from nmcore.detect.emg import EmgOnsetDetector

    st, det = _four_channel_fused_stream()
    rng = np.random.default_rng(13)
    t = np.arange(32.0)
    assert st.push_chain(0, rng.standard_normal((32, 4)), t).written == 32
    assert det.head == 32
    bad = EmgOnsetDetector(2000.0, 4)
    bad.istate[:, emg_k.I_HEAD] = 32
    bad.hist.flags.writeable = False
    st.chain = (bad.work, bad.istate, bad.hist)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"chain hist must be .* writeable"):
            st.push_chain(32, rng.standard_normal((32, 4)), t + 32)
        assert det.head == 32  # the old detector saw nothing
    assert st.ring.head == 32


def test_a_rebound_chain_keeps_its_arrays_alive() -> None:
    """The fused call reaches the chain's arrays through their addresses: after a rebind,
    with every other reference to the old and new detectors dropped and collected, blocks
    still run the new chain (its arrays are held beside the table)."""
    import gc

    from nmcore.detect import _emg_kernels as emg_k
    from nmcore.detect.emg import EmgOnsetDetector

    st, det = _four_channel_fused_stream()
    rng = np.random.default_rng(17)
    t = np.arange(32.0)
    assert st.push_chain(0, rng.standard_normal((32, 4)), t).written == 32
    new = EmgOnsetDetector(2000.0, 4)
    new.istate[:, emg_k.I_HEAD] = 32
    st.chain = (new.work, new.istate, new.hist)
    istate = new.istate
    del det, new
    gc.collect()
    for k in range(1, 4):
        junk = [np.full((64, 4), -1.0) for _ in range(64)]  # reuse freed memory, if any
        assert st.push_chain(32 * k, rng.standard_normal((32, 4)), t + 32 * k).written == 32
        del junk
    assert (st.counters.fused_blocks, st.chain_events) == (4, 0)
    np.testing.assert_array_equal(istate[:, emg_k.I_HEAD], 128)
