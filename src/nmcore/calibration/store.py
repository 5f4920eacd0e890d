"""Calibration files on disk: one human-readable JSON file `<id>.json` per calibration.

Files are written once and never overwritten (a new calibration gets a new id), atomically
(a temporary file in the same directory, hard-linked to its final name, so a crash never leaves
half a file and two writers never clobber each other). A calibration whose quality checks
failed is refused, with the reasons.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from nmcore.calibration.model import Calibration, CalibrationKind, new_id
from nmcore.errors import CalibrationError

__all__ = ["CalibrationStore"]

_log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LATEST = "latest"


class CalibrationStore:
    """A directory of calibration files."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, cal_id: str) -> Path:
        if not _ID.match(cal_id) or cal_id.startswith("."):
            raise CalibrationError(
                f"{cal_id!r} is not a calibration id (letters, digits, '_', '-', '.'): "
                "use an id shown by `nmcore calibrate list`"
            )
        return self.directory / f"{cal_id}.json"

    def ids(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        return {p.stem for p in self.directory.glob("*.json") if not p.name.startswith(".")}

    def new_id(self, device_id: str, kind: CalibrationKind, now_utc: datetime) -> str:
        """A fresh id not yet used in this store."""
        return new_id(device_id, kind, now_utc, self.ids())

    def save(self, cal: Calibration) -> Path:
        """Write `cal` as `<id>.json`; refuses a failed calibration and an id already saved."""
        if not cal.passed:
            lines = [f"  - {c.name}: {c.message}" for c in cal.failures()]
            raise CalibrationError(
                f"calibration {cal.id} was not saved: {len(lines)} quality check(s) failed\n"
                + "\n".join(lines)
            )
        final = self.path(cal.id)
        self.directory.mkdir(parents=True, exist_ok=True)
        text = cal.model_dump_json(indent=2) + "\n"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{cal.id}.", suffix=".tmp", dir=self.directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                # link, unlike rename, fails when the target exists: never overwrite an id
                os.link(tmp, final)
            except FileExistsError:
                raise CalibrationError(
                    f"calibration {cal.id} already exists in {self.directory}; calibrations are "
                    "never overwritten: create it with a new id (CalibrationStore.new_id)"
                ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._fsync_dir()
        return final

    def _fsync_dir(self) -> None:
        # the new directory entry survives a power cut only once the directory is synced
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self, cal_id: str) -> Calibration:
        path = self.path(cal_id)
        cal = self._read(path)
        if cal.id != cal_id:
            raise CalibrationError(
                f"{path}: the file holds calibration {cal.id!r}, not {cal_id!r}; "
                "files must be named after their id: rename or remove it"
            )
        return cal

    def _read(self, path: Path) -> Calibration:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CalibrationError(
                f"no calibration file {path}: check the id (`nmcore calibrate list`) "
                "or the calibration directory"
            ) from None
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot read the calibration file: {exc}") from exc
        try:
            return Calibration.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<file>'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise CalibrationError(
                f"{path} is not a valid calibration file ({problems}); it was edited by hand or "
                "written by another version: restore it or calibrate again"
            ) from exc

    def list(
        self,
        device_id: str | None = None,
        kind: CalibrationKind | None = None,
        *,
        skip_bad: bool = False,
    ) -> builtins.list[Calibration]:
        """Calibrations matching the filters, oldest first. A file that cannot be read raises
        (naming it) unless `skip_bad`, which logs a warning for each instead."""
        out: builtins.list[Calibration] = []
        for cal_id in sorted(self.ids()):
            try:
                cal = self.load(cal_id)
            except CalibrationError as exc:
                if not skip_bad:
                    raise
                _log.warning("skipping unreadable calibration file: %s", exc)
                continue
            if device_id is not None and cal.device_id != device_id:
                continue
            if kind is not None and cal.kind != kind:
                continue
            out.append(cal)
        out.sort(key=lambda c: (c.created_utc, c.id))
        return out

    def latest(self, device_id: str, kind: CalibrationKind) -> Calibration | None:
        found = self.list(device_id, kind)
        return found[-1] if found else None

    def resolve(
        self, ref: str, device_id: str | None = None, kind: CalibrationKind | None = None
    ) -> Calibration:
        """`ref` is an id, or "latest" (needs device_id and kind). Checks that the calibration
        belongs to `device_id` and is of `kind` when those are given."""
        if ref == LATEST:
            if device_id is None or kind is None:
                raise CalibrationError("'latest' needs a device id and a calibration kind")
            cal = self.latest(device_id, kind)
            if cal is None:
                raise CalibrationError(
                    f"no {kind} calibration for device {device_id} in {self.directory}: "
                    f"run `nmcore calibrate {kind}` first"
                )
            return cal
        cal = self.load(ref)
        if device_id is not None and cal.device_id != device_id:
            raise CalibrationError(
                f"calibration {ref} belongs to device {cal.device_id}, not {device_id}: "
                "give a calibration of this device"
            )
        if kind is not None and cal.kind != kind:
            raise CalibrationError(
                f"calibration {ref} is a {cal.kind} calibration, not {kind}: give a {kind} one"
            )
        return cal
