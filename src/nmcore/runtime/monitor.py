"""Event-loop lag and CPU use, measured while the daemon runs."""

from __future__ import annotations

import asyncio
import time

import numpy as np

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """Runs a timer callback every `interval_s` and records how late each one ran.

    20 probes a second by default: a timer wake-up costs the process 80-230 us of CPU on the
    2-core lab machines (`benchmarks/bench_daemon.py`, daemon_wakeup_floor_cpu_pct), so
    probing at 100 Hz cost 0.8-2 % of a core, a large part of the rig's CPU budget, for the
    same lag distribution sampled more densely (p99 of a minute still rests on 1200 probes).
    `keep` probes are kept: ~17 min.
    """

    def __init__(self, interval_s: float = 0.05, keep: int = 20_000) -> None:
        self.interval_s = interval_s
        self._lags_s = np.zeros(keep)
        self._n = 0
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    async def run(self) -> None:
        """Probe until cancelled. Each probe is a timer callback due `interval_s` after the
        previous one ran; its lag is how late it runs (a sleeping task would cost a second
        pass of the loop per probe: the timer completes a future, then the task steps)."""
        loop = asyncio.get_running_loop()
        lags = self._lags_s
        timer: asyncio.TimerHandle | None = None

        def probe(due_s: float) -> None:
            nonlocal timer
            now_s = loop.time()  # time.monotonic, as every asyncio loop on Linux
            lags[self._n % lags.shape[0]] = max(now_s - due_s, 0.0)
            self._n += 1
            due_s = now_s + self.interval_s
            timer = loop.call_at(due_s, probe, due_s)

        due_s = loop.time() + self.interval_s
        timer = loop.call_at(due_s, probe, due_s)
        try:
            await loop.create_future()  # until cancelled
        finally:
            if timer is not None:
                timer.cancel()

    def lag_ms(self, q: float) -> float:
        n = min(self._n, self._lags_s.shape[0])
        return float(np.quantile(self._lags_s[:n], q) * 1e3) if n else float("nan")

    def cpu_percent(self) -> float:
        wall_s = time.monotonic() - self._wall0
        return 100.0 * (time.process_time() - self._cpu0) / wall_s if wall_s > 0 else 0.0

    def restart(self) -> None:
        self._n = 0
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()
