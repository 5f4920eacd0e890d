"""FrameDecoder behaviour on serial-shaped input: split reads, garbage, oversize runs, reused
read buffers; the encoders' argument checks; the plain-Python COBS."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.framing import (
    MAX_WIRE_FRAME,
    CobsError,
    FrameDecoder,
    Packet,
    PacketType,
    SampleFormat,
    cobs_decode,
    cobs_encode,
    encode_command,
    encode_packet,
)


def _emg(counter: int, n: int = 32, ch: int = 16, fmt: SampleFormat = SampleFormat.I24) -> bytes:
    vals = (np.arange(n * ch).reshape(n, ch) * 1031 + counter) % 60000 - 30000
    return encode_packet(PacketType.EMG, counter=counter, samples=vals, sample_format=fmt)


def _key(p: Packet) -> tuple[int, int, bytes]:
    return (p.ptype, p.counter, b"" if p.samples is None else p.samples.tobytes())


STREAM = _emg(0) + encode_command("time_sync_ping", seq=9) + _emg(32, fmt=SampleFormat.I16)


def test_every_split_point_gives_the_same_packets() -> None:
    whole = [_key(p) for p in FrameDecoder().feed(STREAM)]
    assert len(whole) == 3
    for cut in range(0, len(STREAM) + 1, 7):
        dec = FrameDecoder()
        got = dec.feed(STREAM[:cut]) + dec.feed(STREAM[cut:])
        assert [_key(p) for p in got] == whole
        assert dec.stats.frames_rejected == 0
        assert dec.pending_bytes == 0


def test_byte_at_a_time() -> None:
    dec = FrameDecoder()
    got: list[Packet] = []
    for i in range(len(STREAM)):
        got += dec.feed(STREAM[i : i + 1])
    assert [p.counter for p in got] == [0, 9, 32]
    assert dec.stats.bytes_in == len(STREAM)


def test_garbage_between_frames_is_counted_exactly() -> None:
    garbage = bytes(range(1, 200))  # no zero: one bogus "frame" ending at the next delimiter
    dec = FrameDecoder()
    got = dec.feed(_emg(0) + garbage + b"\x00" + _emg(32))
    assert [p.counter for p in got] == [0, 32]
    assert dec.stats.bytes_skipped == len(garbage)
    assert dec.stats.frames_rejected == 1


def test_stream_starting_mid_frame_loses_only_that_frame() -> None:
    dec = FrameDecoder()
    got = dec.feed(STREAM[100:])
    assert [p.counter for p in got] == [9, 32]
    assert dec.stats.frames_rejected == 1


def test_oversize_run_is_dropped_across_reads_and_decoding_resumes() -> None:
    dec = FrameDecoder()
    junk = b"\x07" * 1000
    for _ in range(5):  # 5000 bytes without a delimiter, in several reads
        assert dec.feed(junk) == []
        assert dec.pending_bytes <= MAX_WIRE_FRAME
    got = dec.feed(b"\x07" * 10 + b"\x00" + _emg(5))
    assert [p.counter for p in got] == [5]
    assert dec.stats.oversize == 1
    assert dec.stats.bytes_skipped == 5010


def test_reused_read_buffer_does_not_corrupt_pending_bytes() -> None:
    dec = FrameDecoder()
    buf = bytearray(STREAM[:500])
    assert dec.feed(buf) == []
    buf[:] = b"\xff" * 500  # the transport reuses its buffer for the next read
    got = dec.feed(STREAM[500:])
    assert [p.counter for p in got] == [0, 9, 32]


def test_samples_stay_valid_after_later_feeds() -> None:
    dec = FrameDecoder()
    first = dec.feed(_emg(0))[0]
    assert first.samples is not None
    snapshot = first.samples.copy()
    for i in range(5):
        dec.feed(_emg(100 + i))
    np.testing.assert_array_equal(first.samples, snapshot)
    assert first.samples.shape == (32, 16)


def test_sample_formats_and_dtypes() -> None:
    vals = np.array([[1, -2], [3, -4]])
    for fmt, dtype in [
        (SampleFormat.I16, np.int32),
        (SampleFormat.I24, np.int32),
        (SampleFormat.I32, np.int32),
        (SampleFormat.F32, np.float32),
    ]:
        p = FrameDecoder().feed(encode_packet(1, samples=vals, sample_format=fmt))[0]
        assert p.samples is not None
        assert p.sample_format is fmt
        assert p.samples.dtype == dtype
        np.testing.assert_array_equal(p.samples, vals)


def test_command_frames_decode_with_fields() -> None:
    p = FrameDecoder().feed(encode_command("loopback_trigger", seq=3, pulse_us=250))[0]
    assert p.ptype is PacketType.LOOPBACK_TRIGGER
    assert p.counter == 3
    assert p.fields == {"pulse_us": 250}


def test_malformed_identify_reply_with_good_crc_is_flagged_not_raised() -> None:
    # command + status OK + a device-id length pointing past the payload
    frame = encode_packet(PacketType.COMMAND_REPLY, payload=bytes([0x80, 0, 40, 65]))
    p = FrameDecoder().feed(frame)[0]
    assert p.fields == {"malformed": True}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"command": "set_rate", "seq": 1, "rate_hz": 3}, "rate_hz"),
        ({"command": "set_rate", "seq": 1}, "rate_hz"),
        ({"command": "loopback_trigger", "seq": 1, "pulse_us": 0}, "pulse_us"),
        ({"command": "start", "seq": 1, "stream_mask": 256}, "stream_mask"),
        ({"command": "identify", "seq": -1}, "counter"),
        ({"command": "status", "seq": 1}, "command"),
    ],
)
def test_encode_command_rejects_with_field_name(kwargs: dict[str, object], field: str) -> None:
    cmd = kwargs.pop("command")
    with pytest.raises(ValueError, match=field):
        encode_command(cmd, **kwargs)  # type: ignore[arg-type]


def test_encode_packet_rejects_out_of_range_samples_and_oversize_payloads() -> None:
    with pytest.raises(ValueError, match="samples"):
        encode_packet(1, samples=np.array([[40000]]), sample_format=SampleFormat.I16)
    with pytest.raises(ValueError, match="payload"):
        encode_packet(1, samples=np.zeros((33, 16)), sample_format=SampleFormat.I24)
    with pytest.raises(ValueError, match="samples"):
        encode_packet(1, samples=np.zeros(5), sample_format=SampleFormat.I16)


def test_python_cobs_roundtrip_and_errors() -> None:
    rng = np.random.default_rng(1)
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    for n in [0, 1, 253, 254, 255, 508, 1000]:
        for zero_rate in (0.0, 0.3):
            data = rng.integers(1, 256, n, dtype=np.uint8)
            data[rng.random(n) < zero_rate] = 0
            enc = cobs_encode(data.tobytes())
            assert b"\x00" not in enc
            assert cobs_decode(enc) == data.tobytes()
    with pytest.raises(CobsError):
        cobs_decode(b"\x05\x11")
    with pytest.raises(CobsError):
        cobs_decode(b"\x03\x11\x00")
