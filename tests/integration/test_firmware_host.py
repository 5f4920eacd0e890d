"""The C reference firmware's host build, driven as a subprocess and read with FrameDecoder.

Needs gcc and make (skipped with a message otherwise); the AVR comparison additionally needs
gcc-avr, avr-libc and simavr. Builds go to a temporary directory so parallel runs do not race.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nmcore.framing import FrameDecoder, Packet, PacketType, encode_command

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
VECTORS = FIRMWARE / "protocol" / "vectors"


def _run(fw_bin: Path, *args: str, stdin: bytes = b"") -> bytes:
    proc = subprocess.run(
        [str(fw_bin), *args], input=stdin, capture_output=True, check=True, timeout=30
    )
    return proc.stdout


def _decode(data: bytes) -> tuple[FrameDecoder, list[Packet]]:
    dec = FrameDecoder()
    return dec, dec.feed(data)


def test_script_mode_reproduces_the_golden_session(fw_bin: Path) -> None:
    golden = json.loads((VECTORS / "script_session.json").read_text())["vectors"][0]
    assert _run(fw_bin, "--script").hex() == golden["stream_hex"]


def test_fast_stream_is_continuous_and_deterministic(fw_bin: Path) -> None:
    args = ("--fast", "--autostart", "--duration-s", "3", "--seed", "5", "--emg-format", "i24")
    data = _run(fw_bin, *args)
    assert _run(fw_bin, *args) == data  # seeded: the same bytes every run
    assert _run(fw_bin, *args[:-4], "--seed", "6", *args[-2:]) != data
    dec, packets = _decode(data)
    assert dec.stats.frames_rejected == 0
    assert dec.stats.bytes_skipped == 0
    periods_us = {0: 500, 1: 5000, 2: 1000}
    for sid, period_us in periods_us.items():
        blocks = [p for p in packets if p.stream_id == sid and p.samples is not None]
        counters = np.array([p.counter for p in blocks])
        sizes = np.array([p.samples.shape[0] for p in blocks if p.samples is not None])
        np.testing.assert_array_equal(counters[1:], (counters + sizes)[:-1])
        dev = np.array([p.device_us for p in blocks])
        np.testing.assert_array_equal((dev - dev[0]) % 2**32, counters * period_us)
        assert int(counters[-1] + sizes[-1]) * period_us >= 2_900_000
    emg = [p for p in packets if p.ptype is PacketType.EMG]
    assert emg[0].samples is not None
    assert emg[0].samples.shape == (32, 16)
    status = [p for p in packets if p.ptype is PacketType.STATUS]
    assert len(status) >= 3
    assert status[-1].fields["dropped_samples"] == 0


def test_corrupted_frames_are_counted_and_the_rest_match_the_clean_run(fw_bin: Path) -> None:
    base = ("--fast", "--autostart", "--duration-s", "2", "--seed", "9")
    _, clean = _decode(_run(fw_bin, *base))
    dec, noisy = _decode(_run(fw_bin, *base, "--corrupt-rate", "0.2"))
    clean_keys = Counter((p.ptype, p.stream_id, p.counter) for p in clean)
    noisy_keys = Counter((p.ptype, p.stream_id, p.counter) for p in noisy)
    assert not noisy_keys - clean_keys  # nothing invented
    lost = sum((clean_keys - noisy_keys).values())
    # A flipped byte either breaks its frame or (turned into 0x00) splits it in two rejects.
    assert lost > 0.1 * len(clean)
    assert lost <= dec.stats.frames_rejected <= 2 * lost
    by_key = {(p.ptype, p.stream_id, p.counter): p for p in clean}
    for p in noisy:
        ref = by_key[(p.ptype, p.stream_id, p.counter)]
        if p.samples is not None:
            assert ref.samples is not None
            np.testing.assert_array_equal(p.samples, ref.samples)


def test_commands_over_stdin_get_replies(fw_bin: Path) -> None:
    cmds = b"".join(
        [
            encode_command("identify", seq=1),
            encode_command("start", seq=2, stream_mask=0b100),
            encode_command("time_sync_ping", seq=3),
            encode_command("set_rate", seq=4, stream_id=2, rate_hz=500),
            encode_command("loopback_trigger", seq=5, pulse_us=200),
            b"\x13\x37\x00",  # garbage: counted by the device, not answered
        ]
    )
    dec, packets = _decode(
        _run(fw_bin, "--duration-s", "0.4", "--status-period-s", "0.1", stdin=cmds)
    )
    assert dec.stats.frames_rejected == 0
    replies = {p.counter: p.fields for p in packets if p.ptype is PacketType.COMMAND_REPLY}
    assert replies[1]["device_id"] == "nmcore-ref-host"
    assert [s["kind"] for s in replies[1]["streams"]] == ["emg", "imu", "force", "trigger"]
    assert replies[2]["running_mask"] == 0b100
    assert replies[4]["rate_hz"] == 500
    sync = [p for p in packets if p.ptype is PacketType.TIME_SYNC_REPLY]
    assert sync[0].fields["host_seq"] == 3
    assert (sync[0].fields["tx_us"] - sync[0].fields["rx_us"]) % 2**32 < 10_000
    edges = [p.fields for p in packets if p.ptype is PacketType.TRIGGER_EDGE]
    assert [e["polarity"] for e in edges] == [1, 0]
    # The interrupt stamps the edge after the output was driven: never before it.
    assert 0 <= (edges[0]["edge_us"] - replies[5]["output_us"]) % 2**32 < 1000
    assert 200 <= (edges[1]["edge_us"] - edges[0]["edge_us"]) % 2**32 < 20_000
    assert {p.stream_id for p in packets if p.samples is not None} == {2}
    last_status = [p for p in packets if p.ptype is PacketType.STATUS][-1]
    assert last_status.fields["rx_bad_frames"] == 1


def test_pty_mode(fw_bin: Path) -> None:
    proc = subprocess.Popen(
        [str(fw_bin), "--pty", "--duration-s", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.fullmatch(r"PTY (\S+)\n", line)
        assert m, line
        fd = os.open(m.group(1), os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, encode_command("start", seq=1, stream_mask=1))
            dec = FrameDecoder()
            got: list[Packet] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and sum(p.ptype is PacketType.EMG for p in got) < 3:
                if select.select([fd], [], [], 0.5)[0]:
                    got += dec.feed(os.read(fd, 4096))
            assert sum(p.ptype is PacketType.EMG for p in got) >= 3
            assert dec.stats.frames_rejected == 0
        finally:
            os.close(fd)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_make_test_passes_with_avr_in_simavr(tmp_path: Path) -> None:
    missing = [t for t in ("make", "gcc", "avr-gcc", "simavr") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt install gcc-avr avr-libc simavr)")
    out = subprocess.run(
        ["make", "-C", str(FIRMWARE), f"B={tmp_path}/build", "test"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "byte-identical" in out.stdout
