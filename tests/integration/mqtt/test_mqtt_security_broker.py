"""Security against a real Mosquitto: the example ACL, passwords from the environment, TLS."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from nmcore.config.models import TlsConfig
from nmcore.publish import Command, GapEvent, Publisher

ACL_EXAMPLE = Path(__file__).resolve().parents[3] / "configs" / "mosquitto" / "acl.example"
ROOT, STATION = "nmcore", "lab1"  # the names the example ACL uses
PASSWORDS = {"nmcore-lab1": "s3cret-daemon-pw", "dashboard": "dash-pw", "control": "ctl-pw"}


def _passwd_file(tmp_path: Path) -> Path:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    path = tmp_path / "passwd"
    path.touch()
    for user, pw in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, pw], check=True)
    return path


async def test_example_acl_separates_daemon_dashboard_and_control(
    mosquitto_cls: Any,
    tmp_path: Path,
    mqtt_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conf = f"password_file {_passwd_file(tmp_path)}\nacl_file {ACL_EXAMPLE}"
    broker = mosquitto_cls(tmp_path, anonymous=False, extra_conf=conf)
    broker.start()
    monkeypatch.setenv("NMCORE_TEST_MQTT_PW", PASSWORDS["nmcore-lab1"])
    caplog.set_level(logging.DEBUG)
    seen: list[Command] = []

    async def handler(cmd: Command) -> dict[str, Any]:
        seen.append(cmd)
        return {"ok": True}

    cfg = mqtt_config(broker, root=ROOT, username="nmcore-lab1", password_env="NMCORE_TEST_MQTT_PW")
    v5 = aiomqtt.ProtocolVersion.V5
    try:
        async with (
            Publisher(cfg, STATION, tmp_path, command_handler=handler) as pub,
            aiomqtt.Client(
                broker.host, broker.port, username="dashboard", password="dash-pw", protocol=v5
            ) as dash,
            aiomqtt.Client(
                broker.host,
                broker.port,
                username="control",
                password="ctl-pw",
                identifier="console-1",
                protocol=v5,
            ) as ctl,
        ):
            assert await pub.wait_connected(5.0)
            await dash.subscribe(f"{ROOT}/+/event/+", qos=1)
            await ctl.subscribe(f"{ROOT}/{STATION}/reply/#", qos=1)
            pub.publish_event(
                GapEvent(t_s=1, stream_id="s", first_index=0, missing_samples=1, start_s=1, end_s=1)
            )
            async with asyncio.timeout(5):
                msg = await anext(aiter(dash.messages))
            assert orjson.loads(msg.payload)["missing_samples"] == 1  # dashboards read
            # a dashboard's command is refused by the broker: the handler never sees it
            await dash.publish(f"{ROOT}/{STATION}/cmd/get_state", b'{"reply_to": "x"}', qos=1)
            # the control role's command is served, the reply readable only by its client id
            cmd = orjson.dumps({"reply_to": "console-1", "correlation_id": "c1"})
            await ctl.publish(f"{ROOT}/{STATION}/cmd/get_state", cmd, qos=1)
            async with asyncio.timeout(5):
                reply = await anext(aiter(ctl.messages))
            assert orjson.loads(reply.payload)["correlation_id"] == "c1"
            await asyncio.sleep(0.2)
            assert len(seen) == 1
        # a wrong password: no exception, the publisher just keeps trying
        monkeypatch.setenv("NMCORE_TEST_MQTT_PW", "wrong-password-123")
        async with Publisher(cfg, STATION, tmp_path, backoff_initial_s=0.05) as pub:
            assert not await pub.wait_connected(0.5)
    finally:
        broker.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not authorised" in logged.lower() or "not authorized" in logged.lower()
    for pw in (*PASSWORDS.values(), "wrong-password-123"):
        assert pw not in logged  # passwords are never logged


def _make_certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=nmcore test CA",
        "-days", "2")  # fmt: skip
    run("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return d / "ca.crt", d / "broker.crt", d / "broker.key"


# paho-mqtt 2.2 does not close its socket when the TLS handshake fails (the certificate is
# refused); the garbage collector closes it and warns. Only that warning is ignored here.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket")
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
async def test_tls_with_the_station_ca(
    mosquitto_cls: Any, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    ca, cert, key = _make_certs(tmp_path)
    broker = mosquitto_cls(tmp_path, extra_conf=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}")
    broker.start()
    try:
        cfg = mqtt_config(broker, tls=TlsConfig(ca_file=ca))
        async with Publisher(cfg, "tls1", tmp_path) as pub:
            assert await pub.wait_connected(5.0)
            pub.set_status("ready")
            assert pub.stats.connected
        # without the CA the broker's certificate is not trusted: never connects, never raises
        other_ca, _, _ = _make_certs(tmp_path / "other")
        bad = mqtt_config(broker, tls=TlsConfig(ca_file=other_ca))
        async with Publisher(bad, "tls2", tmp_path / "other", backoff_initial_s=0.05) as pub:
            assert not await pub.wait_connected(0.5)
    finally:
        broker.stop()
