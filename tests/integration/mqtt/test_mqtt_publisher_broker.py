"""Publisher against a real Mosquitto: status, events, results, live, outbox, last will."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson

from nmcore.publish import (
    DeviceStatusMessage,
    GapEvent,
    LiveMessage,
    MuscleOnset,
    OnsetEvent,
    Provenance,
    Publisher,
    TrialResultMessage,
)
from nmcore.publish.schemas import ClockFigures, StatusMessage

ROOT = "nmtest"
CHILD = Path(__file__).with_name("will_child.py")


def result(i: int) -> TrialResultMessage:
    return TrialResultMessage(
        t_s=100.0 + i,
        trial_id=f"t{i:04d}",
        protocol="perturbation",
        stimulus_s=100.0 + i,
        onsets=[MuscleOnset(channel="TA", onset_s=100.08 + i, latency_ms=80.0, premotor_ms=80.0)],
        provenance=Provenance(nmcore_version="0.1.0"),
    )


async def test_status_device_status_events_and_results_arrive(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    base = f"{ROOT}/{station}"
    async with subscriber(broker, [f"{base}/#"]) as (_, got):
        async with Publisher(mqtt_config(broker), station, tmp_path) as pub:
            assert await pub.wait_connected(5.0)
            pub.set_status("ready", "2 devices")
            pub.set_device_status(
                DeviceStatusMessage(
                    device_id="emg1",
                    state="streaming",
                    clock=ClockFigures(drift_ppm=12.5, arrival_jitter_ms=0.8),
                    battery_pct=87.0,
                )
            )
            pub.publish_event(
                GapEvent(
                    t_s=5.0,
                    stream_id="emg1.emg",
                    first_index=100,
                    missing_samples=4,
                    start_s=5.0,
                    end_s=5.002,
                )
            )
            pub.publish_result(result(1))
            assert await pub.flush(5.0)
            await got.wait_for(lambda m: len(m) >= 5)
            assert pub.stats.acked == 2
            assert pub.stats.outbox_depth == 0

        await got.wait_for(lambda m: m[-1].topic.endswith("status") and b"stopped" in m[-1].payload)
        status = [m.json() for m in got.on(f"{base}/status")]
        assert [s["state"] for s in status] == ["init", "ready", "stopping", "stopped"]
        assert status[1]["detail"] == "2 devices"
        dev = got.on(f"{base}/device/emg1/status")[0].json()
        assert dev["clock"]["drift_ppm"] == 12.5
        assert dev["battery_pct"] == 87.0
        gap = got.on(f"{base}/event/gap")[0].json()
        res = got.on(f"{base}/trial/result")[0].json()
        assert gap["missing_samples"] == 4
        assert res["onsets"][0]["latency_ms"] == 80.0
        seqs = [m.json()["seq"] for m in got.messages]
        assert len(set(seqs)) == len(seqs)
        assert gap["seq"] < res["seq"]
        assert res["station"] == station
        assert res["utc"].endswith("Z")
        # what went over the wire validates against the published schema models
        TrialResultMessage.model_validate_json(got.on(f"{base}/trial/result")[0].payload)
        GapEvent.model_validate_json(got.on(f"{base}/event/gap")[0].payload)
        DeviceStatusMessage.model_validate_json(got.on(f"{base}/device/emg1/status")[0].payload)

    # a dashboard connecting later sees the retained daemon and device status
    async with subscriber(broker, [f"{base}/status", f"{base}/device/+/status"]) as (_, late):
        await late.wait_for(lambda m: len(m) >= 2)
        assert all(m.retain for m in late.messages)
        assert late.on(f"{base}/status")[0].json()["state"] == "stopped"


async def test_outbox_holds_messages_until_the_broker_appears(
    mosquitto_cls: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    broker = mosquitto_cls(tmp_path)  # not started yet
    cfg = mqtt_config(broker)
    base = f"{ROOT}/{station}"
    try:
        async with Publisher(
            cfg, station, tmp_path, backoff_initial_s=0.05, backoff_max_s=0.2
        ) as pub:
            for i in range(20):
                pub.publish_result(result(i))
            await asyncio.sleep(0.3)
            assert not pub.connected
            assert pub.stats.outbox_depth == 20
            live = LiveMessage(
                stream_id="emg1.emg", t0_s=0, rate_hz=100, channels=["a"], values=[[1.0]]
            )
            assert pub.publish_live(live) is False
            assert pub.stats.dropped_live == 1
            broker.start()
            async with subscriber(broker, [f"{base}/trial/result"]) as (_, got):
                assert await pub.flush(10.0)
                await got.wait_for(lambda m: len(m) == 20)
                ids = [m.json()["trial_id"] for m in got.messages]
                assert ids == [f"t{i:04d}" for i in range(20)]
    finally:
        broker.stop()


async def test_outbox_survives_a_publisher_restart(
    mosquitto_cls: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    broker = mosquitto_cls(tmp_path)
    cfg = mqtt_config(broker)
    async with Publisher(cfg, station, tmp_path, backoff_initial_s=0.05) as pub:
        for i in range(5):
            pub.publish_result(result(i))
        last_seq = pub.stats  # nothing can be sent: no broker
        assert last_seq.outbox_depth == 5
    broker.start()
    try:
        async with subscriber(broker, [f"{ROOT}/{station}/#"]) as (_, got):
            async with Publisher(cfg, station, tmp_path) as pub2:
                assert await pub2.flush(5.0)
                pub2.publish_result(result(99))
                assert await pub2.flush(5.0)
            results = await got.wait_for(
                lambda m: len(got.on(f"{ROOT}/{station}/trial/result")) == 6
            )
            res = [m.json() for m in results if m.topic.endswith("trial/result")]
            assert [r["trial_id"] for r in res] == [f"t{i:04d}" for i in range(5)] + ["t0099"]
            # the restarted publisher continues the sequence instead of reusing numbers
            assert res[-1]["seq"] > max(r["seq"] for r in res[:-1])
    finally:
        broker.stop()


async def test_live_is_qos0_with_expiry_and_rate_capped(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    cfg = mqtt_config(broker, live_rate_hz=10.0)
    topic = f"{ROOT}/{station}/live/emg1.emg"
    async with (
        subscriber(broker, [topic], qos=0) as (_, got),
        Publisher(cfg, station, tmp_path) as pub,
    ):
        assert await pub.wait_connected(5.0)
        block = LiveMessage(
            stream_id="emg1.emg",
            t0_s=1.0,
            rate_hz=100.0,
            channels=["TA", "GM"],
            values=[[0.1, 0.2], [0.3, float("nan")]],
        )
        sent = [pub.publish_live(block) for _ in range(10)]
        # the bucket allows a burst of 3 and then 10 Hz: in a tight loop only the burst passes
        assert sent[:3] == [True, True, True]
        assert sent.count(True) == 3
        assert pub.stats.dropped_live == 7
        await got.wait_for(lambda m: len(m) == 3)
        msg = got.messages[0]
        assert msg.properties.MessageExpiryInterval <= 2
        body = msg.json()
        assert body["values"] == [[0.1, 0.2], [0.3, None]]
        await asyncio.sleep(0.15)
        assert pub.publish_live(block)


async def test_live_block_from_numpy_is_a_live_message(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    cfg = mqtt_config(broker)
    topic = f"{ROOT}/{station}/live/emg1.emg"
    values = np.array([[0.1, 0.25, np.nan], [1e-7, -2.0, 3.0]])  # channels x samples
    async with (
        subscriber(broker, [topic], qos=0) as (_, got),
        Publisher(cfg, station, tmp_path) as pub,
    ):
        assert await pub.wait_connected(5.0)
        assert pub.publish_live_block("emg1.emg", 12.5, 200.0, ("TA", "GM"), values)
        assert pub.publish_live(
            LiveMessage(
                stream_id="emg1.emg", t0_s=12.5, rate_hz=200.0, channels=["TA", "GM"],
                values=[[0.1, 0.25, None], [1e-7, -2.0, 3.0]],
            )
        )  # fmt: skip
        # a view that is not C-contiguous goes out through the encoder's fallback
        transposed = np.ascontiguousarray(values.T).T
        assert not transposed.flags.c_contiguous
        assert pub.publish_live_block("emg1.emg", 12.5, 200.0, ("TA", "GM"), transposed)
        await got.wait_for(lambda m: len(m) == 3)
    from_numpy, from_model, from_view = (m.json() for m in got.messages)
    assert from_view["values"] == from_numpy["values"]
    # the same payload as the model's, stamped alike; NaN went out as null
    assert LiveMessage.model_validate(from_numpy).values == [[0.1, 0.25, None], [1e-7, -2.0, 3.0]]
    assert from_model["seq"] == from_numpy["seq"] + 1
    for body in (from_numpy, from_model):
        del body["seq"], body["sent_s"], body["utc"]  # per message
    assert from_numpy == from_model
    assert from_numpy["station"] == station
    assert from_numpy["schema_version"] == 1


async def test_live_is_refused_and_counted_while_the_socket_is_backed_up(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any
) -> None:
    cfg = mqtt_config(broker, live_rate_hz=200.0)
    channels = [f"c{k}" for k in range(16)]
    values = np.full((16, 4000), 1.5)  # ~260 kB of JSON a message
    async with Publisher(cfg, station, tmp_path) as pub:
        assert await pub.wait_connected(5.0)
        broker.pause()  # the connection stays up; the socket's buffers fill
        try:
            for i in range(1000):  # 4 streams, each well under its rate cap
                if not pub.publish_live_block(f"s{i % 4}.emg", 1.0, 100.0, channels, values):
                    break
                await asyncio.sleep(0.005)  # paho writes what the socket still takes
            else:
                raise AssertionError("a backed-up socket never refused a live message")
            assert pub.stats.dropped_live == 1
            await asyncio.sleep(0.02)
            assert not pub.publish_live_block("s0.emg", 1.0, 100.0, channels, values)
            assert pub.stats.dropped_live == 2
            # refused for the backed-up socket, not for a lost connection
            assert pub.connected
            assert pub.stats.reconnects == 0
        finally:
            broker.resume()
        # once paho has written them out, live flows again
        for _ in range(200):
            await asyncio.sleep(0.02)
            if pub.publish_live_block("y.emg", 1.0, 100.0, channels, values[:, :2]):
                break
        else:
            raise AssertionError("live stayed refused after the broker came back")


async def test_live_keeps_flowing_while_the_outbox_drains(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any
) -> None:
    # QoS 1 rows queued in paho between two of its writes are not a backed-up socket: live
    # blocks are refused only for live blocks of their own still unwritten
    cfg = mqtt_config(broker)
    async with Publisher(cfg, station, tmp_path) as pub:
        for i in range(20000):
            pub.publish_result(result(i))
        assert await pub.wait_connected(5.0)
        block = np.ones((2, 8))
        sent = 0
        for tick in range(50):
            for k in range(6):  # a stream id per message: no rate cap in the way
                sent += pub.publish_live_block(f"t{tick}k{k}.emg", 1.0, 100.0, ("a", "b"), block)
            await asyncio.sleep(0.02)  # twice the lab rig's live rate
        assert pub.stats.outbox_depth > 0, "the drain finished before the live blocks"
        assert sent == 300, f"{300 - sent} live blocks refused while only the outbox was busy"
        assert pub.stats.dropped_live == 0
        assert await pub.flush(60.0)


async def test_a_tick_of_more_live_streams_than_the_cap_is_sent_whole(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any
) -> None:
    # a live tick hands paho one block per stream before it can write any: 24 streams (more
    # than LIVE_INFLIGHT_MAX) must not lose their last ones every tick
    cfg = mqtt_config(broker)
    async with Publisher(cfg, station, tmp_path) as pub:
        assert await pub.wait_connected(5.0)
        block = np.ones((2, 8))
        for _ in range(5):
            sent = [
                pub.publish_live_block(f"s{k}.emg", 1.0, 100.0, ("a", "b"), block)
                for k in range(24)
            ]
            assert all(sent)
            await asyncio.sleep(0.04)
        assert pub.stats.dropped_live == 0


async def test_a_message_with_an_unknown_time_is_stamped_with_now(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    # a NaN event time (a window with no received sample) once raised in the stamp, inside
    # the daemon's output path
    cfg = mqtt_config(broker)
    topic = f"{ROOT}/{station}/event/gap"
    nan = float("nan")
    async with (
        subscriber(broker, [topic]) as (_, got),
        Publisher(cfg, station, tmp_path) as pub,
    ):
        gap = GapEvent(
            t_s=nan, stream_id="s", first_index=0, missing_samples=1, start_s=nan, end_s=nan
        )
        pub.publish_event(gap)
        assert await pub.flush(5.0)
        await got.wait_for(lambda m: len(m) == 1)
    assert got.messages[0].json()["utc"] is not None


async def test_v311_publisher_and_subscriber(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    cfg = mqtt_config(broker, protocol="3.1.1")
    topic = f"{ROOT}/{station}/event/onset"
    async with subscriber(broker, [topic], protocol=aiomqtt.ProtocolVersion.V311) as (_, got):
        async with Publisher(cfg, station, tmp_path) as pub:
            pub.publish_event(
                OnsetEvent(
                    t_s=2.0,
                    trial_id="t1",
                    channel="TA",
                    onset_s=2.0,
                    alarm_s=2.03,
                    latency_ms=85.0,
                    algorithm="hodges-bui",
                    algorithm_version="1",
                    params_hash="h",
                )
            )
            assert await pub.flush(5.0)
        await got.wait_for(lambda m: len(m) == 1)
        assert got.messages[0].json()["latency_ms"] == 85.0


async def test_last_will_says_lost_after_sigkill(
    broker: Any, station: str, tmp_path: Path, subscriber: Any
) -> None:
    status_topic = f"{ROOT}/{station}/status"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    child_log = tmp_path / "child.log"
    with child_log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            broker.host,
            str(broker.port),
            ROOT,
            station,
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20.0)
        assert line.strip() == b"ready", child_log.read_text()
        async with subscriber(broker, [status_topic]) as (_, got):
            await got.wait_for(lambda m: any(x.json()["state"] == "ready" for x in m))
            proc.send_signal(signal.SIGKILL)
            await got.wait_for(lambda m: m[-1].json()["state"] == "lost", timeout_s=10.0)
            lost = StatusMessage.model_validate(orjson.loads(got.messages[-1].payload))
            assert lost.station == station
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # and the broker keeps 'lost' retained for dashboards that connect later
    async with subscriber(broker, [status_topic]) as (_, late):
        await late.wait_for(lambda m: len(m) == 1)
        assert late.messages[0].retain
        assert late.messages[0].json()["state"] == "lost"


async def test_full_outbox_drops_oldest_events_never_results(
    mosquitto_cls: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    broker = mosquitto_cls(tmp_path)
    cfg = mqtt_config(broker, outbox_max_messages=100)
    base = f"{ROOT}/{station}"

    def gap(i: int) -> GapEvent:
        return GapEvent(t_s=i, stream_id="s", first_index=i, missing_samples=1, start_s=i, end_s=i)

    # The subscription stands before the publisher can reach the broker: a paused broker
    # (SIGSTOP) answers nobody, so the outbox fills; resumed, it delivers to a subscriber that
    # was already there. (Starting the broker late raced the subscriber's SUBSCRIBE against the
    # publisher's reconnect and flush: messages sent in between reached nobody.)
    broker.start()
    try:
        async with subscriber(broker, [f"{base}/event/gap", f"{base}/trial/result"]) as (_, got):
            broker.pause()
            async with Publisher(cfg, station, tmp_path, backoff_initial_s=0.05) as pub:
                for i in range(150):
                    pub.publish_event(gap(i))
                for i in range(10):
                    pub.publish_result(result(i))
                # 150 events filled 100 places and evicted 50; each result evicted one more
                assert pub.stats.dropped_events == 60
                assert pub.stats.outbox_depth == 100
                broker.resume()
                assert await pub.flush(10.0)
                await got.wait_for(lambda m: len(m) == 100)
        gaps = [m.json()["first_index"] for m in got.on(f"{base}/event/gap")]
        assert gaps == list(range(60, 150))  # the newest 90 events
        assert len(got.on(f"{base}/trial/result")) == 10  # every result
    finally:
        broker.resume()
        broker.stop()


async def test_publish_timeout_detects_a_dead_link(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any
) -> None:
    cfg = mqtt_config(broker, publish_timeout_s=0.5)
    async with Publisher(cfg, station, tmp_path, backoff_initial_s=0.05, backoff_max_s=0.2) as pub:
        assert await pub.wait_connected(5.0)
        broker.pause()  # sockets stay open, nothing answers: only a timeout can tell
        try:
            for i in range(5):
                pub.publish_result(result(i))
            async with asyncio.timeout(5.0):
                while pub.connected:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert pub.stats.outbox_depth == 5  # nothing was acknowledged, nothing deleted
        finally:
            broker.resume()
        assert await pub.flush(10.0)  # resent after the reconnect, then acknowledged
        assert pub.stats.reconnects >= 1
        assert pub.stats.acked >= 5
