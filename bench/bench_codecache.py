"""What checking a code snapshot costs per step (issue 10: snapshots are verified on every
use). Prints microseconds per materialise_code call for a folder this process knows (a stat
of every file) and one it does not (a byte compare and a bytecode check, once per process).

    .venv/bin/python bench/bench_codecache.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs_app.executor import codecache


def per_call_us(files: dict[str, str], known: bool, n: int) -> float:
    root = Path(tempfile.mkdtemp())
    codecache.materialise_code(files, "a" * 64, root)
    start = time.perf_counter()
    for _ in range(n):
        if not known:
            codecache._KNOWN.clear()
        codecache.materialise_code(files, "a" * 64, root)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    for count in (1, 6, 30):
        files = {f"lib/m{i}.py": "x = 1\n" * 200 for i in range(count - 1)}
        files["step.py"] = "def main(ctx):\n    return None\n"
        known = per_call_us(files, True, 2000)
        unknown = per_call_us(files, False, 200)
        print(f"{count:3d} files: known {known:7.0f} us/step   first use {unknown:7.0f} us")


if __name__ == "__main__":
    main()
