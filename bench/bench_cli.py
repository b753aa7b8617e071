"""How long `stepworks` takes from its start to its first request (issue 13: the loop at
the terminal). Prints `cli.startup_ms`: the median over --reps runs of `stepworks runs`
against a local stand-in server that notes when each request arrives, and
`cli.help_ms`, the wall time of `stepworks --help`.

    .venv/bin/python bench/bench_cli.py [--reps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STEPWORKS = Path(sys.executable).with_name("stepworks")
arrivals: list[float] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        arrivals.append(time.perf_counter())
        body = json.dumps({"count": 0, "next": None, "previous": None, "results": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    reps = parser.parse_args().reps
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        # Without PYTHONDONTWRITEBYTECODE (set in some shells and CI): the first, discarded
        # run writes the bytecode, as any install's first run does; later ones do not compile.
        **{key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"},
        "STEPWORKS_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "STEPWORKS_TOKEN": "sw_bench",
        "STEPWORKS_WORKSPACE": "bench",
        "HOME": "/tmp",
    }
    startup, helps = [], []
    for _ in range(reps + 1):
        arrivals.clear()
        started = time.perf_counter()
        subprocess.run([str(STEPWORKS), "runs"], env=env, check=True, capture_output=True)
        startup.append((arrivals[0] - started) * 1000)
        started = time.perf_counter()
        subprocess.run([str(STEPWORKS), "--help"], env=env, check=True, capture_output=True)
        helps.append((time.perf_counter() - started) * 1000)
    server.shutdown()
    print(f"cli.startup_ms {statistics.median(startup[1:]):.0f}")
    print(f"cli.help_ms {statistics.median(helps[1:]):.0f}")


if __name__ == "__main__":
    main()
