"""Fuzzing the decoder: 100 hypothesis examples x 1000 inputs each (random bytes, and valid
streams with flipped, inserted and deleted bytes, split at random points). The decoder must
never raise, and every frame whose bytes and leading delimiter were not touched must still
come out. Many inputs per example keep 100 000 inputs inside ~20 s."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmcore.framing import (
    FrameDecoder,
    Packet,
    PacketType,
    SampleFormat,
    encode_command,
    encode_packet,
)

INPUTS_PER_EXAMPLE = 1000
EXAMPLES = 100


def _pool() -> list[tuple[bytes, tuple[int, int, bytes]]]:
    """Frames with unique counters, so a decoded packet names the frame it came from."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(120):
        kind = i % 6
        if kind == 0:
            frame = encode_command("set_rate", seq=i, rate_hz=500)
        elif kind == 1:
            f = {"edge_us": i * 7, "polarity": i & 1, "line": 1, "edge_counter": i}
            frame = encode_packet(PacketType.TRIGGER_EDGE, counter=i, fields=f)
        else:
            fmt = SampleFormat(1 + i % 4)
            n_s, n_ch = (32, 16) if fmt is SampleFormat.I16 else (int(rng.integers(1, 9)), 4)
            vals = rng.integers(-30000, 30000, (n_s, n_ch))
            frame = encode_packet(1 + i % 3, counter=i, samples=vals, sample_format=fmt)
        out.append((frame, _key_of(FrameDecoder().feed(frame)[0])))
    return out


def _key_of(p: Packet) -> tuple[int, int, bytes]:
    return (int(p.ptype), p.counter, b"" if p.samples is None else p.samples.tobytes())


POOL = _pool()


def _feed_split(dec: FrameDecoder, data: bytes, rng: random.Random) -> list[Packet]:
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 4)))
    out: list[Packet] = []
    prev = 0
    for c in [*cuts, len(data)]:
        out += dec.feed(data[prev:c])
        prev = c
    return out


def _check_invariants(dec: FrameDecoder, packets: list[Packet]) -> None:
    s = dec.stats
    assert s.frames_ok == len(packets)
    assert min(s.bad_crc, s.bad_cobs, s.truncated, s.unknown_type, s.oversize) >= 0
    assert s.bytes_skipped <= s.bytes_in
    for p in packets:
        if p.samples is not None:
            assert p.samples.ndim == 2
            assert p.samples.shape[0] >= 1


def _mutated_stream(rng: random.Random) -> tuple[bytes, Counter[tuple[int, int, bytes]]]:
    picks = [POOL[rng.randrange(len(POOL))] for _ in range(rng.randrange(1, 8))]
    spans = []
    data = bytearray()
    for frame, key in picks:
        spans.append((len(data), len(data) + len(frame) - 1, key))  # first byte, delimiter
        data += frame
    touched: list[int] = []
    # Mutate back to front, at least 4 bytes apart, so that every position (and every
    # deletion of up to 3 bytes) still refers to the original bytes.
    for at in sorted((rng.randrange(len(data)) for _ in range(rng.randrange(0, 6))), reverse=True):
        op = rng.randrange(3)
        if touched and at > touched[-1] - 4:
            continue
        if op == 0:
            data[at] ^= rng.randrange(1, 256)
        elif op == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            del data[at : at + rng.randrange(1, 4)]
        touched.append(at)
    intact: Counter[tuple[int, int, bytes]] = Counter()
    for first, delim, key in spans:
        # The previous frame's delimiter belongs to this frame's integrity too; a deletion
        # starting before `first` may reach into it, hence the margin of 3.
        if not any(first - 4 <= t <= delim for t in touched):
            intact[key] += 1
    return bytes(data), intact


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(seed=st.integers(0, 2**63 - 1))
def test_fuzz_never_raises_and_keeps_intact_frames(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(INPUTS_PER_EXAMPLE):
        dec = FrameDecoder()
        kind = rng.randrange(4)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 1500))
            _check_invariants(dec, _feed_split(dec, data, rng))
        elif kind == 1:
            # Random bytes that look like frames: mostly non-zero with rare delimiters.
            n = rng.randrange(0, 1500)
            raw = bytearray(rng.randbytes(n))
            for i in range(n):
                if raw[i] == 0 and rng.random() < 0.9:
                    raw[i] = 1
            _check_invariants(dec, _feed_split(dec, bytes(raw), rng))
        else:
            data, intact = _mutated_stream(rng)
            packets = _feed_split(dec, data, rng)
            _check_invariants(dec, packets)
            got = Counter(_key_of(p) for p in packets)
            missing = intact - got
            assert not missing, f"intact frames lost: {[(k[0], k[1]) for k in missing]}"


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.binary(max_size=400), max_size=8))
def test_hypothesis_chunks_never_raise(chunks: list[bytes]) -> None:
    dec = FrameDecoder()
    packets: list[Packet] = []
    for c in chunks:
        packets += dec.feed(c)
    _check_invariants(dec, packets)
    assert dec.stats.bytes_in == sum(len(c) for c in chunks)
