"""Run every benchmark and print one JSON object per figure (name, value, unit, baseline).

    .venv/bin/python benchmarks/run_all.py            # full figures (minutes)
    .venv/bin/python benchmarks/run_all.py --smoke    # seconds; what CI may run
    .venv/bin/python benchmarks/run_all.py --only ring clock

Each bench_*.py runs in its own process (a fresh interpreter: no JIT or GC state carried
between benchmarks) and prints JSON lines; lines that are not JSON are passed to stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: finishes in seconds")
    parser.add_argument("--only", nargs="*", default=None, help="bench names, e.g. ring clock")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        known = {s.stem.removeprefix("bench_"): s for s in scripts}
        # "ring" or "bench_ring" or "bench_ring.py": a typo must not run nothing and pass
        wanted = [name.removesuffix(".py").removeprefix("bench_") for name in args.only]
        unknown = [name for name in wanted if name not in known]
        if unknown:
            parser.error(
                f"--only: no benchmark named {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        scripts = [known[name] for name in sorted(set(wanted))]
    failed = []
    for script in scripts:
        t0 = time.monotonic()
        cmd = [sys.executable, str(script), *(["--smoke"] if args.smoke else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                print(line, file=sys.stderr)
                continue
            obj.setdefault("benchmark", script.stem)
            print(json.dumps(obj), flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
            print(proc.stderr[-3000:], file=sys.stderr)
        print(
            f"# {script.name}: {time.monotonic() - t0:.1f} s, exit {proc.returncode}",
            file=sys.stderr,
        )
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
