"""A recording played back gives the live run's trial results: through `nmcore analyze
CONFIG RECORDING` (exactly, same config) and through `nmcore replay --fast` over a private
broker (same payloads minus the publisher's envelope)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

_HELPER = Path(__file__).resolve().parents[1] / "mosquitto.py"
_NAME = "nmcore_tests_mosquitto"
if _NAME not in sys.modules:  # tests/integration/mqtt/conftest.py loads it the same way
    _spec = importlib.util.spec_from_file_location(_NAME, _HELPER)
    assert _spec is not None
    assert _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _mod
    _spec.loader.exec_module(_mod)
mosquitto = sys.modules[_NAME]

ROOT = "nmreplay"
# envelope fields: stamped by whoever sends (publisher or analyze), not part of the result
ENVELOPE = ("seq", "sent_s", "utc", "station")
SCENARIO = {
    "seed": 11,
    "first_trial_s": 1.2,
    "trial_period_s": 1.8,
    "trial_jitter_s": 0.2,
    "motion_duration_ms": 300.0,
    "return_after_ms": 200.0,
    "return_duration_ms": 400.0,
}


def _toml(d: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())


def _config(tmp_path: Path, port: int, station: str) -> Path:
    dev = f"[devices.options.scenario]\n{_toml(SCENARIO)}\n"
    text = f"""
[station]
id = "{station}"
[[devices]]
id = "platform"
driver = "sim.platform"
{dev}[devices.options.transport]
kind = "serial"
packet_samples = 7
[[devices]]
id = "emg"
driver = "sim.emg"
[devices.options]
n_channels = 3
{dev}[devices.options.transport]
kind = "ble"
ble_interval_ms = 30.0
[[devices]]
id = "plate"
driver = "sim.forceplate"
{dev}[devices.options.transport]
kind = "serial"
packet_samples = 7
[detectors.perturbation]
source = "trigger"
trigger_stream = "platform.trigger"
imu_stream = "platform.imu"
force_stream = "plate.force"
[detectors.emg_onset]
stream = "emg.emg"
[detectors.force_response]
stream = "plate.force"
[detectors.cop_sway]
stream = "plate.force"
input = "six_axis"
window_s = 2.0
update_every_s = 1.0
[recording]
enabled = true
directory = "{tmp_path / "rec"}"
[mqtt]
host = "127.0.0.1"
port = {port}
root = "{ROOT}"
keepalive_s = 2
"""
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmcore.cli.main", "--log-level", "WARNING", *args]


def _strip(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ENVELOPE}


def _results(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["trial_id"]: _strip(p) for p in lines if p.get("type") == "trial_result"}


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Any, str]]:
    """The simulated rig in real time for ~9 s, recording, results printed to stdout (MQTT
    configured for the replay but off in the live run)."""
    if not mosquitto.mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    tmp = tmp_path_factory.mktemp("replay")
    station = f"replay-{uuid.uuid4().hex[:6]}"
    with mosquitto.Mosquitto(tmp) as broker:
        cfg = _config(tmp, broker.port, station)
        out = tmp / "live.jsonl"
        log = tmp / "live.log"
        cmd = _cli("run", str(cfg), "--no-mqtt", "--state-dir", str(tmp / "state"))
        with out.open("wb") as so, log.open("wb") as se:
            proc = subprocess.Popen(
                cmd, stdout=so, stderr=se, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        try:
            time.sleep(9.0)
            # stop right after a perturbation: that trial is open and closes at shutdown
            # (quality.incomplete), the case where live and replay could legitimately differ
            seen = out.read_text().count('"type":"perturbation"')
            deadline = time.monotonic() + 5.0
            while out.read_text().count('"type":"perturbation"') == seen:
                assert time.monotonic() < deadline, "no perturbation: " + log.read_text()
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        (rec,) = (tmp / "rec").iterdir()
        yield cfg, rec, broker, station


def _load(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_analyze_of_the_recording_gives_the_live_trial_results(
    live_run: tuple[Path, Path, Any, str], tmp_path: Path
) -> None:
    cfg, rec, _, _ = live_run
    live = _results(_load(cfg.parent / "live.jsonl"))
    assert len(live) >= 3, "too few trials in the live run"
    out = tmp_path / "analyzed.jsonl"
    res = subprocess.run(
        _cli("analyze", str(cfg), str(rec), "--output", str(out)),
        capture_output=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode()
    replayed = _results(_load(out))
    # The live run's last trial was open at SIGTERM and closed at shutdown with what the
    # ring held (quality.incomplete). Every block the ring got went to the recorder, which
    # the clean stop flushed, so analyze closes that trial at the end of the data with the
    # same samples: equal as well. (After a SIGKILL it would differ: the recording ends up
    # to one flush interval earlier, and the live run never published that trial.)
    complete = {k: v for k, v in live.items() if not v["quality"]["incomplete"]}
    incomplete = [k for k, v in live.items() if v["quality"]["incomplete"]]
    assert len(complete) >= 3
    assert incomplete == [max(live)], "the trial open at the stop should be the incomplete one"
    assert set(replayed) == set(live)
    for tid, result in live.items():
        assert replayed[tid] == result, tid
    detected = [m for r in complete.values() for m in r["onsets"] if m["detected"]]
    assert detected, "no onset detected: the comparison would be empty"
    live_all, ana_all = _load(cfg.parent / "live.jsonl"), _load(out)
    for kind in ("onset", "perturbation", "gap"):
        assert [_strip(p) for p in ana_all if p.get("type") == kind] == [
            _strip(p) for p in live_all if p.get("type") == kind
        ], kind
    # sway: the live sliding windows, then analyze's whole-record measure (live has none)
    live_sway = [_strip(p) for p in live_all if p.get("type") == "sway"]
    ana_sway = [_strip(p) for p in ana_all if p.get("type") == "sway"]
    assert len(live_sway) >= 3
    assert ana_sway[: len(live_sway)] == live_sway
    assert all(p["window_s"] > 2.0 for p in ana_sway[len(live_sway) :])


async def test_replay_fast_publishes_the_same_trial_results(
    live_run: tuple[Path, Path, Any, str], tmp_path: Path
) -> None:
    cfg, rec, broker, station = live_run
    live = _results(_load(cfg.parent / "live.jsonl"))
    got: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(f"{ROOT}/{station}/trial/result", qos=1)
        proc = await asyncio.create_subprocess_exec(
            *_cli("replay", str(rec), "--fast", "--quiet", "--state-dir", str(tmp_path / "st")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                async for msg in client.messages:
                    payload = orjson.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    got[payload["trial_id"]] = payload
                    if len(got) >= len(live):
                        break
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            assert proc.returncode == 0, err.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert set(got) == set(live)
    for tid, payload in got.items():
        assert payload["station"] == station
        assert _strip(payload) == live[tid], tid
