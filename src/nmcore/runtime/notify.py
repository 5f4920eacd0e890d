"""systemd's notify protocol (sd_notify) over $NOTIFY_SOCKET, written here: one datagram per
call, no dependency. Outside systemd (no NOTIFY_SOCKET) every call is a no-op."""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._addr: str | bytes | None = None
        if path:
            # '@name' is an abstract-namespace socket: leading NUL on the wire
            self._addr = b"\0" + path[1:].encode() if path.startswith("@") else path
        self._sock: socket.socket | None = None
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s = int(watchdog_usec) / 1e6 / 2 if watchdog_usec else None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, **fields: str | int) -> bool:
        """Send KEY=value lines, e.g. send(READY=1, STATUS="streaming 4 devices")."""
        if self._addr is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(msg, self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
