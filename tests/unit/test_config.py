"""check-config: every error names its field path, suggests a fix, and exits 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmcore.cli.main import main
from nmcore.config import load_station
from nmcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "station.toml"
    p.write_text(text)
    return p


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_station(_write(tmp_path, text))
    assert info.value.exit_code == 78
    return info.value.problems


def test_every_shipped_config_validates(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((REPO / "configs").glob("*.toml"))
    builtin = REPO / "src/nmcore/configs_builtin/sim-rig.toml"
    assert files, "configs/ has no station files"
    assert main(["check-config", *map(str, files), str(builtin)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(files) + 1


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "[buffer]\nhistroy_s = 30\n")
    assert problems == [
        "buffer.histroy_s: unknown key 'histroy_s'; did you mean 'history_s'? "
        "(allowed here: history_s)"
    ]


def test_wrong_type_names_path(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        '[[devices]]\nid = "a"\ndriver = "sim.emg"\n[[devices]]\nid = "b"\ndriver = "sim.emg"\n'
        'connect_timeout_s = "soon"\n',
    )
    assert len(problems) == 1
    assert problems[0].startswith("devices[1].connect_timeout_s: ")
    assert "'soon'" in problems[0]


def test_out_of_range(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "[mqtt]\nport = 70000\n")
    assert problems[0].startswith("mqtt.port: Input should be less than or equal to 65535")


def test_unknown_driver_suggests(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[[devices]]\nid = "emg"\ndriver = "sim.emgg"\n')
    assert problems[0].startswith(
        "devices[0].driver: unknown driver 'sim.emgg'; did you mean 'sim.emg'?"
    )


def test_driver_options_validated_with_path(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        '[[devices]]\nid = "emg"\ndriver = "sim.emg"\n[devices.options]\nbaudrate = 9600\n',
    )
    assert problems[0].startswith("devices[0].options.baudrate: unknown key 'baudrate'")


def test_duplicate_device_ids(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        '[[devices]]\nid = "x"\ndriver = "sim.emg"\n[[devices]]\nid = "x"\ndriver = "sim.emg"\n',
    )
    assert "used twice" in problems[0]


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_station(_write(tmp_path, "[buffer\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_station(tmp_path / "nope.toml")


def test_password_never_in_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(tmp_path, '[mqtt]\npassword = "hunter2"\n')
    assert problems[0].startswith("mqtt.password: unknown key 'password'; did you mean")
    monkeypatch.setenv("NMCORE_TEST_PW", "s3cret")
    station = load_station(_write(tmp_path, '[mqtt]\npassword_env = "NMCORE_TEST_PW"\n'))
    pw = station.mqtt.password()
    assert pw is not None
    assert pw.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(station)


def test_cli_exit_code_78_and_message(tmp_path: Path) -> None:
    bad = _write(tmp_path, "[buffer]\nhistory_s = -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nmcore.cli.main", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 78
    assert "buffer.history_s: Input should be greater than or equal to 1" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "nmcore.cli.main", "check-config", str(tmp_path / "x.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 78
    assert "no such file" in missing.stderr


def test_schema_config_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema", "config"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "devices" in schema["properties"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("nmcore ")
