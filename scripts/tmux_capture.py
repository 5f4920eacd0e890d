"""Run an interactive command in a detached tmux pane, press Enter at every prompt, and print
what the terminal showed (for the docs' terminal sessions).

    .venv/bin/python scripts/tmux_capture.py -- .venv/bin/nmcore calibrate forceplate ...
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time

PROMPT = "Press Enter when ready"


TMUX = shutil.which("tmux") or "/usr/bin/tmux"


def tmux(*args: str) -> str:
    # our own fixed arguments: nothing from outside reaches a shell
    return subprocess.run([TMUX, *args], check=True, capture_output=True, text=True).stdout  # noqa: S603


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=110)
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    name = f"nmcap{int(time.time())}"
    shown = "$ " + " ".join(shlex.quote(c) for c in cmd).replace(".venv/bin/", "")
    script = f'echo {shlex.quote(shown)}; {shlex.join(cmd)}; echo "[exit $?]"; sleep 600'
    tmux("new-session", "-d", "-s", name, "-x", str(args.width), "-y", "50", "bash", "-c", script)
    tmux("set-option", "-t", name, "history-limit", "10000")
    answered = 0
    deadline = time.monotonic() + args.timeout_s
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-J", "-S", "-", "-t", name)
            if screen.count(PROMPT) > answered:
                answered += 1
                time.sleep(1.0)  # as a technician would
                tmux("send-keys", "-t", name, "Enter")
            if "[exit " in screen:
                lines = screen.rstrip().splitlines()
                print("\n".join(line.rstrip() for line in lines))
                return 0
        print("timed out", file=sys.stderr)
        return 1
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], check=False)  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
