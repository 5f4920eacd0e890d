"""Publish-to-subscriber latency of event messages: Publisher vs a bare aiomqtt publish.

A private mosquitto on loopback (tests/mosquitto.py), a subscriber in its own process
(paho, TCP_NODELAY, QoS 1), and in this process publishers sending at ~1000 msg/s in
alternating blocks of 100 messages:
- `Publisher.publish_event` (stamp, orjson, SQLite outbox insert, send task, QoS 1 publish,
  delete on PUBACK);
- the baseline: `aiomqtt.Client.publish(qos=1)` of the same payload bytes' shape, started at
  the same instants in its own task (open loop, like the Publisher: the producer never waits);
- for reference, the same bare publish awaited before the next one (closed loop). Its tail
  looks better than it is: while the link stalls the producer waits, so the stall is charged
  to one message instead of every message that should have been sent meanwhile.
Latency = subscriber's time.monotonic() at arrival - sender's time.monotonic() in the
payload (one host clock).

    .venv/bin/python benchmarks/bench_mqtt.py [--smoke] [--rate-hz 1000] [--n 4000]

Prints one JSON object per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson

from nmcore.config.models import MqttConfig
from nmcore.publish import GapEvent, Publisher
from nmcore.runtime import eventloop

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "bench_mosquitto", _HERE.parent / "tests" / "mosquitto.py"
)
assert _spec is not None
assert _spec.loader is not None
_mosq = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mosq
_spec.loader.exec_module(_mosq)

ROOT = "nmbench"
STATION = "bench"
WARMUP = 100  # first messages of each kind: connection start-up, caches

# The subscriber: records arrival latency per topic kind, prints JSON when told to stop.
_SUBSCRIBER = r"""
import gc, json, socket, sys, time
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lat = {"publisher": [], "bare": [], "awaited": []}
def on_connect(c, u, f, rc, p=None):
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.subscribe(root + "/#", qos=1)
def on_subscribe(c, u, mid, rcs, p=None):
    print("subscribed", flush=True)
def on_message(c, u, m):
    now = time.monotonic()
    if m.topic.endswith("/stop"):
        print(json.dumps(lat), flush=True)
        c.disconnect()
        return
    if not m.topic.endswith("/event/gap"):
        return  # the daemon status
    kind = m.topic.split("/")[1] if m.topic.split("/")[1] in lat else "publisher"
    lat[kind].append((now - orjson.loads(m.payload)["sent_s"]) * 1e3)
c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port)
gc.collect(); gc.freeze()
c.loop_forever()
"""


def _event(i: int) -> GapEvent:
    return GapEvent(
        t_s=float(i), stream_id="emg1.emg", first_index=i * 32, missing_samples=3,
        start_s=float(i), end_s=float(i) + 0.0015,
    )  # fmt: skip


async def _run(broker: Any, n: int, rate_hz: float, block: int, state_dir: Path) -> dict[str, Any]:
    sub = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SUBSCRIBER, broker.host, str(broker.port), ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert sub.stdout is not None
    assert (await asyncio.wait_for(sub.stdout.readline(), 20)).strip() == b"subscribed"
    cfg = MqttConfig(host=broker.host, port=broker.port, root=ROOT, publish_timeout_s=5)
    call_us: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    async with (
        Publisher(cfg, STATION, state_dir) as pub,
        aiomqtt.Client(
            broker.host,
            broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ) as bare,
    ):
        assert await pub.wait_connected(10)
        bare.pending_calls_threshold = 1000  # open-loop publishes pile up in a stall
        template = orjson.loads(_event(0).model_dump_json())
        gc.collect()
        gc.freeze()  # the tail of MQTT latency was GC pauses (PERFORMANCE.md)
        period_s = 1.0 / rate_hz
        t_next = time.monotonic()
        for i in range(3 * n):
            t_next += period_s
            delay = t_next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            mode = (i // block) % 3
            if mode == 0:
                t0 = time.perf_counter()
                pub.publish_event(_event(i))
                call_us.append((time.perf_counter() - t0) * 1e6)
            else:
                body = orjson.dumps(dict(template, seq=i, sent_s=time.monotonic()))
                if mode == 1:
                    task = asyncio.create_task(bare.publish(f"{ROOT}/bare/event/gap", body, qos=1))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    await bare.publish(f"{ROOT}/awaited/event/gap", body, qos=1)
        assert await pub.flush(10)
        await asyncio.gather(*tasks)
        stats = pub.stats
        await bare.publish(f"{ROOT}/stop", b"{}", qos=1)
    out, _ = await asyncio.wait_for(sub.communicate(), 30)
    lat = json.loads(out.decode().strip().splitlines()[-1])
    return {"lat": lat, "call_us": call_us, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="a few seconds, rough figures")
    ap.add_argument("--rate-hz", type=float, default=1000.0)
    ap.add_argument("--n", type=int, default=4000, help="messages per kind")
    args = ap.parse_args()
    n = 400 if args.smoke else args.n
    with tempfile.TemporaryDirectory() as tmp, _mosq.Mosquitto(Path(tmp)) as broker:
        res = eventloop.run(_run(broker, n, args.rate_hz, block=100, state_dir=Path(tmp)))
    lat = {k: np.asarray(v[WARMUP:]) for k, v in res["lat"].items()}
    counts = {k: len(v) for k, v in res["lat"].items()}
    if set(counts.values()) != {n}:
        raise SystemExit(f"lost messages: {counts} of {n} each")
    figures: list[dict[str, Any]] = []
    for label, q in (("median", 50), ("p99", 99), ("max", 100)):
        p, b = float(np.percentile(lat["publisher"], q)), float(np.percentile(lat["bare"], q))
        figures.append({
            "name": f"mqtt_event_latency_{label}",
            "value": round(p, 4),
            "unit": "ms",
            "baseline": {"name": f"bare_aiomqtt_qos1_latency_{label}", "value": round(b, 4)},
            "ratio": round(p / b, 3),
            "difference_ms": round(p - b, 4),
            "awaited_bare_ms": round(float(np.percentile(lat["awaited"], q)), 4),
            "rate_hz": args.rate_hz,
            "n": int(lat["publisher"].size),
        })  # fmt: skip
    calls = np.asarray(res["call_us"][WARMUP:])
    # naive reference for the call cost: building and serialising the same message, no outbox
    naive_us = []
    for i in range(calls.size):
        t0 = time.perf_counter()
        orjson.dumps(_event(i).model_dump())
        naive_us.append((time.perf_counter() - t0) * 1e6)
    naive = float(np.median(naive_us))
    med = float(np.median(calls))
    figures.append({
        "name": "publish_event_call_median",
        "value": round(med, 2),
        "unit": "us",
        "baseline": {"name": "model_dump_plus_orjson_median", "value": round(naive, 2)},
        "ratio": round(med / naive, 2),
        "p99_us": round(float(np.percentile(calls, 99)), 2),
        "note": "time the runtime spends in publish_event (stamp, orjson, SQLite commit)",
    })  # fmt: skip
    for fig in figures:
        print(json.dumps(fig))


if __name__ == "__main__":
    main()
