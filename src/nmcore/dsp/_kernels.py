"""Numba kernels for IIR filtering (second-order sections, direct form II transposed)."""

from __future__ import annotations

import numpy as np

from nmcore._numba import jit


@jit
def sosfilt_block(sos: np.ndarray, x: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """Filter a (n_samples, n_channels) block through cascaded biquads, carrying `state`.

    sos: (n_sections, 6) rows [b0 b1 b2 a0 a1 a2] with a0 == 1. state: (n_channels,
    n_sections, 2), updated in place so the next block continues seamlessly. For each section:
    y = b0 x + z0; z0 = b1 x - a1 y + z1; z1 = b2 x - a2 y  (the same recursion as scipy's).
    """
    n_samples = x.shape[0]
    n_channels = x.shape[1]
    n_sections = sos.shape[0]
    for i in range(n_samples):
        for c in range(n_channels):
            v = x[i, c]
            for s in range(n_sections):
                z0 = state[c, s, 0]
                z1 = state[c, s, 1]
                y = sos[s, 0] * v + z0
                state[c, s, 0] = sos[s, 1] * v - sos[s, 4] * y + z1
                state[c, s, 1] = sos[s, 2] * v - sos[s, 5] * y
                v = y
            out[i, c] = v
