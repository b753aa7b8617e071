"""`stepworks` with every HTTP request timed: bench_iterate.py's profiled repetitions.

    python bench/_iterate_trace.py TRACE.json run PIPELINE.yaml --watch

Runs the CLI's own `main()` with stepworks.client.PlainHttp.request wrapped (the JSON
requests to a plain-HTTP server with no proxy, which is every request of the bench's loop);
at exit writes {"started", "exited", "requests": [[method, path, query, sent, answered,
status], ...]} (wall-clock seconds, the clock the server's timestamps use). The clock
starts before the CLI's imports, as the console script's would.
"""

from __future__ import annotations

import atexit
import json
import sys
import time

STARTED = time.time()

from urllib.parse import urlencode  # noqa: E402

from stepworks import client  # noqa: E402  (the CLI imports it first thing too)

requests: list[list[object]] = []
original_request = client.PlainHttp.request


def timed_request(
    self: client.PlainHttp, method: str, path: str, query: dict[str, object], body: object
) -> tuple[int, bytes]:
    sent = time.time()
    status, content = original_request(self, method, path, query, body)
    requests.append([method, path, urlencode(query), sent, time.time(), status])
    return status, content


def write_trace(path: str) -> None:
    with open(path, "w") as handle:
        json.dump({"started": STARTED, "exited": time.time(), "requests": requests}, handle)


client.PlainHttp.request = timed_request  # type: ignore[method-assign,assignment]
atexit.register(write_trace, sys.argv.pop(1))

from stepworks.cli import main  # noqa: E402

sys.argv[0] = "stepworks"
main()
