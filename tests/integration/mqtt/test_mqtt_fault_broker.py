"""Nothing lost: results published through broker crashes and a publisher restart.

A producer publishes a numbered series of trial results through Publisher while the broker
is SIGKILLed and restarted several times and the publisher itself is restarted once. A
persistent subscriber (MQTT v5, clean_start False, a session that outlives disconnects,
QoS 1, manual acknowledgement) must end up with every result exactly once after
de-duplication by `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from nmcore.publish import MuscleOnset, Provenance, Publisher, TrialResultMessage

PersistentSubscriber = sys.modules["nmcore_tests_mosquitto"].PersistentSubscriber

ROOT = "nmtest"
N_RESULTS = 300
PERIOD_S = 0.01  # 100 results/s: the series spans about 3 s of faults
KILL_AT = (50, 100, 220)  # result numbers at which the broker is SIGKILLed
DOWN_S = 0.25  # how long the broker stays dead each time


def result(i: int) -> TrialResultMessage:
    return TrialResultMessage(
        t_s=float(i),
        trial_id=f"t{i:05d}",
        protocol="perturbation",
        stimulus_s=float(i),
        onsets=[MuscleOnset(channel="TA", onset_s=i + 0.08, latency_ms=80.0)],
        provenance=Provenance(nmcore_version="0"),
    )


@pytest.mark.slow
async def test_every_result_arrives_exactly_once_through_broker_crashes(
    mosquitto_cls: Any, station: str, tmp_path: Path, mqtt_config: Any
) -> None:
    broker = mosquitto_cls(tmp_path, persistence=True)
    broker.start()
    cfg = mqtt_config(broker, publish_timeout_s=1.0, keepalive_s=2)
    topic = f"{ROOT}/{station}/trial/result"
    stats: list[Any] = []

    crashes: list[asyncio.Task[None]] = []

    async def crash_and_restart_broker() -> None:
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(broker.start)

    async def produce() -> None:
        half = N_RESULTS // 2
        for first, last in ((0, half), (half, N_RESULTS)):  # the publisher restarts once
            async with Publisher(
                cfg, station, tmp_path, backoff_initial_s=0.05, backoff_max_s=0.4
            ) as pub:
                for i in range(first, last):
                    if i in KILL_AT:
                        await asyncio.gather(*crashes)  # one crash at a time
                        crashes.append(asyncio.create_task(crash_and_restart_broker()))
                    pub.publish_result(result(i))
                    await asyncio.sleep(PERIOD_S)
                await asyncio.gather(*crashes)
                assert await pub.flush(20.0), "outbox did not drain"
                stats.append(pub.stats)

    with PersistentSubscriber(broker, topic) as sub:
        try:
            await produce()
            want = {f"t{i:05d}" for i in range(N_RESULTS)}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15.0):
                    while sub.trial_ids() != want:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
        finally:
            broker.stop()
    received = list(sub.received)

    by_seq: dict[int, str] = {}
    for r in received:
        assert by_seq.setdefault(r["seq"], r["trial_id"]) == r["trial_id"], "seq reused"
    unique_ids = sorted(by_seq.values())
    counts = {
        "published": N_RESULTS,
        "received": len(received),
        "duplicates": len(received) - len(by_seq),
        "unique": len(by_seq),
        "missing": sorted(want - set(unique_ids))[:20],
        "publisher_reconnects": [s.reconnects for s in stats],
        "publisher_acked": [s.acked for s in stats],
        "broker_kills": len(crashes),
    }
    print("fault-test counts:", json.dumps(counts))
    assert counts["missing"] == []
    assert unique_ids == sorted(want)  # every result exactly once after de-duplication
    assert len(crashes) == len(KILL_AT)
    # a crash while the publisher is still reconnecting from the previous one adds none
    assert sum(s.reconnects for s in stats) >= 1
