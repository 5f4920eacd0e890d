"""The daemon's live blocks: what one live message carries, straight from the ring."""

from __future__ import annotations

import numpy as np

from nmcore.buffer import RingBuffer
from nmcore.runtime.daemon import LIVE_POINTS, live_block


def _ring_with_gap(gap: range) -> tuple[RingBuffer, np.ndarray]:
    n = 20 * LIVE_POINTS
    x = np.arange(2.0 * n).reshape(n, 2) / 3.0  # not round at 6 decimals
    ring = RingBuffer(2, 4 * n)
    ring.push(0, x[: gap.start], np.arange(float(gap.start)))
    ring.push(gap.stop, x[gap.stop :], np.arange(float(gap.stop), float(n)))
    return ring, x


def test_live_block_is_channels_by_bins_rounded_with_null_bins() -> None:
    per_bin = 4
    ring, x = _ring_with_gap(range(2 * per_bin, 3 * per_bin))  # bin 2 received nothing
    block = live_block(ring, 0, LIVE_POINTS * per_bin, rms=False)
    assert block is not None
    t0_s, values = block
    assert t0_s == np.mean(np.arange(per_bin))  # the first bin's mean sample time
    assert values.shape == (2, LIVE_POINTS)
    assert values.flags.c_contiguous  # what orjson serialises without a fallback
    expect = np.round(x[: LIVE_POINTS * per_bin].reshape(LIVE_POINTS, per_bin, 2).mean(1).T, 6)
    expect[:, 2] = np.nan
    np.testing.assert_array_equal(values, expect)


def test_live_block_whose_first_bin_received_nothing_is_not_sent() -> None:
    # after a gap the window starts in missing samples: its time is unknown (NaN), which
    # once stopped the daemon (no wall-clock time for NaN) and would be null in the payload
    ring, _ = _ring_with_gap(range(6))
    assert live_block(ring, 0, LIVE_POINTS * 4, rms=True) is None
    assert live_block(ring, 8, 8 + LIVE_POINTS * 4, rms=True) is not None
