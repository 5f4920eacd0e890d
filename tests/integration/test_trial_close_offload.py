"""A trial's closing fits run on a worker thread in real time: same results as inline."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from nmcore.config import load_station
from nmcore.runtime.daemon import Daemon

SIM_RIG = Path(__file__).resolve().parents[2] / "src/nmcore/configs_builtin/sim-rig.toml"


def _results(daemon: Daemon) -> list[dict[str, Any]]:
    return [o for o in daemon.outputs if o.get("type") == "trial_result"]


async def test_offloaded_close_matches_inline_and_runs_off_the_loop() -> None:
    station = load_station(SIM_RIG)
    inline = Daemon(station, realtime=False, publish=False)
    await inline.run(duration_s=20.0)

    threads: list[str] = []
    offloaded = Daemon(station, realtime=False, publish=False)

    def offload(job: Any) -> None:
        def traced() -> dict[str, Any]:
            threads.append(threading.current_thread().name)
            return job()  # type: ignore[no-any-return]

        offloaded._offload(traced)

    offloaded.trials._offload = offload
    await offloaded.run(duration_s=20.0)

    a, b = _results(inline), _results(offloaded)
    assert len(a) >= 2
    assert b == a  # the shutdown drains jobs still running
    assert threads
    assert all(t.startswith("nmcore-trial") for t in threads)
    assert any(r["force_onset_s"] is not None for r in b)


async def test_a_bug_in_the_closing_job_fails_the_daemon() -> None:
    station = load_station(SIM_RIG)
    daemon = Daemon(station, realtime=False, publish=False)

    def broken(job: Any) -> None:
        def boom() -> dict[str, Any]:
            raise ZeroDivisionError("bug in a closing fit")

        daemon._offload(boom)

    daemon.trials._offload = broken
    try:
        await daemon.run(duration_s=30.0)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the bug was swallowed")


async def test_the_trial_worker_thread_starts_before_ready(tmp_path: Path) -> None:
    # started lazily at the first trial's close, the thread start stalled the loop ~2 ms
    station = load_station(SIM_RIG)
    daemon = Daemon(station, realtime=True, publish=False, state_dir=tmp_path)
    at_ready: list[str] = []

    async def watch() -> None:
        await daemon.ready.wait()
        at_ready.extend(t.name for t in threading.enumerate())

    async with asyncio.TaskGroup() as tg:
        tg.create_task(watch())
        tg.create_task(daemon.run(duration_s=0.3))
    assert any(name.startswith("nmcore-trial") for name in at_ready)
    assert daemon._trial_pool is None  # shut down with the run
