"""systemd's notify protocol (sd_notify) over $NOTIFY_SOCKET, written here: one datagram per
call, no dependency. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

The messages nmcore sends (see docs/service.md): READY=1 with a STATUS= line once the
station is running, STATUS= every few seconds, WATCHDOG=1 at half of WatchdogSec= while
healthy, RELOADING=1 on SIGHUP, STOPPING=1 at shutdown.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """`socket_path`: the socket to notify (default `$NOTIFY_SOCKET`; "" disables); a leading
    '@' names an abstract-namespace socket. `watchdog_usec`/`pid`: `$WATCHDOG_USEC` and
    `$WATCHDOG_PID` unless given; the watchdog is ours only if WATCHDOG_PID is unset or is
    this process (systemd sets it to the main PID; a child must not ping for its parent)."""

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._addr: str | bytes | None = None
        if path:
            # '@name' is an abstract-namespace socket: leading NUL on the wire
            self._addr = b"\0" + path[1:].encode() if path.startswith("@") else path
        self._sock: socket.socket | None = None
        usec = watchdog_usec if watchdog_usec is not None else os.environ.get("WATCHDOG_USEC")
        pid = watchdog_pid if watchdog_pid is not None else os.environ.get("WATCHDOG_PID")
        mine = not pid or pid.strip() == str(os.getpid())
        # ping at half the timeout, as sd_watchdog_enabled(3) advises
        self.watchdog_interval_s = (
            int(usec) / 1e6 / 2 if usec and usec.isdigit() and int(usec) > 0 and mine else None
        )
        if self._addr is None:
            self.watchdog_interval_s = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, **fields: str | int) -> bool:
        """Send KEY=value lines, e.g. send(READY=1, STATUS="streaming 4 devices"). False if
        disabled or the socket refused (systemd gone): notification is best effort."""
        if self._addr is None:
            return False
        # a newline inside a value would start a new (bogus) assignment
        msg = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode(), self._addr)
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
