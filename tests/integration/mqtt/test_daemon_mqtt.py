"""The daemon on the simulated rig against a real broker: retained status and last will,
trial results with the documented schema, commands, and nothing lost through broker crashes
and a daemon restart (checked against the simulator's ground truth)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nmcore.publish import CommandReply, LiveMessage, StatusMessage, TrialResultMessage
from nmcore.runtime.daemon import LIVE_POINTS

PersistentSubscriber = sys.modules["nmcore_tests_mosquitto"].PersistentSubscriber
ROOT = "nmtest"

SCENARIO = {
    "seed": 5,
    "first_trial_s": 1.5,
    "trial_period_s": 2.0,
    "trial_jitter_s": 0.2,
    "motion_duration_ms": 300.0,
    "return_after_ms": 200.0,
    "return_duration_ms": 400.0,
}


def _config(tmp_path: Path, broker: Any, station: str) -> Path:
    dev = (
        f"[devices.options.scenario]\n{_toml(SCENARIO)}\n"
        '[devices.options.transport]\nkind = "serial"\npacket_samples = 7\n'
    )
    text = f"""
[station]
id = "{station}"
[[devices]]
id = "platform"
driver = "sim.platform"
{dev}
[[devices]]
id = "emg"
driver = "sim.emg"
[devices.options]
n_channels = 2
{dev}
[[devices]]
id = "plate"
driver = "sim.forceplate"
{dev}
[detectors.perturbation]
source = "trigger"
trigger_stream = "platform.trigger"
[detectors.emg_onset]
stream = "emg.emg"
[detectors.force_response]
stream = "plate.force"
[mqtt]
host = "{broker.host}"
port = {broker.port}
root = "{ROOT}"
keepalive_s = 2
publish_timeout_s = 1.0
"""
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module", autouse=True)
def _warm_numba_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fill numba's on-disk cache once (a fresh checkout compiles every kernel: tens of
    seconds on a loaded machine) so the daemons below start in about a second."""
    cfg = tmp_path_factory.mktemp("warm") / "warm.toml"
    cfg.write_text(
        '[[devices]]\nid = "p"\ndriver = "sim.platform"\n'
        '[[devices]]\nid = "e"\ndriver = "sim.emg"\n'
        '[[devices]]\nid = "f"\ndriver = "sim.forceplate"\n'
        '[detectors.perturbation]\ntrigger_stream = "p.trigger"\n'
        '[detectors.emg_onset]\nstream = "e.emg"\n[detectors.force_response]\nstream = "f.force"\n'
        '[detectors.cop_sway]\nstream = "f.force"\nwindow_s = 2.0\n'
    )
    subprocess.run(
        [sys.executable, "-m", "nmcore.cli.main", "--log-level", "WARNING", "run", str(cfg),
         "--fast", "--duration", "6", "--quiet", "--no-mqtt"],
        check=True,
        timeout=600,
    )  # fmt: skip


def _toml(d: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())


def _start_daemon(cfg: Path, state: Path, truth: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "nmcore.cli.main", "--log-level", "WARNING", "run", str(cfg),
           "--quiet", "--state-dir", str(state), "--truth", str(truth)]  # fmt: skip
    with (truth.parent / f"{truth.stem}.log").open("wb") as log:  # the child keeps its copy
        return subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=20)
    return rc, time.monotonic() - t0


async def _wait_status(client: aiomqtt.Client, state: str, timeout_s: float) -> StatusMessage:
    async with asyncio.timeout(timeout_s):
        async for msg in client.messages:
            if str(msg.topic).endswith("/status") and "/device/" not in str(msg.topic):
                status = StatusMessage.model_validate_json(bytes(msg.payload))  # type: ignore[arg-type]
                if status.state == state:
                    return status
    raise AssertionError("unreachable")


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first one may include a cold numba compile
async def test_status_will_results_and_commands(broker: Any, station: str, tmp_path: Path) -> None:
    cfg = _config(tmp_path, broker, station)
    proc = _start_daemon(cfg, tmp_path / "state", tmp_path / "truth.jsonl")
    base = f"{ROOT}/{station}"
    try:
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.subscribe(f"{base}/#", qos=1)
            await _wait_status(client, "ready", 60)

            replies: dict[str, CommandReply] = {}
            reply_topic = f"{base}/reply/{uuid.uuid4().hex[:8]}"
            await client.subscribe(reply_topic, qos=1)

            async def command(name: str, payload: bytes, corr: str) -> None:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = reply_topic
                props.CorrelationData = corr.encode()
                await client.publish(f"{base}/cmd/{name}", payload, qos=1, properties=props)

            await command("get_state", b"{}", "c1")
            # ready means the devices were started, not that they streamed: tare needs a
            # complete second of plate data
            await asyncio.sleep(2.0)
            await command("set_subject", b'{"subject_id": "P07", "session_id": "S2"}', "c2")
            await command("tare", b"{}", "c3")  # a person stands on the simulated plate
            await command("get_state", b"{not json", "c4")
            await command("stop_trial", b"{}", "c5")  # no trial running yet (or one closes)
            await command("launch_rocket", b"{}", "c6")

            results: list[TrialResultMessage] = []
            live: dict[str, list[LiveMessage]] = {}
            # Trials run from 1.5 s after the devices start: one may close before the daemon
            # has the subject. Results are stamped with the subject when published, so a
            # trial whose stimulus came after set_subject's reply (host monotonic clock,
            # shared with the daemon) must carry it; the two trials checked are such.
            subject_set_s = math.inf
            async with asyncio.timeout(60):
                async for msg in client.messages:
                    topic = str(msg.topic)
                    raw = bytes(msg.payload)  # type: ignore[arg-type]
                    if topic == reply_topic:
                        corr = msg.properties.CorrelationData.decode()  # type: ignore[union-attr]
                        replies[corr] = CommandReply.model_validate_json(raw)
                        if corr == "c2":
                            subject_set_s = time.monotonic()
                    elif topic == f"{base}/trial/result":
                        result = TrialResultMessage.model_validate_json(raw)
                        if result.stimulus_s > subject_set_s:
                            results.append(result)
                        else:
                            assert result.subject_id in (None, "P07")
                    elif topic.startswith(f"{base}/live/"):
                        msg_live = LiveMessage.model_validate_json(raw)
                        assert topic.endswith(f"/{msg_live.stream_id}")
                        live.setdefault(msg_live.stream_id, []).append(msg_live)
                    if len(replies) == 6 and len(results) >= 2:
                        break
            assert replies["c1"].ok
            assert set(replies["c1"].result or {}) >= {"devices", "loop_lag_p99_ms"}
            assert replies["c2"].ok
            assert not replies["c3"].ok
            assert replies["c3"].error is not None
            assert replies["c3"].error.code == "plate_loaded"
            assert not replies["c4"].ok
            assert not replies["c6"].ok
            for r in results:
                assert r.subject_id == "P07"
                assert r.session_id == "S2"
                assert r.stimulus_source in {"trigger", "command"}
                assert r.provenance.nmcore_version
                assert r.provenance.device_ids == ["emg", "plate", "platform"]
            detected = [o for r in results for o in r.onsets if o.detected]
            assert detected, "no muscle onset in two trials"
            assert all(20 <= (o.latency_ms or 0) <= 500 for o in detected)
            # live views for dashboards: every stream, LIVE_POINTS bins per channel, in order
            assert set(live) == {"platform.trigger", "platform.imu", "emg.emg", "plate.force"}
            for sid, msgs in live.items():
                assert len(msgs) >= 10, sid
                t0s = [m.t0_s for m in msgs]
                assert t0s == sorted(t0s), sid
                for m in msgs:
                    assert len(m.values) == len(m.channels)
                    assert all(len(v) == LIVE_POINTS for v in m.values)
                    # a bin is a whole number of samples (how many depends on the tick)
                    per_bin = (2000.0 if sid == "emg.emg" else 1000.0) / m.rate_hz
                    assert per_bin >= 1.0, sid
                    assert per_bin == pytest.approx(round(per_bin)), sid
            emg = [v for m in live["emg.emg"] for ch in m.values for v in ch]
            assert all(v is not None and v >= 0.0 for v in emg)  # an RMS envelope
            assert max(emg) > 0.0  # type: ignore[type-var]

            proc.kill()  # SIGKILL: no goodbye, the broker publishes the will
            proc.wait(timeout=10)
            lost = await _wait_status(client, "lost", 30)
            assert lost.state == "lost"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first one may include a cold numba compile
async def test_no_result_lost_through_broker_crashes_and_a_daemon_restart(
    mosquitto_cls: Any, station: str, tmp_path: Path
) -> None:
    broker = mosquitto_cls(tmp_path, persistence=True)
    broker.start()
    cfg = _config(tmp_path, broker, station)
    state = tmp_path / "state"
    truths = [tmp_path / "truth1.jsonl", tmp_path / "truth2.jsonl"]
    stop_times: list[float] = []
    crashes = 0
    with PersistentSubscriber(broker, f"{ROOT}/{station}/trial/result", f"sub-{station}") as sub:
        try:
            for run, truth in enumerate(truths):
                proc = _start_daemon(cfg, state, truth)
                try:
                    await asyncio.sleep(7.0)
                    for _ in range(2 if run == 0 else 1):  # broker SIGKILLed 3 times in all
                        await asyncio.to_thread(broker.kill)
                        await asyncio.sleep(1.0)
                        await asyncio.to_thread(broker.start)
                        crashes += 1
                        await asyncio.sleep(3.0)
                    await asyncio.sleep(2.0)
                    stop_times.append(time.monotonic())
                    rc, took_s = _stop(proc)  # a clean restart: SIGTERM
                    assert rc == 0, (truth.parent / f"{truth.stem}.log").read_text()
                    assert took_s < 5.0, f"shutdown took {took_s:.1f} s"
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            # every trial whose response window closed before the stop must be there
            expected = 0
            for truth, stop_s in zip(truths, stop_times, strict=True):
                recs = [orjson.loads(line) for line in truth.read_text().splitlines()]
                expected += sum(1 for r in recs if r["type"] == "trial" and r["t_s"] < stop_s - 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    while len(sub.trial_ids()) < expected:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        finally:
            broker.stop()
    received = sub.snapshot()
    by_seq: dict[int, str] = {}
    for r in received:
        assert by_seq.setdefault(r["seq"], r["trial_id"]) == r["trial_id"], "seq reused"
    unique = set(by_seq.values())
    print(
        f"broker crashes {crashes}, daemon runs {len(truths)}, truth trials {expected}, "
        f"received {len(received)}, unique {len(unique)}, duplicates {len(received) - len(unique)}"
    )
    assert crashes == 3
    # at least every trial the truth says completed, each exactly once after de-duplication
    assert len(unique) >= expected
    assert len(unique) == len({r["trial_id"] for r in received})
