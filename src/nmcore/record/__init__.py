"""The session recorder: append-only, chunked, checksummed files, a reader and exports.

`SessionRecorder` writes (`nmcore.record.writer`), `open_session` reads
(`nmcore.record.reader`), `export_csv`/`export_xdf` convert (`nmcore.record.export`). The
on-disk format is documented in `nmcore.record.format` and docs/recording.md.
"""

from __future__ import annotations

from nmcore.record.export import export_csv, export_xdf
from nmcore.record.reader import (
    SegmentIntegrity,
    Session,
    SessionIntegrity,
    StreamData,
    open_session,
    scan_segment,
)
from nmcore.record.writer import (
    OsSegmentFile,
    RecorderStatus,
    RecordingState,
    SegmentFile,
    SessionRecorder,
)

__all__ = [
    "OsSegmentFile",
    "RecorderStatus",
    "RecordingState",
    "SegmentFile",
    "SegmentIntegrity",
    "Session",
    "SessionIntegrity",
    "SessionRecorder",
    "StreamData",
    "export_csv",
    "export_xdf",
    "open_session",
    "scan_segment",
]
