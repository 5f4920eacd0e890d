"""OpenBCI Cyton packet decoder: byte vectors written by hand from the published format
(docs.openbci.com "Cyton Data Format"), the kernel against a numpy reference and its own
py_func, resynchronisation, and the driver's options and descriptors (no I/O)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from nmcore.buffer.sequence import contiguous_runs as split_runs
from nmcore.driver import Driver, DriverContext
from nmcore.errors import ConfigError
from nmcore.hostclock import MonotonicClock
from nmcore.model import StreamKind
from nmcore_drivers.openbci import CytonDriver
from nmcore_drivers.openbci import _kernels as k
from nmcore_drivers.openbci.decoder import CytonDecoder, encode_packet, uv_per_count

# header, sample number 5, eight 24-bit big-endian two's complement channels, 3 x int16 aux
# (accelerometer), footer 0xC0
HAND_C0 = bytes.fromhex("A005000001FFFFFF7FFFFF800000001000FFF000123456EDCBAA0001FFFF8000C0")
HAND_C0_COUNTS = [1, -1, 8388607, -8388608, 4096, -4096, 0x123456, -0x123456]
# footer 0xC4 (time stamped, accel): aux bytes 27-28 carry accel, 29-32 the board time (ms)
HAND_C4 = bytes.fromhex("A0FF" + "000000" * 7 + "000002" + "0123000F4240C4")
# the sample number wraps: 0xFF then 0x00; footer 0xC3 (time set) and 0xC6 (raw aux + time)
HAND_C3 = bytes.fromhex("A000" + "FFFFFE" * 8 + "FFFFFFFFFFFFC3")
HAND_C6 = bytes.fromhex("A001" + "800001" * 8 + "7FFF00000000C6")
HAND_C1 = bytes.fromhex("A002" + "000000" * 8 + "414243444546C1")


def test_cyton_hand_vectors_decode_to_published_values() -> None:
    assert len(HAND_C0) == len(HAND_C4) == len(HAND_C3) == len(HAND_C6) == len(HAND_C1) == 33
    d = CytonDecoder()
    p = d.feed(HAND_C0 + HAND_C4 + HAND_C3 + HAND_C6 + HAND_C1)
    assert p.counter.tolist() == [5, 255, 0, 1, 2]
    assert p.counts[0].tolist() == HAND_C0_COUNTS
    assert p.aux[0].tolist() == [1, -1, -32768]
    assert p.counts[1].tolist() == [0] * 7 + [2]
    assert p.counts[2].tolist() == [-2] * 8
    assert p.counts[3].tolist() == [-8388607] * 8
    assert p.footer.tolist() == [0xC0, 0xC4, 0xC3, 0xC6, 0xC1]
    assert p.board_ms.tolist() == [-1, 1_000_000, 2**32 - 1, 0, -1]
    assert p.aux[1, 0] == 0x0123
    assert p.aux[3, 0] == 0x7FFF
    assert p.aux[4].tolist() == [0x4142, 0x4344, 0x4546]
    assert d.stats.packets == 5
    assert d.stats.bad_packets == 0
    assert d.stats.skipped_bytes == 0


def test_cyton_encode_matches_hand_vectors() -> None:
    assert encode_packet(5, HAND_C0_COUNTS, aux=(1, -1, -32768)) == HAND_C0
    assert (
        encode_packet(255, [0] * 7 + [2], aux=(0x0123, 0, 0), footer=0xC4, board_ms=1_000_000)
        == HAND_C4
    )
    with pytest.raises(ValueError, match="24-bit"):
        encode_packet(0, [2**23] + [0] * 7)
    with pytest.raises(ValueError, match="board time"):
        encode_packet(0, [0] * 8, footer=0xC3)
    with pytest.raises(ValueError, match="footer"):
        encode_packet(0, [0] * 8, footer=0xC7)


def test_cyton_scale_is_openbci_uv_per_count() -> None:
    # OpenBCI quotes 0.02235 uV per count at the default gain of 24
    assert uv_per_count(24) == pytest.approx(0.02235174446, rel=1e-9)
    assert uv_per_count(1) == pytest.approx(4.5 / (2**23 - 1) * 1e6)
    assert 8388607 * uv_per_count(24) == pytest.approx(187500.0)


def test_cyton_split_reads_give_the_same_packets() -> None:
    stream = b"".join(encode_packet(i, np.full(8, i * 1000 - 7)) for i in range(40))
    whole = CytonDecoder().feed(stream)
    d = CytonDecoder()
    parts = [d.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)]
    assert np.concatenate([p.counter for p in parts]).tolist() == whole.counter.tolist()
    np.testing.assert_array_equal(np.concatenate([p.counts for p in parts]), whole.counts)
    assert d.stats.packets == 40
    assert d.stats.bytes_in == len(stream)


def test_cyton_resynchronises_after_garbage_and_counts_it() -> None:
    good = [encode_packet(i, np.arange(8) * (i + 1)) for i in range(10)]
    # garbage full of header and footer bytes in the wrong places
    junk = bytes([0xA0, 0x00, 0xC0, 0xA0, 0x11] * 9)
    damaged = bytearray(good[4])
    damaged[32] = 0x00  # footer gone
    stream = junk + b"".join(good[:4]) + bytes(damaged) + b"".join(good[5:])
    d = CytonDecoder()
    p = d.feed(stream)
    assert p.counter.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert d.stats.bad_packets == 1
    assert d.stats.skipped_bytes == len(junk) + 33
    # a truncated packet: the rest still comes out
    d2 = CytonDecoder()
    p2 = d2.feed(b"".join(good[:3]) + good[3][:20] + b"".join(good[4:]))
    assert p2.counter.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert d2.stats.bad_packets == 1
    assert d2.stats.skipped_bytes == 20


def _numpy_reference(stream: bytes) -> dict[str, npt.NDArray[np.int64]]:
    """Decode a clean, aligned stream with array operations only."""
    a = np.frombuffer(stream, np.uint8).reshape(-1, 33).astype(np.int64)
    assert (a[:, 0] == 0xA0).all()
    ch = a[:, 2:26].reshape(-1, 8, 3)
    counts = (ch[:, :, 0] << 16) | (ch[:, :, 1] << 8) | ch[:, :, 2]
    counts = np.where(counts >= 2**23, counts - 2**24, counts)
    ax = a[:, 26:32].reshape(-1, 3, 2)
    aux = (ax[:, :, 0] << 8) | ax[:, :, 1]
    aux = np.where(aux >= 2**15, aux - 2**16, aux)
    t = (a[:, 28] << 24) | (a[:, 29] << 16) | (a[:, 30] << 8) | a[:, 31]
    ms = np.where(a[:, 32] >= 0xC3, t, -1)
    return {"counter": a[:, 1], "counts": counts, "aux": aux, "footer": a[:, 32], "ms": ms}


def _run_kernel(
    fn: object, stream: bytes
) -> tuple[int, int, bool, dict[str, np.ndarray], np.ndarray]:
    buf = np.frombuffer(stream, np.uint8)
    cap = len(stream) // 33
    out = {
        "counter": np.empty(cap, np.int64),
        "counts": np.empty((cap, 8), np.int32),
        "aux": np.empty((cap, 3), np.int16),
        "footer": np.empty(cap, np.uint8),
        "ms": np.empty(cap, np.int64),
    }
    stats = np.zeros(2, np.int64)
    nk, consumed, locked = fn(  # type: ignore[operator]
        buf,
        len(buf),
        False,
        out["counter"],
        out["counts"],
        out["aux"],
        out["footer"],
        out["ms"],
        stats,
    )
    return nk, consumed, bool(locked), {key: v[:nk] for key, v in out.items()}, stats


def _random_stream(rng: np.random.Generator, n: int) -> bytes:
    parts = []
    for i in range(n):
        footer = int(rng.integers(0xC0, 0xC7))
        vals = rng.integers(-(2**23), 2**23, 8)
        if footer >= 0xC3:
            parts.append(
                encode_packet(
                    i,
                    vals,
                    aux=(int(rng.integers(-999, 999)), 0, 0),
                    footer=footer,
                    board_ms=int(rng.integers(0, 2**32)),
                )
            )
        else:
            aux = tuple(int(x) for x in rng.integers(-(2**15), 2**15, 3))
            parts.append(encode_packet(i, vals, aux=aux, footer=footer))  # type: ignore[arg-type]
    return b"".join(parts)


def test_cyton_kernel_matches_numpy_reference_and_py_func() -> None:
    rng = np.random.default_rng(3)
    stream = _random_stream(rng, 500)
    ref = _numpy_reference(stream)
    for fn in (k.cyton_decode, k.cyton_decode.py_func):
        nk, consumed, locked, out, stats = _run_kernel(fn, stream)
        assert nk == 500
        assert consumed == len(stream)
        assert locked
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
        assert stats.tolist() == [0, 0]
    # with garbage and damage, jitted and py_func agree exactly
    noisy = bytearray(rng.integers(0, 256, 50, dtype=np.uint8).tobytes() + stream)
    for pos in rng.integers(0, len(noisy), 40):
        noisy[pos] = int(rng.integers(0, 256))
    a = _run_kernel(k.cyton_decode, bytes(noisy))
    b = _run_kernel(k.cyton_decode.py_func, bytes(noisy))
    assert a[:3] == b[:3]
    for key in a[3]:
        np.testing.assert_array_equal(a[3][key], b[3][key])
    np.testing.assert_array_equal(a[4], b[4])
    assert a[0] > 400


def test_cyton_split_runs_breaks_at_counter_jumps() -> None:
    c = np.array([254, 255, 0, 1, 5, 6, 6, 7])
    assert split_runs(c, 256) == [(0, 4), (4, 6), (6, 8)]
    assert split_runs(np.array([], np.int64), 256) == []


def test_cyton_options_and_descriptors() -> None:
    streams = CytonDriver.describe(
        "eeg1", {"port": "/dev/serial/by-id/x", "board_timestamps": True}
    )
    (s,) = streams
    assert s.stream_id == "eeg1.emg"
    assert s.kind is StreamKind.EMG
    assert s.rate_hz == 250.0
    assert s.counter_bits == 8
    assert s.timestamp_hz == 1000.0
    assert s.timestamp_bits == 32
    assert s.channel_names == tuple(f"ch{i}" for i in range(1, 9))
    assert all(c.unit == "uV" for c in s.channels)
    with pytest.raises(ConfigError, match=r"devices\.eeg1\.options\.gain: .*use one of"):
        CytonDriver.describe("eeg1", {"port": "/dev/x", "gain": 3})
    with pytest.raises(ConfigError, match=r"options\.baud: Extra inputs"):
        CytonDriver.describe("eeg1", {"port": "/dev/x", "baud": 9600})
    with pytest.raises(ConfigError, match=r"options\.channels"):
        CytonDriver.describe("eeg1", {"port": "/dev/x", "channels": ["a", "b"]})
    drv = CytonDriver(
        "eeg1", {"port": "/dev/x", "gain": [24] * 7 + [12]}, DriverContext(clock=MonotonicClock())
    )
    assert isinstance(drv, Driver)
    assert drv.streams[0].timestamp_hz == 0.0
    np.testing.assert_allclose(drv._scale[-1], 2 * drv._scale[0])
