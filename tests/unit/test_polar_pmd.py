"""Polar PMD decoder: Polar's published byte vectors, the delta kernel against a numpy
reference and its own py_func, and bad frames counted rather than raised.

Vector sources (github.com/polarofficial/polar-ble-sdk, Android library tests under
sources/Android/android-communications/library/src/test/java/com/polar/androidcommunications/
api/ble/model/gatt/client/pmd/):
  [ECG0]  model/EcgDataTest.kt, "process raw ecg data type 0"
  [ACC1]  model/AccDataTest.kt, "process acc raw data frame type 1"
  [ACCC0] model/AccDataTest.kt, "process acc compressed data type 0"
  [ACCC1] model/AccDataTest.kt, "process acc compressed data type 1"
  [CP]    BlePmdClientControlPointResponseTest.kt (both tests)
  [SET]   PmdSettingTest.kt, "testPmdSettingsWithRange"
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from nmcore_drivers.polar import _kernels as k
from nmcore_drivers.polar.pmd import (
    MeasurementType,
    PmdDecoder,
    PmdStatus,
    SettingType,
    encode_settings,
    missing_samples,
    parse_control_point_response,
    parse_features,
    parse_settings,
    start_command,
)

_ENC_PATH = Path(__file__).resolve().parents[1] / "fakebluez" / "pmd_encode.py"
_spec = importlib.util.spec_from_file_location("nmcore_tests_pmd_encode", _ENC_PATH)
assert _spec is not None
assert _spec.loader is not None
pmd_encode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pmd_encode)


def hx(s: str) -> bytes:
    return bytes.fromhex(s)


TS_2E9 = "00 94 35 77 00 00 00 00"  # 2_000_000_000 ns, little-endian

# [ACC1] the full 38-sample frame body from the test's HEX comment
ACC1_BODY = hx(
    "F7 FF FF FF E7 03 F8 FF FE FF E5 03 F9 FF FF FF E5 03 FA FF FF FF E6 03 FA FF FE FF E6 03 "
    "F9 FF FF FF E5 03 F8 FF FF FF E6 03 F8 FF FE FF E6 03 FA FF FF FF E5 03 FA FF FF FF E7 03 "
    "FA FF FF FF E5 03 F8 FF FF FF E6 03 F7 FF FF FF E6 03 F8 FF FE FF E6 03 F9 FF FE FF E7 03 "
    "F9 FF 00 00 E6 03 F9 FF FF FF E6 03 F7 FF FE FF E5 03 F9 FF FF FF E5 03 F9 FF FF FF E5 03 "
    "FA FF 00 00 E6 03 F9 FF FE FF E6 03 F8 FF FF FF E6 03 F8 FF FF FF E5 03 F9 FF FF FF E6 03 "
    "F9 FF FF FF E5 03 FA FF FF FF E6 03 F9 FF FF FF E5 03 F9 FF FF FF E5 03 F8 FF FE FF E6 03 "
    "F9 FF FF FF E6 03 F9 FF FF FF E6 03 F9 FF 00 00 E5 03 F9 FF FE FF E6 03 F8 FF FE FF E6 03 "
    "F7 FF FE FF E6 03"
)

# [ACCC0] reference sample, one 10-bit block of 56 samples
ACCC0_BODY = hx(
    "71 07 F0 6A 9E 8D 0A 38 BE 5C BE BA 2F 96 B3 EE 4B E5 AD FB 42 B9 EB BE 4C FE BA 2F 92 BF "
    "EE 4B E4 B1 FB 12 B9 EC BD 3C 3E BB 2F 8F D3 DE 4B E3 B5 F7 D2 B8 ED BD 30 7E 7B 2F 8B E3 "
    "CE 8B E2 BA F7 A2 B8 EE BC 20 BE 7B 2F 88 F3 CE CB E1 BD EF 52 F8 EF BC 18 FE 3B 2F 84 03 "
    "BF CB E0 C2 EF 32 B8 F0 BB 04 4E BC 2E 81 13 AF 0B E0 C6 EF F2 F7 F1 B9 FC 7D BC 2E 7D 27 "
    "9F 4B DF CA EB C2 F7 F2 B8 EC CD 7C 2E 7B 37 8F 4B DE CE E3 92 F7 F3 B8 E0 0D FD 2D 77 4B "
    "7F CB DD D2 DF 62 37 F5 B7 D4 4D BD 2D 74 5B 6F CB DC D7 D7 32 37 F6 B5 C8 8D 7D 2D 71 6B "
    "4F 4B DC DC D3 F2 36 F7 B4 BC DD FD 2C 6F 7B 3F 4B DB E0 CF D2 36 F8 B2 B0 2D BE 2C 6C 8F "
    "1F CB DA E3 C7 A2 76 F9"
)


def test_ecg_raw_type0_vector() -> None:
    dec = PmdDecoder()
    frame = dec.decode(hx("00" + TS_2E9 + "00") + hx("02 80 FF 02 80 00"))
    assert frame is not None
    assert frame.measurement is MeasurementType.ECG
    assert frame.timestamp_ns == 2_000_000_000
    assert frame.samples[:, 0].tolist() == [-32766.0, 32770.0]


def test_acc_raw_type1_vector() -> None:
    frame = PmdDecoder().decode(hx("02" + TS_2E9 + "01") + ACC1_BODY)
    assert frame is not None
    assert frame.n_samples == len(ACC1_BODY) // 6
    assert frame.samples[0].tolist() == [-9.0, -1.0, 999.0]
    assert frame.samples[1].tolist() == [-8.0, -2.0, 997.0]
    assert frame.timestamp_ns == 2_000_000_000


def test_acc_compressed_type0_vector() -> None:
    dec = PmdDecoder()
    factor = 2.44e-4  # the test's factor (G per count); type 0 scales to mG
    dec.factors[MeasurementType.ACC] = factor
    frame = dec.decode(hx("02" + TS_2E9 + "80") + ACCC0_BODY)
    assert frame is not None
    assert frame.n_samples == 1 + 56
    raw0 = np.array([1905, 27376, -29282])
    raw1 = raw0 + np.array([190, -105, -85])
    np.testing.assert_allclose(frame.samples[0], raw0 * factor * 1000, rtol=1e-12)
    np.testing.assert_allclose(frame.samples[1], raw1 * factor * 1000, rtol=1e-12)
    assert np.all(np.abs(frame.samples) <= 8 * 1000)  # the test's 8 G range check


def test_acc_compressed_type1_vector() -> None:
    frame = PmdDecoder().decode(
        hx("02 65 00 00 00 00 00 00 00 81") + hx("F1 FF 14 00 F0 03 06 01 7B 0F 08")
    )
    assert frame is not None
    assert frame.timestamp_ns == 0x65
    assert frame.samples.tolist() == [[-15.0, 20.0, 1008.0], [-20.0, 17.0, 1008.0]]


def test_control_point_response_vectors() -> None:
    ok = parse_control_point_response(hx("F0 01 02 00 00 FF FF FF"))
    assert ok is not None
    assert (ok.op, ok.measurement, ok.ok, ok.more, ok.parameters) == (
        1,
        2,
        True,
        False,
        hx("FF FF FF"),
    )
    bad = parse_control_point_response(hx("F0 01 06 07 00"))
    assert bad is not None
    assert bad.status == PmdStatus.INVALID_RESOLUTION
    assert bad.status_name == "invalid_resolution"
    assert bad.parameters == b""
    assert parse_control_point_response(hx("0F 05 00")) is None  # a features read, not an answer


def test_settings_vector() -> None:
    s = parse_settings(hx("00 01 34 00 01 01 10 00 02 04 F5 00 F4 01 E8 03 D0 07 04 01 03"))
    assert s[SettingType.SAMPLE_RATE] == [52]
    assert s[SettingType.RESOLUTION] == [16]
    assert s[SettingType.RANGE] == [245, 500, 1000, 2000]
    assert s[SettingType.CHANNELS] == [3]
    assert SettingType.FACTOR not in s


def test_settings_round_trip_and_factor() -> None:
    sel = {SettingType.SAMPLE_RATE: 200, SettingType.RESOLUTION: 16, SettingType.RANGE: 8}
    assert parse_settings(encode_settings(sel)) == {k_: [v] for k_, v in sel.items()}
    assert start_command(MeasurementType.ACC, sel)[:2] == bytes([0x02, 0x02])
    factor = parse_settings(bytes([5, 1]) + np.float32(2.44e-4).tobytes())
    assert factor[SettingType.FACTOR][0] == pytest.approx(2.44e-4, rel=1e-6)


def test_features() -> None:
    assert parse_features(hx("0F 05 00")) == {MeasurementType.ECG, MeasurementType.ACC}
    assert parse_features(hx("F0 01")) == set()


# -- the delta kernel -----------------------------------------------------------------------


def numpy_delta_reference(
    payload: bytes, start: int, channels: int, ref_bits: int
) -> npt.NDArray[np.int64]:
    """Plain numpy: unpack each block's bits, weight them, sign-extend, cumulative sum."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    ref_bytes = (ref_bits + 7) // 8
    ref = buf[start : start + channels * ref_bytes].reshape(channels, ref_bytes).astype(np.int64)
    ref_v = (ref << (8 * np.arange(ref_bytes))).sum(axis=1)
    sign = 1 << (8 * ref_bytes - 1)
    rows = [(ref_v ^ sign) - sign]
    pos = start + channels * ref_bytes
    while pos < buf.shape[0]:
        bits, count = int(buf[pos]), int(buf[pos + 1])
        pos += 2
        n_bytes = (bits * count * channels + 7) // 8
        bitarr = np.unpackbits(buf[pos : pos + n_bytes], bitorder="little")
        vals = bitarr[: bits * count * channels].reshape(-1, bits).astype(np.int64)
        v = (vals << np.arange(bits)).sum(axis=1)
        s = 1 << (bits - 1)
        rows.extend(((v ^ s) - s).reshape(count, channels))
        pos += n_bytes
    deltas = np.array(rows, dtype=np.int64)
    return np.cumsum(deltas, axis=0)


@pytest.mark.parametrize(("channels", "ref_bits"), [(1, 24), (3, 16), (4, 24)])
def test_delta_kernel_matches_reference_and_py_func(channels: int, ref_bits: int) -> None:
    rng = np.random.default_rng(channels * 100 + ref_bits)
    lim = 1 << (ref_bits - 2)
    walk = np.cumsum(rng.integers(-300, 300, size=(200, channels)), axis=0)
    samples = np.clip(walk + rng.integers(-lim // 2, lim // 2, size=channels), -lim, lim)
    payload = pmd_encode.encode_compressed(2, 123, 0, samples, ref_bits, block_len=13)
    buf = np.frombuffer(payload, dtype=np.uint8)
    ref = numpy_delta_reference(payload, 10, channels, ref_bits)
    for fn in (k.delta_decode, k.delta_decode.py_func):
        out = np.empty((512, channels), np.int64)
        n = fn(buf, 10, channels, ref_bits, out)
        assert n == samples.shape[0]
        np.testing.assert_array_equal(out[:n], ref)
        np.testing.assert_array_equal(out[:n], samples)


def test_delta_kernel_errors() -> None:
    payload = pmd_encode.encode_compressed(2, 0, 1, np.arange(30).reshape(10, 3), 16)
    buf = np.frombuffer(payload, dtype=np.uint8)
    out = np.empty((64, 3), np.int64)
    for fn in (k.delta_decode, k.delta_decode.py_func):
        assert fn(buf[:-1], 10, 3, 16, out) == k.ERR_TRUNCATED
        assert fn(buf[:13], 10, 3, 16, out) == k.ERR_TRUNCATED
        assert fn(buf, 10, 3, 16, out[:3]) == k.ERR_OVERFLOW
        bad = buf.copy()
        bad[16] = 0  # the block's delta width
        assert fn(bad, 10, 3, 16, out) == k.ERR_BAD_WIDTH


def test_raw_round_trip_24_bit() -> None:
    vals = np.array([-(1 << 23), -1, 0, 1, (1 << 23) - 1])
    frame = PmdDecoder().decode(pmd_encode.encode_raw(0, 7, 0, vals, 3))
    assert frame is not None
    assert frame.samples[:, 0].tolist() == vals.astype(float).tolist()


def test_bad_frames_counted_and_skipped() -> None:
    dec = PmdDecoder()
    good = hx("00" + TS_2E9 + "00") + hx("02 80 FF 02 80 00")
    assert dec.decode(good[:9]) is None  # shorter than the header
    assert dec.decode(good[:-1]) is None  # not a whole number of samples
    assert dec.decode(good[:10]) is None  # header only
    assert dec.decode(hx("09") + good[1:]) is None  # unknown measurement type
    assert dec.decode(good[:9] + hx("7E") + good[10:]) is None  # unknown frame type
    assert dec.decode(hx("02" + TS_2E9 + "80") + bytes(6) + hx("00 05")) is None  # width 0
    assert dec.decode(good) is not None
    st = dec.stats
    assert (st.truncated, st.unknown_measurement, st.unknown_frame_type, st.bad_delta) == (
        3,
        1,
        1,
        1,
    )
    assert st.frames_ok == 1
    assert st.frames_rejected == 6


@pytest.mark.parametrize(
    ("gap_ns", "n", "rate", "expected"),
    [
        (73 * 10**9 // 130, 73, 130, 0),  # back-to-back frames
        (146 * 10**9 // 130, 73, 130, 73),  # one frame missing
        (36 * 10**9 // 200 + 3 * 10**9 // 200, 36, 200, 3),
        (10, 36, 200, -36),  # overlapping timestamps
    ],
)
def test_missing_samples(gap_ns: int, n: int, rate: int, expected: int) -> None:
    base = 800_000_000_000_000_000
    assert missing_samples(base, base + gap_ns, n, rate) == expected
