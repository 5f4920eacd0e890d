"""Load and validate a station file; every problem names its field path and a fix."""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nmcore.config.models import StationConfig
from nmcore.driver import load_driver
from nmcore.errors import ConfigError

__all__ = ["format_validation_error", "load_station", "validate_station"]


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """('devices', 1, 'options', 'baudrate') -> 'devices[1].options.baudrate'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(model: Any, loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model class that holds the last element of `loc`, if it can be found."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part)
            current = info.annotation if info else None
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = field_path(loc, prefix)
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            name = str(loc[-1])
            hint = ""
            if owner is not None:
                close = difflib.get_close_matches(name, list(owner.model_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                allowed = ", ".join(owner.model_fields)
                hint += f" (allowed here: {allowed})"
            problems.append(f"{path}: unknown key {name!r}{hint}")
        elif kind == "missing":
            problems.append(f"{path}: required but missing; add it")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg} (got {shown})")
    return problems


def validate_station(data: dict[str, Any], source: str = "config") -> StationConfig:
    """Validate a parsed station file, drivers' options included; raise one ConfigError
    listing every problem found."""
    try:
        station = StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid configuration", format_validation_error(exc, StationConfig)
        ) from exc
    problems: list[str] = []
    for i, dev in enumerate(station.devices):
        try:
            driver_cls = load_driver(dev.driver, field_path=f"devices[{i}].driver")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        try:
            driver_cls.Options.model_validate(dev.options)
        except ValidationError as exc:
            problems.extend(
                format_validation_error(exc, driver_cls.Options, prefix=f"devices[{i}].options")
            )
    if problems:
        raise ConfigError(f"{source}: invalid configuration", problems)
    return station


def load_station(path: str | Path) -> StationConfig:
    """Read and validate a TOML station file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such file; check the path") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return validate_station(data, source=str(p))
