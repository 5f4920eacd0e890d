"""Fuzzing the BITalino decoder: random bytes, and valid streams with flipped, inserted and
deleted bytes and truncated frames, fed in random splits. It never raises; every frame left
untouched, with the frame before and two after untouched, comes out with its values."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmcore_drivers.bitalino.decoder import BitalinoDecoder, encode_frame

N_FRAMES = 80


def _feed_split(
    n_analog: int, data: bytes, cuts: list[int]
) -> tuple[BitalinoDecoder, list[tuple[int, ...]]]:
    d = BitalinoDecoder(n_analog)
    rows: list[tuple[int, ...]] = []
    pos = 0
    for c in [*sorted(set(cuts)), len(data)]:
        f = d.feed(data[pos:c])
        assert f.analog.shape == (f.n, n_analog)
        assert f.digital.shape == (f.n, 4)
        assert ((f.seq >= 0) & (f.seq < 16)).all()
        assert (f.digital <= 1).all()
        rows += [
            (int(s), *map(int, a), *map(int, g))
            for s, a, g in zip(f.seq, f.analog, f.digital, strict=True)
        ]
        pos = c
    return d, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=8))
def test_bitalino_fuzz_random_bytes_never_raise(n: int, data: bytes, cuts: list[int]) -> None:
    d, rows = _feed_split(n, data, [c for c in cuts if c <= len(data)])
    assert d.stats.bytes_in == len(data)
    assert d.stats.frames == len(rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(0, N_FRAMES - 1),
            st.sampled_from(["flip", "ins", "del", "cut"]),
            st.integers(0, 7),
            st.integers(1, 255),
        ),
        max_size=12,
    ),
    st.lists(st.integers(0, 8 * N_FRAMES), max_size=10),
)
def test_bitalino_fuzz_mutated_streams_keep_untouched_frames(
    n: int, seed: int, mutations: list[tuple[int, str, int, int]], cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    widths = [10 if c < 4 else 6 for c in range(n)]
    frames = []
    for i in range(N_FRAMES + 3):
        vals = tuple(int(rng.integers(0, 1 << w)) for w in widths)
        dig = tuple(int(x) for x in rng.integers(0, 2, 4))
        frames.append(((i % 16, *vals, *dig), bytearray(encode_frame(i % 16, vals, dig))))  # type: ignore[arg-type]
    damaged = set()
    for idx, kind, pos, val in mutations:
        raw = frames[idx][1]
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
    stream = b"".join(bytes(f[1]) for f in frames)
    d, rows = _feed_split(n, stream, [c for c in cuts if c <= len(stream)])
    out = set(rows)
    for i in range(N_FRAMES):
        # re-synchronising needs three good frames in a row
        if {i - 1, i, i + 1, i + 2} & damaged:
            continue
        assert frames[i][0] in out, f"untouched frame {i} lost"
    if not damaged:
        assert d.stats.bad_frames == 0
        assert d.stats.skipped_bytes == 0
        assert len(rows) == N_FRAMES + 3
