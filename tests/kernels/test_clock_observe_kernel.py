"""`_clock_kernels.observe_block` (the clock model's per-packet fast path) against the model's
Python implementation, `ClockModel._observe`, and against its own `.py_func`.

The kernel does the steady case and hands every other packet to Python, so the two must
leave the model in the same state to the bit, whatever the link does: batches, stalls, a
clock step back, a corrupt timestamp, time-sync answers, a reconnection.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from nmcore import _clock_kernels as ck
from nmcore import clock as clock_mod
from nmcore.clock import ClockModel

FloatArray = npt.NDArray[np.float64]
RATE_HZ = 1000.0
PERIOD_S = 1.0 / RATE_HZ


class CountingModel(ClockModel):
    """Counts the packets that went through the Python path."""

    __slots__ = ("in_python",)

    def __init__(self) -> None:
        super().__init__(window_s=20.0, nominal_rate_hz=RATE_HZ)
        self.in_python = 0

    def _observe(self, device_time_s: float, arrival_s: float, *, packet: bool) -> None:
        self.in_python += packet
        super()._observe(device_time_s, arrival_s, packet=packet)


class PythonModel(CountingModel):
    """The reference: every packet through `_observe`, replays after a confirmed
    discontinuity too (`_anomaly` replays through `observe`)."""

    __slots__ = ()

    def observe(self, device_time_s: float, arrival_s: float) -> None:
        self._observe(device_time_s, arrival_s, packet=True)


Delivery = tuple[str, float, int, int, float]  # ("data", first_dev_s, P, packets, arrival)


def deliveries(link: str, seed: int, duration_s: float = 60.0) -> Iterator[Delivery | tuple]:
    """Deliveries of packets of P samples from a drifting device: BLE-like events carrying
    several packets, sparse frames (one packet every few 30 ms events: the event-grid
    bounds), or USB-like 16 ms flushes; exponential host delays, 20-60 ms stalls, a
    device clock that steps back 3 s at 25 s, one packet with a corrupt timestamp at 40 s,
    a reconnection (`reset`) at 50 s, and time-sync exchanges every second."""
    rng = np.random.default_rng(seed)
    drift = 80e-6
    interval_s, P = {"ble": (0.0075, 3), "sparse": (0.030, 100), "serial": (0.016, 7)}[link]
    host0 = 1000.0
    dev_offset = 0.0
    n_sent = 0  # samples sent so far
    t = 0.0
    next_sync = 1.0
    stepped = corrupted = reconnected = False
    while t < duration_s:
        t += interval_s
        if link != "serial" and rng.random() < 0.1:
            t += interval_s  # an empty connection event
        ready = int(t * RATE_HZ) // P * P
        packets = (ready - n_sent) // P
        if packets <= 0:
            continue
        if not stepped and t > 25.0:
            stepped = True
            dev_offset -= 3.0  # the device clock restarts
        if not reconnected and t > 50.0:
            reconnected = True
            yield ("reset",)
        delay = rng.exponential(0.0008) + (rng.uniform(0.02, 0.06) if rng.random() < 0.01 else 0)
        arrival = host0 + t * (1 + drift) + delay
        first_dev = n_sent * PERIOD_S + dev_offset
        if not corrupted and t > 40.0:
            corrupted = True
            yield ("data", first_dev + 1.0, P, 1, arrival)  # a timestamp 1 s ahead
            first_dev += P * PERIOD_S
            packets -= 1
            n_sent += P
        if packets:
            yield ("data", first_dev, P, packets, arrival)
        n_sent += packets * P
        if t >= next_sync:
            next_sync += 1.0
            send = arrival + 0.0001
            dev = (send - host0) / (1 + drift) + dev_offset + 0.0003
            yield ("sync", send, dev, send + 0.0007 + rng.exponential(0.0003))


def run(model: ClockModel, link: str, seed: int, *, reference: bool) -> list[FloatArray]:
    outs = []
    for d in deliveries(link, seed):
        if d[0] == "reset":
            model.reset()
            continue
        if d[0] == "sync":
            model.observe_sync(d[1], d[2], d[3])
            continue
        _, first, P, packets, arrival = d
        # every third delivery lost its head (a duplicate the pipeline skipped) and every
        # fifth its tail: packet ends off the block's own grid, a last end that is no
        # packet's (the pipeline's cases)
        n = P * packets
        skip = (len(outs) % P) if len(outs) % 3 == 0 and packets > 1 else 0
        cut = 2 if len(outs) % 5 == 0 and n - skip > 2 else 0
        first += skip * PERIOD_S
        n_keep = n - skip - cut
        k_start = (P - 1 - skip) % P
        out = np.empty(n_keep)
        if reference:
            for k in [*range(k_start, n_keep - 1, P), n_keep - 1]:
                model.observe(k * PERIOD_S + first, arrival)
            model.to_host_grid(first, PERIOD_S, out)
        else:
            model.observe_block(first, PERIOD_S, k_start, P, n_keep - 1, arrival, out)
        outs.append(out)
    return outs


def assert_same_state(a: ClockModel, b: ClockModel) -> None:
    for name in ClockModel.__slots__:
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert va == vb or (va != va and vb != vb), name
    assert a.stats(2000.0) == b.stats(2000.0)


@pytest.mark.parametrize("link", ["ble", "sparse", "serial"])
@pytest.mark.parametrize("seed", [1, 2])
def test_kernel_leaves_the_model_as_the_python_path_does(link: str, seed: int) -> None:
    ref, fast = PythonModel(), CountingModel()
    outs_ref = run(ref, link, seed, reference=True)
    outs_fast = run(fast, link, seed, reference=False)
    assert len(outs_ref) == len(outs_fast) >= 600
    for i, (a, b) in enumerate(zip(outs_ref, outs_fast, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"delivery {i}")
    assert_same_state(ref, fast)
    # every path was taken: the resets and the step back happened, and Python saw what the
    # kernel leaves to it (bins to close, suspected steps) but only that; sparse frames
    # close a bin or wait past stall_tol_s (a stall to check) at most packets
    assert fast.stats(2000.0).resets >= 2
    assert fast.discontinuities >= 1
    assert 20 < fast.in_python < (0.95 if link == "sparse" else 0.1) * ref.in_python
    if link == "sparse":  # the link's event grid was found (its bounds then fed the bins)
        assert fast._grid_iv == pytest.approx(0.030, rel=0.01)


def test_py_func_agrees_with_the_compiled_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = CountingModel()
    outs_c = run(compiled, "ble", 3, reference=False)
    monkeypatch.setattr(clock_mod, "observe_block", ck.observe_block.py_func)
    interpreted = CountingModel()
    outs_i = run(interpreted, "ble", 3, reference=False)
    for a, b in zip(outs_c, outs_i, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_state(compiled, interpreted)


def test_observe_is_the_kernel_path_for_one_packet() -> None:
    one, ref = CountingModel(), PythonModel()
    for d in deliveries("serial", 4, duration_s=20.0):
        if d[0] != "data":
            continue
        _, first, P, packets, arrival = d
        for k in [*range(P - 1, P * packets - 1, P), P * packets - 1]:
            one.observe(k * PERIOD_S + first, arrival)
            ref.observe(k * PERIOD_S + first, arrival)
    assert_same_state(one, ref)
    assert 0 < one.in_python < 0.1 * ref.in_python


def test_first_block_of_a_fit_and_a_bad_step() -> None:
    model = ClockModel(nominal_rate_hz=RATE_HZ)
    with pytest.raises(ValueError, match="k_step"):
        model.observe_block(0.0, PERIOD_S, 0, 0, 3, 1.0, np.empty(4))
    # no packet observed yet: the first goes through Python (it starts the fit), the second
    # through the kernel (same arrival, later device time: it lowers the line onto itself),
    # and the block is mapped under that fit
    out = model.observe_block(0.0, PERIOD_S, 1, 2, 3, 5.0, np.empty(4))
    assert model.stats(5.0).n_observations == 2
    np.testing.assert_allclose(out, 5.0 + (np.arange(4) - 3) * PERIOD_S, rtol=0, atol=1e-12)
