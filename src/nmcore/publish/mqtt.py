"""The MQTT publisher: the only module that imports aiomqtt.

`Publisher` is an async context manager. Entering it opens the outbox and starts a background
connection loop in its own TaskGroup; it never raises because the broker is away. While
connected, one session runs three kinds of work:
- drain: outbox rows (events, results, sway) are published at QoS 1 in `seq` order with up to
  `inflight_max` awaiting their PUBACK; a row is deleted when its PUBACK arrives. After a
  reconnect every row still stored is sent again (subscribers de-duplicate on `seq`).
- receive: commands on `cmd/+` are validated and handed to the runtime's handler one at a
  time (so start/stop keep their order); each gets a reply.
- fire-and-forget: live blocks (QoS 0, v5 message expiry), handed straight to paho's queue;
  status and device status (QoS 1, retained) as tasks. These are not durable: the latest
  status of the daemon and of each device is kept in memory and published again on every
  (re)connect.

A publish that gets no PUBACK within `publish_timeout_s`, a broken socket or a keepalive
timeout ends the session; the loop reconnects with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import numpy as np
import numpy.typing as npt
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nmcore import __version__
from nmcore.config.models import MqttConfig
from nmcore.errors import ConfigError, PublishError
from nmcore.hostclock import HostClock, MonotonicClock
from nmcore.publish.commands import CommandHandler, CommandOutcome, dispatch_command
from nmcore.publish.outbox import Kind, Outbox, PutResult
from nmcore.publish.schemas import (
    SCHEMA_VERSION,
    CommandReply,
    DaemonState,
    DeviceStatusMessage,
    ErrorInfo,
    EventMessage,
    LandingMessage,
    LiveMessage,
    MessageBase,
    StatusMessage,
    SwayMessage,
    TrialResultMessage,
)
from nmcore.publish.topics import Topics

__all__ = ["Publisher", "PublisherStats"]

_log = logging.getLogger(__name__)
# paho logs every packet at DEBUG; keep it quiet unless asked for
_paho_log = logging.getLogger("nmcore.publish.paho")
_paho_log.setLevel(logging.WARNING)

# Live data older than this is useless to a dashboard: the broker drops it (MQTT v5 expiry).
LIVE_EXPIRY_S = 2
# Live blocks handed to paho and not yet written to the socket (at least; two per live stream
# when there are more streams); beyond this the socket is backed up, the link slower than the
# data, and live blocks are dropped, counted.
LIVE_INFLIGHT_MAX = 16
# Burst allowed above live_rate_hz per stream (token bucket depth).
LIVE_BURST = 3.0
_LIVE_JSON = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY


def _json_default(obj: object) -> object:
    """What orjson does not take itself: numpy arrays that are not C-contiguous."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON")


# WAL checkpoint period (in a worker thread); the WAL grows by a few pages per message.
CHECKPOINT_INTERVAL_S = 1.0
# Incoming commands queued while the handler runs; more are dropped by aiomqtt (logged).
COMMAND_QUEUE_MAX = 64


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters since the Publisher was created (outbox_depth: now)."""

    connected: bool
    published: int  # messages handed to the broker connection, all kinds
    acked: int  # outbox messages the broker acknowledged (then deleted)
    dropped_live: int  # live blocks not sent: disconnected, over the rate cap, or back-pressure
    dropped_events: int  # events lost to a full outbox (see outbox.py for the policy)
    results_over_limit: int  # results stored beyond outbox_max_messages (never dropped)
    outbox_depth: int
    reconnects: int  # successful connections after the first
    commands_ok: int
    rejected_commands: int  # commands answered with an error (any reason)


def _tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file))
        if cfg.tls.cert_file is not None:
            key = str(cfg.tls.key_file) if cfg.tls.key_file is not None else None
            ctx.load_cert_chain(str(cfg.tls.cert_file), key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"mqtt.tls: cannot load the CA file or client certificate: {exc}",
            ["check mqtt.tls.ca_file, cert_file and key_file exist and are PEM files"],
        ) from exc
    if cfg.tls.insecure_skip_verify:
        _log.warning("mqtt.tls.insecure_skip_verify is set: the broker's identity is NOT checked")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Publisher:
    """Publishes a station's messages and serves its commands. See docs/mqtt.md.

    `state_dir` holds the outbox (unless `cfg.outbox_path` says otherwise). `clock` gives the
    host-monotonic `sent_s`; `wall_clock` (epoch seconds) only turns times into `utc`.
    `backoff_*_s` bound the reconnect delay; `inflight_max` is the QoS 1 window.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        station_id: str,
        state_dir: Path,
        *,
        command_handler: CommandHandler | None = None,
        clock: HostClock | None = None,
        wall_clock: Callable[[], float] = time.time,
        command_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        inflight_max: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._station = station_id
        self.topics = Topics(cfg.root, station_id)
        self._outbox_path = cfg.outbox_path or Path(state_dir) / "mqtt-outbox.sqlite3"
        self._handler = command_handler
        self._clock: HostClock = clock if clock is not None else MonotonicClock()
        self._wall = wall_clock
        self._command_timeout_s = command_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._inflight_max = inflight_max
        self._rng = rng if rng is not None else random.Random()  # jitter only, not secrets
        self._v5 = cfg.protocol == "5"
        try:
            secret = cfg.password()
        except (ValueError, OSError) as exc:
            raise ConfigError(f"mqtt password: {exc}", ["set mqtt.password_env/file"]) from exc
        self._password = secret.get_secret_value() if secret is not None else None
        self._tls = _tls_context(cfg)
        self._live_props: Properties | None = None
        if self._v5:
            self._live_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            self._live_props.MessageExpiryInterval = LIVE_EXPIRY_S

        self._outbox: Outbox | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self._session_tg: asyncio.TaskGroup | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._drain_idle = False
        self._cursor = 0
        self._inflight = 0
        self._pending_acks: list[int] = []
        self._stopping = False
        self._status: tuple[DaemonState, str] = ("init", "")
        self._devices: dict[str, DeviceStatusMessage] = {}
        self._live_tokens: dict[str, tuple[float, float]] = {}
        # paho and what it has not yet written of our live messages (`_session` sets paho)
        self._paho: mqtt.Client | None = None
        self._live_unwritten: deque[mqtt.MQTTMessageInfo] = deque()
        self._background: set[asyncio.Task[None]] = set()
        self._commands_running: set[asyncio.Future[CommandOutcome]] = set()
        # counters
        self._published = 0
        self._acked = 0
        self._dropped_live = 0
        self._connections = 0
        self._commands_ok = 0
        self._rejected_commands = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._outbox is not None:
            raise PublishError("this Publisher is already running; it is not re-entrant")
        self._outbox = Outbox(
            self._outbox_path, self._cfg.outbox_max_messages, manual_checkpoint=True
        )
        if self._outbox.depth == 0:
            self._outbox_empty.set()
        else:
            _log.info(
                "MQTT outbox holds %d unsent messages; sending them first", self._outbox.depth
            )
        self._stopping = False
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._loop_task = self._tg.create_task(self._connection_loop(), name="mqtt-connection")
        self._ckpt_task = self._tg.create_task(self._checkpoints(), name="mqtt-outbox-checkpoint")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Say 'stopping', give the outbox up to publish_timeout_s to empty, say 'stopped',
        disconnect cleanly (so the broker does not send the last will)."""
        assert self._tg is not None
        assert self._loop_task is not None
        try:
            self._stopping = True
            self._status = ("stopping", "")
            client = self._client
            if client is not None and self._connected.is_set():
                try:
                    await self._publish_status(client)
                    await self.flush(self._cfg.publish_timeout_s)
                    self._status = ("stopped", "")
                    await self._publish_status(client)
                except aiomqtt.MqttError as err:
                    _log.warning("could not publish the final status: %s", err)
            self._loop_task.cancel()
            if self._ckpt_task is not None:
                self._ckpt_task.cancel()
            await self._tg.__aexit__(exc_type, exc, tb)
            if self._commands_running:  # let a command cut off by the shutdown finish
                await asyncio.wait(self._commands_running, timeout=self._command_timeout_s)
        finally:
            self._flush_acks()
            if self._outbox is not None:
                self._outbox.close()
            self._outbox = None
            self._tg = None

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """True once connected to the broker (False if `timeout_s` passed first)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged everything in the outbox; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._outbox_empty.wait()
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> PublisherStats:
        ob = self._outbox
        return PublisherStats(
            connected=self._connected.is_set(),
            published=self._published,
            acked=self._acked,
            dropped_live=self._dropped_live,
            dropped_events=ob.dropped_events if ob else 0,
            results_over_limit=ob.results_over_limit if ob else 0,
            outbox_depth=ob.depth if ob else 0,
            reconnects=max(0, self._connections - 1),
            commands_ok=self._commands_ok,
            rejected_commands=self._rejected_commands,
        )

    # -- what the runtime calls (all synchronous, never block, never wait for the broker) -------
    def publish_result(self, msg: TrialResultMessage) -> None:
        """Durable: stored in the outbox (never dropped), published at QoS 1 on trial/result.
        Raises PublishError only if the outbox cannot be written (disk full) or the Publisher
        is not running; the broker being away is never an error."""
        self._durable(msg, self.topics.trial_result(), Kind.RESULT)

    def publish_event(self, msg: EventMessage) -> None:
        """Durable: stored in the outbox, published at QoS 1 on event/<msg.type>. When the
        outbox is full the oldest event is dropped (counted, logged)."""
        self._durable(msg, self.topics.event(msg.type), Kind.EVENT)

    def publish_sway(self, msg: SwayMessage) -> None:
        """Durable like an event (evictable when the outbox is full), on sway."""
        self._durable(msg, self.topics.sway(), Kind.EVENT)

    def publish_landing(self, msg: LandingMessage) -> None:
        """Durable like a result (one per landing), on landing."""
        self._durable(msg, self.topics.landing(), Kind.RESULT)

    def publish_live(self, msg: LiveMessage) -> bool:
        """Best effort, QoS 0, on live/<stream_id>: False (and counted) if dropped because not
        connected, over `live_rate_hz` for this stream, or the socket is backed up."""
        return self.publish_live_block(
            msg.stream_id, msg.t0_s, msg.rate_hz, msg.channels, msg.values, utc=msg.utc
        )

    def publish_live_block(
        self,
        stream_id: str,
        t0_s: float,
        rate_hz: float,
        channels: Sequence[str],
        values: npt.NDArray[np.floating[Any]] | Sequence[Sequence[float | None]],
        *,
        utc: datetime | None = None,
    ) -> bool:
        """`publish_live` for the daemon's live loop: the `LiveMessage` payload written from
        its fields, `values` (channels x samples; NaN is sent as null) straight from numpy,
        without building and dumping the model (~50 us a message, 150 messages/s on the lab
        rig). The caller keeps to the model's rules."""
        paho = self._paho
        if paho is None or not self._connected.is_set():
            self._dropped_live += 1
            return False
        if not self._take_live_token(stream_id):
            self._dropped_live += 1
            return False
        unwritten = self._live_unwritten
        while unwritten and unwritten[0].is_published():  # paho writes in order
            unwritten.popleft()
        # a tick queues one block per stream before paho can write any: two ticks' worth
        if len(unwritten) >= max(LIVE_INFLIGHT_MAX, 2 * len(self._live_tokens)):
            self._dropped_live += 1
            return False
        data = self._envelope(utc, t0_s)
        data["stream_id"] = stream_id
        data["t0_s"] = t0_s
        data["rate_hz"] = rate_hz
        data["channels"] = channels
        data["values"] = values
        payload = orjson.dumps(data, default=_json_default, option=_LIVE_JSON)
        info = paho.publish(self.topics.live(stream_id), payload, 0, False, self._live_props)
        if info.rc != MQTT_ERR_SUCCESS:  # the connection just went
            self._dropped_live += 1
            return False
        self._published += 1
        unwritten.append(info)
        return True

    def set_status(self, state: DaemonState, detail: str = "") -> None:
        """The daemon's state on status (retained); re-sent on every reconnect."""
        self._status = (state, detail)
        self._send_retained(self.topics.status(), self._status_message())

    def set_device_status(self, msg: DeviceStatusMessage) -> None:
        """One device's status on device/<id>/status (retained); re-sent on every reconnect."""
        self._devices[msg.device_id] = msg
        self._send_retained(self.topics.device_status(msg.device_id), msg)

    # -- stamping and queueing -------------------------------------------------------------------
    def _stamp(self, msg: MessageBase) -> tuple[int, bytes]:
        data = msg.model_dump()
        data.update(self._envelope(msg.utc, msg.event_time_s()))  # its keys lead already
        return data["seq"], orjson.dumps(data, option=orjson.OPT_UTC_Z)

    def _envelope(self, utc: datetime | None, event_t_s: float | None) -> dict[str, Any]:
        """`MessageBase`'s fields, stamped: the next seq, the station, the send time, and
        `utc` (when not given) the wall-clock time of `event_t_s` (None: of now)."""
        if self._outbox is None:
            raise PublishError("the Publisher is not running: use it inside 'async with'")
        seq = self._outbox.next_seq()
        now_s = self._clock.now()
        if utc is None:
            ago_s = now_s - event_t_s if event_t_s is not None else 0.0
            wall_s = self._wall() - (ago_s if math.isfinite(ago_s) else 0.0)
            utc = datetime.fromtimestamp(wall_s, UTC)
        return {
            "schema_version": SCHEMA_VERSION,
            "seq": seq,
            "station": self._station,
            "sent_s": now_s,
            "utc": utc,
        }

    def _durable(self, msg: MessageBase, topic: str, kind: Kind) -> None:
        seq, payload = self._stamp(msg)
        assert self._outbox is not None
        if self._outbox.put(seq, kind, topic, payload) is PutResult.DROPPED:
            return
        self._outbox_empty.clear()
        tg, client = self._session_tg, self._client
        if (
            self._drain_idle
            and tg is not None
            and client is not None
            and self._inflight < self._inflight_max
        ):
            self._start_send(client, tg, seq, topic, payload)  # stored first, then sent
        else:
            self._wake.set()

    def _status_message(self) -> StatusMessage:
        state, detail = self._status
        return StatusMessage(state=state, detail=detail, nmcore_version=__version__)

    def _send_retained(self, topic: str, msg: MessageBase) -> None:
        tg, client = self._session_tg, self._client
        if tg is None or client is None or self._stopping or self._outbox is None:
            return  # sent on the next connect
        payload = self._stamp(msg)[1]
        self._spawn(tg, self._publish(client, topic, payload, retain=True))

    def _spawn(self, tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, None]) -> bool:
        """Start `coro` in the session; False if the session is ending (connection lost)."""
        try:
            task = tg.create_task(coro)
        except RuntimeError:  # the TaskGroup is shutting down: the connection just ended
            coro.close()
            return False
        self._background.add(task)  # strong reference until done
        task.add_done_callback(self._background.discard)
        return True

    def _take_live_token(self, stream_id: str) -> bool:
        now_s = self._clock.now()
        tokens, last_s = self._live_tokens.get(stream_id, (LIVE_BURST, now_s))
        tokens = min(LIVE_BURST, tokens + (now_s - last_s) * self._cfg.live_rate_hz)
        ok = tokens >= 1.0
        self._live_tokens[stream_id] = (tokens - 1.0 if ok else tokens, now_s)
        return ok

    # -- the connection ----------------------------------------------------------------------------
    def _make_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self.topics.status(),
            self._stamp(
                StatusMessage(
                    state="lost",
                    detail="the daemon's connection ended without a goodbye (MQTT last will)",
                    nmcore_version=__version__,
                )
            )[1],
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            self._cfg.host,
            self._cfg.port,
            username=self._cfg.username,
            password=self._password,
            identifier=self._cfg.client_id or f"nmcore-{self._station}",
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            # a clean session: commands sent while the daemon was away must not run later
            clean_session=None if self._v5 else True,
            clean_start=True if self._v5 else MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=self._cfg.keepalive_s,
            timeout=self._cfg.publish_timeout_s,
            max_inflight_messages=self._inflight_max,
            max_queued_incoming_messages=COMMAND_QUEUE_MAX,
            tls_context=self._tls,
            # Nagle's algorithm delayed small publishes by up to 40 ms (PERFORMANCE.md)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=_paho_log,
        )
        client.pending_calls_threshold = self._inflight_max + 16  # live sends are not calls
        return client

    async def _connection_loop(self) -> None:
        delay_s = self._backoff_initial_s
        failures = 0
        where = f"{self._cfg.host}:{self._cfg.port}"
        while not self._stopping:
            was_connected = False
            try:
                async with self._make_client() as client:
                    was_connected = True
                    self._connections += 1
                    failures = 0
                    delay_s = self._backoff_initial_s
                    _log.info("MQTT connected to %s", where)
                    await self._session(client)
            except* (aiomqtt.MqttError, OSError) as group:
                failures += 1
                reason = "; ".join(str(e) for e in group.exceptions)
                if was_connected:
                    _log.warning("MQTT connection to %s lost: %s", where, reason)
                else:
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    _log.log(
                        level, "MQTT broker %s unreachable (try %d): %s", where, failures, reason
                    )
            except* Exception:
                failures += 1
                _log.exception("MQTT session ended by an unexpected error; reconnecting")
            finally:
                self._connected.clear()
                self._client = None
                self._session_tg = None
                self._drain_idle = False
                self._paho = None
                self._live_unwritten.clear()
                self._inflight = 0
            if self._stopping:
                break
            await asyncio.sleep(self._rng.uniform(delay_s / 2, delay_s))
            delay_s = min(delay_s * 2, self._backoff_max_s)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        payload = self._stamp(self._status_message())[1]
        self._published += 1
        await client.publish(
            self.topics.status(), payload, qos=1, retain=True, timeout=self._cfg.publish_timeout_s
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        timeout_s = self._cfg.publish_timeout_s
        await self._publish_status(client)
        for dev in list(self._devices.values()):
            topic = self.topics.device_status(dev.device_id)
            await client.publish(topic, self._stamp(dev)[1], qos=1, retain=True, timeout=timeout_s)
            self._published += 1
        if self._handler is not None:
            await client.subscribe(self.topics.command_filter(), qos=1, timeout=timeout_s)
        async with asyncio.TaskGroup() as tg:
            self._client = client
            # Live blocks go to paho's own publish, not aiomqtt's coroutine: for QoS 0 that
            # is a task, an Event and a wait_for per message only to learn that paho wrote
            # it. aiomqtt's paho client is private: looked up here, so a release that
            # renames it ends the session with an error instead of failing every live tick.
            self._paho = client._client
            self._session_tg = tg
            self._connected.set()
            tg.create_task(self._drain(client, tg), name="mqtt-drain")
            tg.create_task(self._receive(client), name="mqtt-receive")

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool = False
    ) -> None:
        self._published += 1
        await client.publish(topic, payload, qos=1, retain=retain)

    async def _drain(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        """Send stored rows in seq order, at most `inflight_max` awaiting PUBACK at once.

        While the drain is idle (caught up), `_durable` sends a new row itself instead of
        waking this task: one event-loop round trip and one SELECT less per message.
        """
        assert self._outbox is not None
        outbox = self._outbox
        self._cursor = 0  # highest seq handed to a send task on this connection
        self._inflight = 0
        while True:
            self._wake.clear()
            self._drain_idle = False
            rows = outbox.fetch_after(self._cursor, self._inflight_max)
            if not rows:
                self._drain_idle = True
                await self._wake.wait()
                continue
            for seq, topic, payload in rows:
                while self._inflight >= self._inflight_max:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                if not self._start_send(client, tg, seq, topic, payload):
                    return  # the session is ending

    def _start_send(
        self, client: aiomqtt.Client, tg: asyncio.TaskGroup, seq: int, topic: str, payload: bytes
    ) -> bool:
        if not self._spawn(tg, self._send_durable(client, seq, topic, payload)):
            return False  # stays in the outbox for the next connection
        self._cursor = seq
        self._inflight += 1
        self._published += 1
        return True

    async def _send_durable(
        self, client: aiomqtt.Client, seq: int, topic: str, payload: bytes
    ) -> None:
        try:
            await client.publish(topic, payload, qos=1)
        finally:
            self._inflight -= 1
            self._slot_free.set()
        self._acked += 1
        self._pending_acks.append(seq)
        if len(self._pending_acks) == 1:  # one DELETE transaction per loop iteration
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        seqs, self._pending_acks = self._pending_acks, []
        if self._outbox is None:
            return  # closed; the rows stay and are sent again next time (de-duplicated)
        self._outbox.ack_many(seqs)
        if self._outbox.depth == 0:
            self._outbox_empty.set()

    async def _checkpoints(self) -> None:
        """WAL checkpoints in a worker thread: they fsync, which must not stall the loop."""
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            outbox = self._outbox
            if outbox is not None and outbox.needs_checkpoint:
                await asyncio.to_thread(outbox.checkpoint)

    # -- commands ----------------------------------------------------------------------------------
    async def _receive(self, client: aiomqtt.Client) -> None:
        # Iterating also notices a lost connection when there is nothing else to do.
        async for message in client.messages:
            if self._handler is None:
                continue
            name = self.topics.command_name(str(message.topic))
            if name is None:
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            # shielded: a lost connection must not cancel a command half-way through the
            # runtime (the reply is lost then, the command's effect is not)
            work = asyncio.ensure_future(
                dispatch_command(name, payload, self._handler, timeout_s=self._command_timeout_s)
            )
            self._commands_running.add(work)
            work.add_done_callback(self._commands_running.discard)
            outcome = await asyncio.shield(work)
            if outcome.ok:
                self._commands_ok += 1
            else:
                self._rejected_commands += 1
            await self._reply(client, message.properties, outcome)

    async def _reply(
        self, client: aiomqtt.Client, props: Properties | None, outcome: CommandOutcome
    ) -> None:
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        targets: list[str] = []
        if isinstance(response_topic, str):
            if self.topics.is_reply_topic(response_topic):
                targets.append(response_topic)
            else:
                _log.warning(
                    "command %s: response topic %r is not under %s; not replying there",
                    outcome.command,
                    response_topic[:128],
                    self.topics.reply_prefix(),
                )
        if outcome.reply_to is not None:
            topic = self.topics.reply(outcome.reply_to)
            if topic not in targets:
                targets.append(topic)
        if not targets:
            return
        err = outcome.error
        reply = CommandReply(
            command=outcome.command,
            ok=outcome.ok,
            result=outcome.result,
            error=ErrorInfo(code=err.code, message=err.message) if err is not None else None,
            correlation_id=outcome.correlation_id,
        )
        payload = self._stamp(reply)[1]
        out_props: Properties | None = None
        if self._v5 and isinstance(correlation, bytes | bytearray):
            out_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            out_props.CorrelationData = bytes(correlation)
        for topic in targets:
            self._published += 1
            await client.publish(topic, payload, qos=1, properties=out_props)
