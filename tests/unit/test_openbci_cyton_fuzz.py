"""Fuzzing the Cyton decoder: random bytes, and valid streams with flipped, inserted and
deleted bytes and truncated packets, fed in random splits. It never raises; every packet
left untouched, with untouched neighbours, comes out with its values; all else is counted."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmcore_drivers.openbci.decoder import CytonDecoder, encode_packet

N_PACKETS = 60


def _feed_split(data: bytes, cuts: list[int]) -> tuple[CytonDecoder, list[tuple[int, ...]]]:
    d = CytonDecoder()
    rows: list[tuple[int, ...]] = []
    pos = 0
    for c in [*sorted(set(cuts)), len(data)]:
        p = d.feed(data[pos:c])
        assert p.footer.shape[0] == p.n
        assert p.counts.shape == (p.n, 8)
        assert ((p.footer >= 0xC0) & (p.footer <= 0xC6)).all()
        rows += [(int(c), *map(int, v)) for c, v in zip(p.counter, p.counts, strict=True)]
        pos = c
    return d, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=8))
def test_cyton_fuzz_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    d, rows = _feed_split(data, [c for c in cuts if c <= len(data)])
    assert d.stats.bytes_in == len(data)
    assert d.stats.packets == len(rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(0, N_PACKETS - 1),
            st.sampled_from(["flip", "ins", "del", "cut"]),
            st.integers(0, 32),
            st.integers(1, 255),
        ),
        max_size=12,
    ),
    st.lists(st.integers(0, 40 * N_PACKETS), max_size=10),
)
def test_cyton_fuzz_mutated_streams_keep_untouched_packets(
    seed: int, mutations: list[tuple[int, str, int, int]], cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    packets = []
    for i in range(N_PACKETS + 3):  # 3 clean packets at the end: nothing waits for more
        vals = rng.integers(-(2**23), 2**23, 8)
        packets.append((i % 256, tuple(int(v) for v in vals), bytearray(encode_packet(i, vals))))
    damaged = set()
    for idx, kind, pos, val in mutations:
        raw = packets[idx][2]
        if not raw:
            continue
        pos %= len(raw)
        if kind == "flip":
            raw[pos] ^= val
        elif kind == "ins":
            raw.insert(pos, val)
        elif kind == "del":
            del raw[pos]
        else:
            del raw[pos:]
        damaged.add(idx)
    stream = b"".join(bytes(p[2]) for p in packets)
    d, rows = _feed_split(stream, [c for c in cuts if c <= len(stream)])
    out = set(rows)
    for i in range(N_PACKETS):
        if {i - 1, i, i + 1} & damaged:
            continue
        assert (packets[i][0], *packets[i][1]) in out, f"untouched packet {i} lost"
    if not damaged:
        assert d.stats.bad_packets == 0
        assert d.stats.skipped_bytes == 0
        assert len(rows) == N_PACKETS + 3
    # whatever was lost left a trace in the counters or the sample-number sequence
    assert len(rows) <= N_PACKETS + 3 + len(mutations)
