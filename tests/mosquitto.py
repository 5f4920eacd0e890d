"""A private Mosquitto broker for tests: loopback only, a free port, a temporary config.

Never touches port 1883 or a system broker. Usable from fixtures and from benchmarks:

    with Mosquitto(tmp_path, persistence=True) as broker:
        broker.kill()      # SIGKILL, like a crash
        broker.start()     # same port, same persistence file

`autosave_on_changes` + `autosave_interval 1` makes Mosquitto write its persistence file after
every change, so messages it queued for an offline persistent session survive a SIGKILL (its
default is to save only every 30 minutes and at a clean exit).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["Mosquitto", "free_port", "mosquitto_available"]

_FORBIDDEN_PORT = 1883  # the system broker's port: never ours


def mosquitto_binary() -> str | None:
    """Debian installs the broker in /usr/sbin, which a normal user's PATH lacks."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")


def mosquitto_available() -> bool:
    return mosquitto_binary() is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != _FORBIDDEN_PORT:
            return port


class Mosquitto:
    """One mosquitto process with its own directory (config, log, persistence)."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        anonymous: bool = True,
        extra_conf: str = "",
    ) -> None:
        self.workdir = Path(workdir) / "mosquitto"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        if self.port == _FORBIDDEN_PORT:
            raise ValueError("port 1883 belongs to the system broker; pick another")
        self.persistence = persistence
        self.anonymous = anonymous
        self.extra_conf = extra_conf
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "set_tcp_nodelay true",
            # keep running as the current user (as root mosquitto would switch to 'mosquitto')
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_dest stderr",
            "max_queued_messages 100000",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                "autosave_interval 1",
                "autosave_on_changes true",
            ]
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 5.0) -> None:
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self._write_conf()
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [mosquitto_binary() or "mosquitto", "-c", str(self.conf_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout_s} s")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _signal_and_wait(self, sig: int, timeout_s: float) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=timeout_s)
        self._proc = None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Clean shutdown (SIGTERM): mosquitto saves its persistence file."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """A crash (SIGKILL): no goodbye to clients, no final save."""
        self._signal_and_wait(signal.SIGKILL, 5.0)

    def pause(self) -> None:
        """SIGSTOP: the TCP connections stay up but nothing answers (a dead link)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, hard: bool = True) -> None:
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PersistentSubscriber:
    """paho in its own thread with a persistent session and *manual* acknowledgement: a
    message is acknowledged only after it is recorded, so a crash anywhere cannot make the
    broker believe a message was delivered that this test never saw. (aiomqtt acknowledges
    on receipt, and its iterator drops what is still queued when the connection breaks.)"""

    def __init__(self, broker: Any, topic: str, client_id: str = "fault-test-subscriber") -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._topic = topic
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        c.manual_ack_set(True)
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # the broker keeps the session while we are away
        c.connect_async(broker.host, broker.port, clean_start=False, properties=props)
        self._client = c

    def _on_connect(self, c: mqtt.Client, *_: Any) -> None:
        c.subscribe(self._topic, qos=1)

    def _on_message(self, c: mqtt.Client, _: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(orjson.loads(msg.payload))
        c.ack(msg.mid, msg.qos)

    def trial_ids(self) -> set[str]:
        with self._lock:
            return {r["trial_id"] for r in self.received}

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> PersistentSubscriber:
        self._client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()
