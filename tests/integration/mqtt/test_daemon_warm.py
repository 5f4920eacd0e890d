"""Nothing compiles inside the event loop: the lab rig, publishing to a real broker (the live
view, status, results), runs past its first trial in a fresh interpreter and no jitted
function of nmcore gains a signature after `ready`. A kernel first called there is compiled
on the loop (a cold cache: ~0.5 s stall per kernel; a warm one still loads it from disk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]

_CHILD = """
import asyncio, json, sys
from pathlib import Path
from nmcore.config import load_station
from nmcore.runtime import eventloop
from nmcore.runtime.daemon import Daemon
from nmcore.runtime.warmup import kernel_signatures as signatures

station = load_station(Path(sys.argv[1]))
mqtt = station.mqtt.model_copy(update={"port": int(sys.argv[2]), "root": sys.argv[3]})
station = station.model_copy(update={"mqtt": mqtt})
daemon = Daemon(station, realtime=True, publish=True, state_dir=Path(sys.argv[4]))
out = {}

async def main():
    async def watch():
        await daemon.ready.wait()
        before = signatures()
        await asyncio.sleep(float(sys.argv[5]))
        after = signatures()
        out["late"] = sorted(k for k, n in after.items() if n > before.get(k, 0))
        out["kernels"] = len(after)
        out["trials"] = daemon.status()["trials_done"]
        daemon.stop()
    task = asyncio.create_task(watch())
    await daemon.run(None)
    await task

eventloop.run(main())
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)  # a fresh checkout compiles every kernel before ready
def test_no_kernel_is_first_called_after_ready(broker: Any, tmp_path: Path) -> None:
    # the lab rig's first trial starts 3 s after the start and closes ~1 s later
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(REPO / "configs" / "lab-rig.toml"),
         str(broker.port), "nmwarm", str(tmp_path / "state"), "6.5"],
        capture_output=True, text=True, timeout=580, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kernels"] > 20  # the scan found nmcore's kernels
    assert out["trials"] >= 1  # the trial paths ran
    assert out["late"] == [], f"compiled after ready (warm them in runtime.warmup): {out['late']}"
