"""BITalino (r)evolution frame decoder: vectors built by hand from the published layout
(BITalino (r)evolution API: frame length per channel count, sequence number and CRC-4 in the
last byte), the CRC-4 against the bit-by-bit definition, the kernel against a numpy
reference and its own py_func, resynchronisation, the EMG transfer function, options."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from nmcore.driver import Driver, DriverContext
from nmcore.errors import ConfigError
from nmcore.hostclock import MonotonicClock
from nmcore.model import StreamKind
from nmcore_drivers.bitalino import BitalinoDriver
from nmcore_drivers.bitalino import _kernels as k
from nmcore_drivers.bitalino.decoder import (
    BitalinoDecoder,
    crc4,
    emg_uv,
    encode_frame,
    frame_len,
)
from nmcore_drivers.bitalino.driver import command_bytes


def crc4_bitwise(frame: bytes) -> int:
    """The definition: shift each bit in MSB first, x^4 = x + 1, CRC nibble taken as 0."""
    data = bytearray(frame)
    data[-1] &= 0xF0
    x = 0
    for b in data:
        for bit in range(7, -1, -1):
            x <<= 1
            if x & 0x10:
                x ^= 0x03
            x ^= (b >> bit) & 1
    return x & 0x0F


def build_by_bits(seq: int, digital: list[int], analog: list[int]) -> bytes:
    """The layout as a bit string read from the last byte backwards: seq(4) crc(4)
    I1 I2 O1 O2, then 10 bits per channel for the first four, 6 for the 5th and 6th."""
    n = len(analog)
    length = -(-(12 + 10 * min(n, 4) + 6 * max(0, n - 4)) // 8)
    bits = f"{seq:04b}0000" + "".join(str(d) for d in digital)
    for c, v in enumerate(analog):
        bits += f"{v:010b}" if c < 4 else f"{v:06b}"
    bits = bits.ljust(8 * length, "0")
    rev = bytes(int(bits[i : i + 8], 2) for i in range(0, 8 * length, 8))
    frame = bytearray(rev[::-1])
    frame[-1] |= crc4_bitwise(bytes(frame))
    return bytes(frame)


# written out from the layout: A1 = 1023, I1 O1 set, seq 5 -> bytes FC AF 5(crc A)
HAND_1CH = bytes.fromhex("fcaf5a")
# six channels A1..A6 = 1, 1022, 512, 0, 63, 1; I2 O1 set; seq 15
HAND_6CH = bytes.fromhex("c10f0080fe0760f0")


def test_bitalino_frame_lengths_follow_the_published_formula() -> None:
    assert [frame_len(n) for n in range(1, 7)] == [3, 4, 6, 7, 8, 8]
    with pytest.raises(ValueError, match="1 to 6"):
        frame_len(0)


def test_bitalino_hand_vectors() -> None:
    assert build_by_bits(5, [1, 0, 1, 0], [1023]) == HAND_1CH
    assert build_by_bits(15, [0, 1, 1, 0], [1, 1022, 512, 0, 63, 1]) == HAND_6CH
    assert encode_frame(5, [1023], (1, 0, 1, 0)) == HAND_1CH
    assert encode_frame(15, [1, 1022, 512, 0, 63, 1], (0, 1, 1, 0)) == HAND_6CH
    # three in a row so the decoder can lock on
    d6 = BitalinoDecoder(6)
    f = d6.feed(HAND_6CH + encode_frame(0, [0] * 6) + encode_frame(1, [1023, 0, 0, 0, 0, 63]))
    assert f.seq.tolist() == [15, 0, 1]
    assert f.analog[0].tolist() == [1, 1022, 512, 0, 63, 1]
    assert f.digital[0].tolist() == [0, 1, 1, 0]
    assert f.analog[2].tolist() == [1023, 0, 0, 0, 0, 63]
    d1 = BitalinoDecoder(1)
    f1 = d1.feed(HAND_1CH + encode_frame(6, [0]) + encode_frame(7, [512]))
    assert f1.analog[:, 0].tolist() == [1023, 0, 512]
    assert f1.digital[0].tolist() == [1, 0, 1, 0]


def test_bitalino_crc4_table_equals_bitwise_definition() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        frame = rng.integers(0, 256, int(rng.integers(2, 17)), dtype=np.uint8).tobytes()
        assert crc4(frame) == crc4_bitwise(frame)
    assert crc4(HAND_1CH) == 0xA
    # a single flipped bit anywhere is always caught (CRC property)
    for byte in range(len(HAND_6CH)):
        for bit in range(8):
            if byte == len(HAND_6CH) - 1 and bit < 4:
                continue  # the CRC nibble itself
            bad = bytearray(HAND_6CH)
            bad[byte] ^= 1 << bit
            assert crc4(bytes(bad)) != bad[-1] & 0x0F


@pytest.mark.parametrize("n_analog", [1, 2, 3, 4, 5, 6])
def test_bitalino_kernel_matches_numpy_reference_and_py_func(n_analog: int) -> None:
    rng = np.random.default_rng(n_analog)
    widths = [10 if c < 4 else 6 for c in range(n_analog)]
    vals = np.stack([rng.integers(0, 1 << w, 300) for w in widths], axis=1)
    dig = rng.integers(0, 2, (300, 4))
    stream = b"".join(build_by_bits(i % 16, dig[i].tolist(), vals[i].tolist()) for i in range(300))
    ref = _numpy_reference(stream, n_analog)
    np.testing.assert_array_equal(ref["analog"], vals)
    for fn in (k.bitalino_decode, k.bitalino_decode.py_func):
        nk, consumed, out, stats = _run_kernel(fn, stream, n_analog)
        assert nk == 300
        assert consumed == len(stream)
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
        assert stats.tolist() == [0, 0]
    noisy = bytearray(rng.integers(0, 256, 30, dtype=np.uint8).tobytes() + stream)
    for pos in rng.integers(0, len(noisy), 25):
        noisy[pos] ^= int(rng.integers(1, 256))
    a = _run_kernel(k.bitalino_decode, bytes(noisy), n_analog)
    b = _run_kernel(k.bitalino_decode.py_func, bytes(noisy), n_analog)
    assert a[:2] == b[:2]
    assert a[0] > 200
    for key in a[2]:
        np.testing.assert_array_equal(a[2][key], b[2][key])
    np.testing.assert_array_equal(a[3], b[3])


def _numpy_reference(stream: bytes, n_analog: int) -> dict[str, npt.NDArray[np.int64]]:
    """A clean, aligned stream decoded with array operations: bits of the reversed frame."""
    length = frame_len(n_analog)
    a = np.frombuffer(stream, np.uint8).reshape(-1, length)[:, ::-1]
    bits = np.unpackbits(a, axis=1).astype(np.int64)

    def field(start: int, width: int) -> npt.NDArray[np.int64]:
        w = 1 << np.arange(width - 1, -1, -1)
        return bits[:, start : start + width] @ w

    analog = []
    pos = 12
    for c in range(n_analog):
        width = 10 if c < 4 else 6
        analog.append(field(pos, width))
        pos += width
    return {"seq": field(0, 4), "digital": bits[:, 8:12], "analog": np.stack(analog, axis=1)}


def _run_kernel(
    fn: object, stream: bytes, n_analog: int
) -> tuple[int, int, dict[str, np.ndarray], np.ndarray]:
    length = frame_len(n_analog)
    buf = np.frombuffer(stream, np.uint8)
    cap = len(buf) // length
    out = {
        "seq": np.empty(cap, np.int64),
        "digital": np.empty((cap, 4), np.uint8),
        "analog": np.empty((cap, n_analog), np.uint16),
    }
    stats = np.zeros(2, np.int64)
    state = np.zeros(2, np.int64)
    nk, consumed = fn(  # type: ignore[operator]
        buf,
        len(buf),
        length,
        n_analog,
        state,
        k.CRC_HI,
        k.CRC_LO,
        out["seq"],
        out["digital"],
        out["analog"],
        stats,
    )
    return nk, consumed, {key: v[:nk] for key, v in out.items()}, stats


def test_bitalino_resync_seq_jump_and_split_reads() -> None:
    frames = [encode_frame(i % 16, [i % 1024, 3]) for i in range(40)]
    # the device lost frames 10-14: a sequence jump, confirmed by the next frame
    stream = b"".join(frames[:10] + frames[15:])
    d = BitalinoDecoder(2)
    out = [d.feed(stream[i : i + 5]) for i in range(0, len(stream), 5)]
    seq = np.concatenate([o.seq for o in out]).tolist()
    assert seq == [i % 16 for i in list(range(10)) + list(range(15, 40))]
    assert d.stats.bad_frames == 0
    # a corrupted frame in place: skipped whole, counted
    bad = bytearray(frames[20])
    bad[1] ^= 0x40
    d2 = BitalinoDecoder(2)
    f = d2.feed(b"".join(frames[:20]) + bytes(bad) + b"".join(frames[21:]))
    assert f.n == 39
    assert 20 % 16 not in f.seq[18:21].tolist()
    assert d2.stats.bad_frames == 1
    assert d2.stats.skipped_bytes == 4
    # leading garbage is skipped and counted
    d3 = BitalinoDecoder(2)
    f3 = d3.feed(b"\x07\x00BITalino_v5.2\n" + b"".join(frames))
    assert f3.seq.tolist() == [i % 16 for i in range(40)]
    assert d3.stats.skipped_bytes == 16


def test_bitalino_emg_transfer_function() -> None:
    # EMG(V) = (ADC / 2^n - 1/2) * VCC / G_EMG; VCC 3.3 V, G 1009; range +-1.64 mV
    uv = emg_uv([0, 512, 1023], [10, 10, 10])
    assert uv[1] == 0.0
    assert uv[0] == pytest.approx(-0.5 * 3.3 / 1009 * 1e6)
    assert uv[0] == pytest.approx(-1635.28, abs=0.01)
    assert uv[2] == pytest.approx((1023 / 1024 - 0.5) * 3.3 / 1009 * 1e6)
    assert emg_uv([32], [6])[0] == 0.0


def test_bitalino_commands_and_options() -> None:
    assert command_bytes(1000, [1, 2, 3, 4, 5, 6]) == (0xC3, 0xFD)
    assert command_bytes(1, [1]) == (0x03, 0x05)
    assert command_bytes(100, [2, 5]) == (0x83, 0x49)
    s = BitalinoDriver.describe("leg", {"port": "/dev/rfcomm0", "analog": [1, 3]})
    assert [x.stream_id for x in s] == ["leg.emg", "leg.digital"]
    assert s[0].kind is StreamKind.EMG
    assert s[0].counter_bits == 4
    assert s[0].rate_hz == 1000.0
    assert s[0].channel_names == ("A1", "A3")
    assert s[1].kind is StreamKind.TRIGGER
    assert s[1].channel_names == ("I1", "I2", "O1", "O2")
    drv = BitalinoDriver("leg", {"port": "/dev/rfcomm0"}, DriverContext(clock=MonotonicClock()))
    assert isinstance(drv, Driver)
    assert [x.stream_id for x in drv.streams] == ["leg.emg", "leg.digital"]
    with pytest.raises(ConfigError, match=r"options\.rate_hz"):
        BitalinoDriver.describe("leg", {"port": "x", "rate_hz": 500})
    with pytest.raises(ConfigError, match="inputs are numbered 1 to 6"):
        BitalinoDriver.describe("leg", {"port": "x", "analog": [0, 1]})
    with pytest.raises(ConfigError, match="ascending"):
        BitalinoDriver.describe("leg", {"port": "x", "analog": [3, 1]})
    with pytest.raises(ConfigError, match="give 2 names"):
        BitalinoDriver.describe("leg", {"port": "x", "analog": [1, 2], "channels": ["a"]})
