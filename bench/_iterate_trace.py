"""`stepworks` with every HTTP request timed: bench_iterate.py's profiled repetitions.

    python bench/_iterate_trace.py TRACE.json run PIPELINE.yaml --watch

Runs the CLI's own `main()` with httpx.Client.send wrapped; at exit writes
{"started", "exited", "requests": [[method, path, query, sent, answered, status], ...]}
(wall-clock seconds, the clock the server's timestamps use). Importing httpx here moves
its import before the CLI's: these runs say where the time goes, the figures come from
the plain console script.
"""

from __future__ import annotations

import atexit
import json
import sys
import time

STARTED = time.time()

import httpx  # noqa: E402  (after the clock starts)

requests: list[list[object]] = []
original_send = httpx.Client.send


def timed_send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
    sent = time.time()
    response = original_send(self, request, **kwargs)  # type: ignore[arg-type]
    row = [request.method, request.url.path, request.url.query.decode(), sent, time.time()]
    requests.append([*row, response.status_code])
    return response


def write_trace(path: str) -> None:
    with open(path, "w") as handle:
        json.dump({"started": STARTED, "exited": time.time(), "requests": requests}, handle)


httpx.Client.send = timed_send  # type: ignore[method-assign]
atexit.register(write_trace, sys.argv.pop(1))

from stepworks.cli import main  # noqa: E402

sys.argv[0] = "stepworks"
main()
