"""A publisher process for the last-will test: connects, says ready, waits to be killed.

Usage: will_child.py HOST PORT ROOT STATION STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nmcore.config.models import MqttConfig
from nmcore.publish import Publisher


async def main(host: str, port: int, root: str, station: str, state_dir: Path) -> None:
    cfg = MqttConfig(host=host, port=port, root=root, keepalive_s=5)
    async with Publisher(cfg, station, state_dir) as pub:
        if not await pub.wait_connected(10.0):
            raise SystemExit("no broker")
        pub.set_status("ready")
        await asyncio.sleep(0.2)  # let the retained 'ready' reach the broker
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    h, p, r, s, d = sys.argv[1:6]
    asyncio.run(main(h, int(p), r, s, Path(d)))
