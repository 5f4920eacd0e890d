"""A private D-Bus daemon that stands in for the system bus.

bleak's BlueZ backend (through dbus-fast) connects to the *system* bus, whose address
dbus-fast reads from `DBUS_SYSTEM_BUS_ADDRESS` before falling back to
/var/run/dbus/system_bus_socket. Pointing that variable at a private daemon lets real
bleak talk to the fake `org.bluez` without root and without touching the machine's bus.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PrivateBus", "dbus_daemon_available"]

# Anyone may own any name and talk to anyone: the bus lives in a private temp dir and
# exists only for the tests. (The real system bus would refuse to let us own org.bluez.)
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
"""

_START_TIMEOUT_S = 5.0


def dbus_daemon_available() -> bool:
    return shutil.which("dbus-daemon") is not None


class PrivateBus:
    """`with PrivateBus() as bus:` starts dbus-daemon; `bus.address` is its address."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> str:
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise RuntimeError("dbus-daemon not found: install the Debian package 'dbus'")
        self._dir = tempfile.TemporaryDirectory(prefix="nmcore-fakebus-")
        root = Path(self._dir.name)
        sock = root / "bus.sock"
        conf = root / "bus.conf"
        conf.write_text(_CONFIG.format(socket=sock))
        self._proc = subprocess.Popen(
            [exe, f"--config-file={conf}", "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not sock.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dbus-daemon did not start (no socket after 5 s)")
            time.sleep(0.01)
        self.address = f"unix:path={sock}"
        return self.address

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> PrivateBus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
