"""The `nmcore` command. Exit codes are stable (README, "Exit codes"):

0 ok; 1 unexpected error (a bug: traceback logged); 2 usage error; 65 bad input data;
69 a device or the broker unavailable; 78 invalid configuration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nmcore import __version__
from nmcore.errors import NmcoreError
from nmcore.logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("nmcore.cli")

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs_builtin" / "sim-rig.toml"


def _cmd_version(args: argparse.Namespace) -> int:
    import numba
    import numpy

    print(f"nmcore {__version__} (numpy {numpy.__version__}, numba {numba.__version__})")
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from nmcore.config import load_station

    for path in args.config:
        station = load_station(path)
        n_dev = len(station.devices)
        plural = "s" if n_dev != 1 else ""
        print(f"{path}: ok ({n_dev} device{plural}, station {station.station.id!r})")
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    if args.what == "config":
        from nmcore.config import StationConfig

        schema = StationConfig.model_json_schema()
    else:
        from nmcore.publish.schemas import messages_json_schema

        schema = messages_json_schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from nmcore.runtime.daemon import run_daemon

    return run_daemon(
        config_path=Path(args.config) if args.config else DEFAULT_CONFIG,
        duration_s=args.duration,
        truth_path=Path(args.truth) if args.truth else None,
        print_results=not args.quiet,
        fast=args.fast,
        mqtt=not args.no_mqtt,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )


def _cmd_analyze(args: argparse.Namespace) -> int:
    import orjson

    from nmcore.config import load_station
    from nmcore.runtime.analyze import analyze

    station = load_station(args.config)
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115

    def write(obj: dict[str, object]) -> None:
        sink.write(orjson.dumps(obj).decode() + "\n")

    try:
        summary = analyze(station, Path(args.input), write)
    finally:
        if sink is sys.stdout:
            sink.flush()
        else:
            sink.close()
    log.info(
        "%s: %d rows (%.1f s at %.6g Hz): %d trials, %d onsets, %d messages; "
        "%.1f M channel-samples/s (read %.3f s, processed %.3f s)",
        args.input,
        summary.rows,
        summary.duration_s,
        summary.rate_hz,
        summary.trials,
        summary.onsets,
        sum(summary.messages.values()),
        summary.samples_per_s / 1e6,
        summary.parse_s,
        summary.process_s,
    )
    if summary.missing_samples:
        log.warning("%s: %d samples missing (gaps in 't')", args.input, summary.missing_samples)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from nmcore.runtime import eventloop
    from nmcore.runtime.daemon import _printer, read_station
    from nmcore.runtime.replay import replay_recording

    if not args.fast and not 0 < args.speed < float("inf"):
        log.error("--speed must be a positive number (got %s)", args.speed)
        return EXIT_USAGE
    station, text = read_station(Path(args.config)) if args.config else (None, None)
    fed = eventloop.run(
        replay_recording(
            Path(args.recording),
            station=station,
            config_text=text,
            speed=None if args.fast else args.speed,
            publish=not args.no_mqtt,
            on_output=None if args.quiet else _printer(sys.stdout),
            state_dir=Path(args.state_dir) if args.state_dir else None,
        )
    )
    log.info("%s: replayed %d blocks", args.recording, fed)
    return EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from nmcore.cli import calibrate

    return calibrate.run(args)


def _cmd_devices(args: argparse.Namespace) -> int:
    from nmcore.cli import devices

    return devices.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmcore",
        description="Real-time acquisition and reaction-time measurement for neuromuscular labs.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the acquisition daemon (the simulated rig by default)")
    p.add_argument("config", nargs="?", help="station file (default: the built-in simulated rig)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--truth", help="write the simulated rig's ground truth (JSON lines) here")
    p.add_argument("--quiet", action="store_true", help="do not print results to stdout")
    p.add_argument(
        "--fast", action="store_true", help="simulated devices only: run faster than real time"
    )
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the broker")
    p.add_argument(
        "--state-dir",
        help="outbox and other state (default: $STATE_DIRECTORY, $NMCORE_STATE_DIR or ./var/state)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate station files without touching hardware")
    p.add_argument("config", nargs="+", help="station file(s)")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser(
        "analyze", help="run the detectors over a CSV file; print results as JSON lines"
    )
    p.add_argument("config", help="station file whose [[streams]] describe the CSV columns")
    p.add_argument("input", help="CSV file: header row, first column t (s), one column per channel")
    p.add_argument("--output", help="write the JSON lines to this file instead of stdout")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "replay", help="play a recording through the live pipeline, publishing as if live"
    )
    p.add_argument("recording", help="session directory (or one seg-*.nmrec file)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=1.0, help="times real time (default 1: live-like times)"
    )
    pace.add_argument(
        "--fast", action="store_true", help="as fast as possible, with the recorded times"
    )
    p.add_argument("--config", help="station file to use (default: the one recorded)")
    p.add_argument("--quiet", action="store_true", help="do not print results to stdout")
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the broker")
    p.add_argument("--state-dir", help="outbox and other state (as for `run`)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser(
        "devices", help="list serial ports (--probe: ask who answers) or nearby BLE devices (scan)"
    )
    from nmcore.cli.devices import add_arguments as _devices_arguments

    _devices_arguments(p)
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser(
        "calibrate",
        help="guided calibration: forceplate, emg, imu, latency; `check` before a session",
    )
    from nmcore.cli.calibrate import add_arguments as _calibrate_arguments

    _calibrate_arguments(p)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("schema", help="print a JSON Schema")
    p.add_argument("what", choices=["config", "messages"])
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except NmcoreError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        log.exception("unexpected error (a bug: please report it with this traceback)")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
