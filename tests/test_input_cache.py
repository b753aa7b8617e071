"""A worker host's input cache for a remote store (issue 15): each digest downloaded once,
checked against its name, handed to a step as a read-only link in the step's own folder
(its sandbox grants that and nothing else of the cache), kept under a size cap least
recently used first, and safe with several threads and processes sharing the folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines_app.services import (
    dataset_version_create,
    module_version_create,
    pipeline_version_create,
)
from runs_app import scheduler
from runs_app.executor.sandbox import default_mode
from runs_app.inputcache import InputCache, input_cache
from runs_app.models import RunStatus
from tests.helpers import wait_runs

PROJECT = Path(__file__).resolve().parent.parent


class Source:
    """The remote bytes of one digest, counting how often they are fetched."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.opened = 0

    def __call__(self) -> io.BytesIO:
        self.opened += 1
        return io.BytesIO(self.data)


def test_a_digest_is_downloaded_once_and_each_step_gets_a_read_only_link(tmp_path: Path) -> None:
    cache = InputCache(tmp_path / "inputs")
    source = Source(b"x" * 5000)

    first = cache.provide(source.sha256, 5000, source, tmp_path / "s1" / "in", cap_bytes=10**6)
    second = cache.provide(source.sha256, 5000, source, tmp_path / "s2" / "in", cap_bytes=10**6)

    entry = tmp_path / "inputs" / source.sha256
    assert source.opened == 1
    assert first.read_bytes() == second.read_bytes() == source.data
    assert os.stat(first).st_ino == os.stat(second).st_ino == os.stat(entry).st_ino
    assert oct(os.stat(entry).st_mode & 0o777) == "0o444"  # no step edits another's input
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_bytes_that_do_not_hash_to_their_name_are_refused_and_not_cached(tmp_path: Path) -> None:
    cache = InputCache(tmp_path / "inputs")
    source = Source(b"the right bytes")
    wrong = Source(b"the wrong bytes")

    with pytest.raises(OSError, match="hashing to its name"):
        cache.provide(source.sha256, len(source.data), wrong, tmp_path / "s" / "in", 10**6)

    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [".locks"]
    assert not (tmp_path / "s" / "in").exists()


def test_over_the_cap_the_least_recently_used_entries_go_and_linked_steps_keep_theirs(
    tmp_path: Path,
) -> None:
    cache = InputCache(tmp_path / "inputs")
    a, b, c = (Source(bytes([n]) * 1000) for n in (1, 2, 3))
    big = 10**6
    linked_b = cache.provide(b.sha256, 1000, b, tmp_path / "s1" / "b", big)
    cache.provide(a.sha256, 1000, a, tmp_path / "s2" / "a", big)
    # b was used first, a later: set their clocks apart (file times are coarse).
    os.utime(tmp_path / "inputs" / b.sha256, (100, 100))
    os.utime(tmp_path / "inputs" / a.sha256, (200, 200))
    cache.provide(b.sha256, 1000, b, tmp_path / "s3" / "b", big)  # b is used again: newest

    cache.provide(c.sha256, 1000, c, tmp_path / "s4" / "c", cap_bytes=2500)

    cached = {p.name for p in (tmp_path / "inputs").iterdir() if not p.name.startswith(".")}
    assert cached == {b.sha256, c.sha256}  # a, least recently used, went
    assert not (tmp_path / "inputs" / ".locks" / a.sha256).exists()
    assert cache.stats.evicted == 1 and cache.stats.evicted_bytes == 1000
    assert linked_b.read_bytes() == b.data  # a step's link outlives any eviction
    assert cache.size() == 2000


HAMMER = """
import hashlib, io, json, sys, threading
from pathlib import Path
from runs_app.inputcache import InputCache

root, scratch, worker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
blobs = [bytes([n]) * (20_000 + n) for n in range(12)]
digests = [hashlib.sha256(b).hexdigest() for b in blobs]
cache = InputCache(root)
errors = []

def work(thread):
    for i in range(40):
        n = (i * 7 + thread * 5 + len(worker)) % 12
        target = scratch / f"{worker}-{thread}-{i}"
        try:
            path = cache.provide(
                digests[n], len(blobs[n]), lambda: io.BytesIO(blobs[n]), target, 100_000
            )
            if hashlib.sha256(path.read_bytes()).hexdigest() != digests[n]:
                errors.append(f"wrong bytes for {n}")
        except Exception as error:
            errors.append(repr(error))

threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"errors": errors, "hits": cache.stats.hits, "misses": cache.stats.misses}))
"""


def test_processes_and_threads_share_one_cache_under_its_cap(tmp_path: Path) -> None:
    root, scratch = tmp_path / "inputs", tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(root), str(scratch), f"p{n}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    assert [r["errors"] for r in reports] == [[], [], []]
    assert sum(r["hits"] + r["misses"] for r in reports) == 3 * 4 * 40
    assert sum(r["hits"] for r in reports) > 0
    cache = InputCache(root)
    cache.evict(100_000)  # the last evictor may have found another one at it
    assert cache.size() <= 100_000
    leftovers = {p.name for p in root.iterdir()} - {".locks"}
    assert not [name for name in leftovers if name.startswith(".tmp-")]
    locks = {p.name for p in (root / ".locks").iterdir()} - {".evict"}
    assert locks <= leftovers  # an evicted entry takes its lock file with it


# --- through a worker, with the store in a bucket ---------------------------------------------

PEEK = """
import os

def main(ctx, data, *, other: str = "", marker: str = ""):
    denied = "not tried"
    if other:
        try:
            with open(other, "rb") as handle:
                handle.read(1)
            denied = "no"
        except PermissionError:
            denied = "yes"
    with open(marker, "a") as handle:
        handle.write(f"{data}|{os.stat(data).st_nlink}|{denied}\\n")
    return {"size": str(len(data.read_bytes()))}
"""


@pytest.mark.django_db(transaction=True)
def test_a_worker_reads_remote_inputs_through_the_cache_and_a_step_sees_only_its_own(
    world: Any, s3_bucket: Any, settings: Any, tmp_path_factory: Any, tmp_path: Path
) -> None:
    from runs_app.dispatch import EmbeddedWorkers

    settings.DATA_DIR = tmp_path_factory.mktemp("data")  # the worker's cache folder
    marker = tmp_path / "peek.txt"
    ws = world.workspace
    one = dataset_version_create(ws, "one", b"a,b\n1,2\n", "text/csv").artifact
    two = dataset_version_create(ws, "two", b"a,b\n3,4\n5,6\n", "text/csv").artifact
    module_version_create(ws, "peek", {"step.py": PEEK}, "step.py:main")
    cached_one = Path(settings.DATA_DIR) / "worker-cache" / "inputs" / one.sha256

    def version(dataset: str, other: str) -> Any:
        step = {
            "module": "peek@latest",
            "inputs": {"data": f"dataset:{dataset}@1"},
            "params": {"other": other, "marker": str(marker)},
        }
        return pipeline_version_create(ws, "peek", {"steps": {"look": step}})

    workers = EmbeddedWorkers(threads=2)
    workers.start()
    try:
        first = scheduler.run_create(version("one", ""))
        wait_runs(first)
        second = scheduler.run_create(version("two", str(cached_one)))
        wait_runs(second)
        hits_before = input_cache(Path(settings.DATA_DIR) / "worker-cache" / "inputs").stats.hits
        third = scheduler.run_create(version("one", ""), reuse=False)
        wait_runs(third)
        cache = input_cache(Path(settings.DATA_DIR) / "worker-cache" / "inputs")
    finally:
        workers.stop()

    assert first.status == second.status == third.status == RunStatus.SUCCEEDED
    lines = [line.split("|") for line in marker.read_text().splitlines()]
    assert len(lines) == 3
    for path, links, _ in lines:
        assert "/scratch-" in path and "/inputs/" in path  # the step's own folder, a link
        assert int(links) >= 2  # ... to the cached entry
    assert cached_one.exists() and (cached_one.parent / two.sha256).exists()
    if default_mode() == "required":
        assert lines[1][2] == "yes"  # the other cached input is not the step's to read
    assert cache.stats.hits == hits_before + 1  # the third run read `one` from the cache
