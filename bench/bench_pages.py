"""The web pages on a big workspace: server time and queries, and the 1 GB run download.

    .venv/bin/python bench/bench_pages.py [--modes embedded pg] [--reps 10] [--profile]

Prints `NAME VALUE` lines for `<mode>` in `embedded` (SQLite in a temp data folder) and `pg`
(a PostgreSQL database it creates and drops; `# pg skipped: <why>` when unreachable):

    explorer.<mode>.ms / .queries           the run explorer (runs:detail) of a 200-step run
    explorer_q3.<mode>.queries              the same page for a 3-step run (constant count)
    runs_list.<mode>.ms / .queries          the runs list's first page, 10,000 runs
    runs_list_filtered.<mode>.ms / .queries the same with status + pipeline filters and a
                                            metric column
    runs_list_q3.<mode>.queries             the runs list of a workspace with 3 runs
    run_metrics.<mode>.ms / .queries        the run page (runs:detail) of a run of those
                                            10,000, with its metrics (accuracy, train_loss)
    run_metrics_q3.<mode>.queries           the same page for a run of the 3-run workspace
    runs_list_expression.<mode>.ms / .queries  the runs list of 10,000 filtered by the runs
                                            language: ?filter=metrics.accuracy > 0.9 (or ?q=,
                                            whichever the page takes; a `#` line says)
    runs_list_expression_q3.<mode>.queries  the same on the 3-run workspace (> 0.5: a row)
    compare_n10.<mode>.ms / .queries        the N-run compare (runs:compare?runs=...) of 10
                                            runs of those 10,000; compare_n3 its queries for 3.
                                            Where ?runs= compares nothing (the N-run compare not
                                            there yet): `# n-run compare: not on this branch`,
                                            and compare_2.<mode>.ms / .queries (?a=&b=) instead
    sweep_compare.<mode>.ms / .queries      the comparison page (runs:sweep_compare) of a
                                            500-run sweep (5 x 10 x 10 replicates) on
                                            `accuracy` of `evaluate`, with its `loss` curves
    sweep_compare_q20.<mode>.queries        the same for a 20-run sweep (2 x 2 x 5)
    sweep_compare.first_view_ms             the demo sweep's comparison in Chromium (1280x800):
                                            navigation start to the first screen drawn (load
                                            ended and every figure in view drawn); median of
                                            --browser-reps; .first_view_cold_ms the first visit
                                            (empty cache); .scrolled_figure_ms the slowest figure
                                            from being scrolled to until drawn. --browser no|only
    run_zip.<mode>.mb_per_s                 the whole-run zip (runs:outputs_zip) of 8 outputs
    run_zip.<mode>.peak_rss_mb              of 128 MB (1 GB) streamed and consumed: throughput,
                                            and the process's peak RSS over its baseline

A page's ms is the median of `--reps` GETs (after two warm-up ones) with Django's test
Client, logged in, through the whole middleware stack, the template rendered; its queries
are counted on one more GET. MB = 2**20 bytes. Lines starting with `#` are diagnostics; the
bench never asserts a target; `--profile` adds each query's time and the functions with the
most own time. The data is written straight to the tables (bulk_create, no step executed,
no worker); on Postgres it is then VACUUM ANALYZEd, as autovacuum would have. Each mode runs in
its own subprocess (settings are read at import) with its own temp data folder; the 1 GB of
artifacts lives in one temp folder both modes share (content-addressed, so the second mode
finds the bytes stored). Everything is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import PG_ADMIN_URL, bench_database, run_child  # bench/ is on sys.path when run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("embedded", "pg")
CHILD_TIMEOUT_S = 900
WARMUP = 2
SLOW_S = 2.0  # a page slower than this (its first GET) is measured SLOW_REPS times only
SLOW_REPS = 3
MB = 1 << 20
ZIP_FILES = 8


# --- the parent: one subprocess per mode --------------------------------------------------------
def _base_env(data_dir: Path, artifacts_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Whatever the caller's shell points at, each mode says what it runs on.
        if key not in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_BACKEND")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        STEPWORKS_DATA_DIR=str(data_dir),
        STEPWORKS_ARTIFACTS_ROOT=str(artifacts_dir),
        LOG_LEVEL="WARNING",
        DEBUG="false",  # DEBUG would keep every query in memory and slow each one
    )
    return env


def _postgres_ready() -> str | None:
    """None when Postgres answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except Exception as error:
        return f"PostgreSQL at 127.0.0.1:5432: {error}".splitlines()[0]
    return None


def parent(arguments: argparse.Namespace, passed: list[str]) -> int:
    failed = False
    artifacts_dir = Path(tempfile.mkdtemp(prefix="bench-pages-artifacts-"))
    try:
        for mode in arguments.modes:
            data_dir = Path(tempfile.mkdtemp(prefix=f"bench-pages-{mode}-"))
            env = _base_env(data_dir, artifacts_dir)
            try:
                if mode == "embedded":
                    failed |= run_child(__file__, "mode", mode, env, passed, CHILD_TIMEOUT_S) != 0
                    continue
                why = _postgres_ready()
                if why is not None:
                    print(f"# pg skipped: {why}", flush=True)
                    continue
                with bench_database(f"stepworks_bench_pages_{os.getpid()}") as database_url:
                    env.update(DATABASE_URL=database_url, SECRET_KEY=secrets.token_urlsafe(32))
                    failed |= run_child(__file__, "mode", mode, env, passed, CHILD_TIMEOUT_S) != 0
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        shutil.rmtree(artifacts_dir, ignore_errors=True)
    return 1 if failed else 0


# --- the sweep comparison in Chromium ----------------------------------------------------------
# Installed before any page script (an init script is not subject to the page's CSP): it notes
# when each figure's plotly SVG first appears in its container, whatever draws it and when.
_FIGURE_CLOCK = """
window.__figureDrawn = {};
new MutationObserver(() => {
  for (const box of document.querySelectorAll("[data-plotly]")) {
    const id = box.getAttribute("data-plotly");
    if (!(id in window.__figureDrawn) && box.querySelector(".main-svg")) {
      window.__figureDrawn[id] = performance.now();
    }
  }
}).observe(document, {childList: true, subtree: true});
"""
_IN_VIEW = """() => [...document.querySelectorAll("[data-plotly]")]
  .filter((box) => { const r = box.getBoundingClientRect();
                     return r.height > 0 && r.bottom > 0 && r.top < window.innerHeight; })
  .map((box) => box.getAttribute("data-plotly"))"""
_LOADED_AT = "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
VIEWPORT = {"width": 1280, "height": 800}


def _first_view(page: Any, url: str) -> tuple[float, list[str], int]:
    """(ms from navigation start to the first view drawn, the figures in that view, the
    figures on the page). The first view is drawn when the load event has ended and every
    figure that the viewport shows at that moment has its SVG."""
    page.goto(url, wait_until="load")
    in_view = page.evaluate(_IN_VIEW)
    for figure in in_view:
        page.wait_for_selector(f"[data-plotly='{figure}'] .main-svg", timeout=60_000)
    drawn = page.evaluate("() => window.__figureDrawn")
    total = page.locator("[data-plotly]").count()
    first_view = max([page.evaluate(_LOADED_AT), *(drawn[f] for f in in_view)])
    _settle(page)
    return first_view, in_view, total


def _settle(page: Any, timeout_s: float = 60) -> None:
    """Wait for the page to have plotly (it fetches it when idle after its load), so the next
    navigation does not wait behind this page's script."""
    deadline = time.monotonic() + timeout_s
    while page.evaluate("() => typeof Plotly") == "undefined" and time.monotonic() < deadline:
        time.sleep(0.05)
    page.wait_for_timeout(200)


def _scrolled_figures(page: Any) -> list[tuple[str, float]]:
    """Each figure not drawn yet, scrolled to in page order: ms from the scroll to its SVG."""
    out = []
    figures = page.evaluate(
        "() => [...document.querySelectorAll('[data-plotly]')]"
        ".map((box) => box.getAttribute('data-plotly'))"
    )
    for figure in figures:
        if figure in page.evaluate("() => window.__figureDrawn"):
            continue
        scrolled = page.evaluate(
            "(id) => { document.querySelector(`[data-plotly='${id}']`)"
            ".scrollIntoView({block: 'center'}); return performance.now(); }",
            figure,
        )
        page.wait_for_selector(f"[data-plotly='{figure}'] .main-svg", timeout=60_000)
        out.append((figure, page.evaluate("(id) => window.__figureDrawn[id]", figure) - scrolled))
    return out


def measure_sweep_first_view(arguments: argparse.Namespace) -> int:
    """sweep_compare.first_view_ms: the demo sweep's comparison in Chromium, at 1280x800."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _demo_server import CHROMIUM_ARGS, chromium, demo_server, log_in

    executable = chromium()
    if executable is None:
        print("# sweep_compare.first_view skipped: no chromium (apt-get install chromium)")
        return 0
    from playwright.sync_api import sync_playwright

    with demo_server(sweep=True) as demo, sync_playwright() as playwright:
        url = f"{demo.url}/w/demo/sweeps/{demo.sweep}/compare/"
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            # The server's first answer imports scipy and compiles templates: not the page's
            # cost, so one visit from another context (its own cache) comes first.
            warmup = browser.new_context(viewport=VIEWPORT)
            log_in(warmup.new_page(), demo.url)
            started = time.perf_counter()
            warmup.pages[0].goto(url, wait_until="load")
            server_first = (time.perf_counter() - started) * 1000
            warmup.close()
            # A new context has an empty HTTP cache: the first visit fetches plotly.
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.add_init_script(_FIGURE_CLOCK)
            log_in(page, demo.url)
            cold, in_view, total = _first_view(page, url)
            warm = [_first_view(page, url)[0] for _ in range(arguments.browser_reps)]
            scrolled = _scrolled_figures(page)
        finally:
            browser.close()
    print(f"sweep_compare.first_view_ms {statistics.median(warm):.0f}", flush=True)
    print(f"sweep_compare.first_view_cold_ms {cold:.0f}", flush=True)
    if scrolled:
        print(f"sweep_compare.scrolled_figure_ms {max(ms for _, ms in scrolled):.0f}")
    print(
        f"# sweep_compare first view: {len(in_view)} of {total} figures in the viewport "
        f"({', '.join(in_view) or 'none'}); warm {min(warm):.0f}-{max(warm):.0f} ms over "
        f"{len(warm)}; scrolled to, drawn in: "
        + (", ".join(f"{figure} {ms:.0f} ms" for figure, ms in scrolled) or "none left"),
        flush=True,
    )
    print(f"# sweep_compare: a fresh server's first answer loaded in {server_first:.0f} ms")
    return 0


# --- the child: measuring ----------------------------------------------------------------------
def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _get(client: Any, url: str, params: dict[str, Any]) -> Any:
    response = client.get(url, params)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {response.status_code}")
    return response


def _profile(label: str, call: Callable[[], Any], reps: int = 5, top: int = 12) -> None:
    """Where the time of `reps` calls goes: `# profile` lines, ms per call, the functions
    with the most own time (and their cumulative time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(reps):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    total = sum(own for _, _, own, _, _ in stats.values()) * 1000 / reps
    print(f"# profile {label}: {total:.1f} ms a call (under cProfile); most own time:")
    for (filename, line, function), (_, calls, own, cumulative, _) in rows:
        where = filename.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "")
        print(
            f"#   {own * 1000 / reps:7.2f} own {cumulative * 1000 / reps:7.2f} cum "
            f"{calls // reps:6d}x {where}:{line}:{function}"
        )


def measure_page(
    client: Any,
    name: str,
    mode: str,
    url: str,
    params: dict[str, Any],
    reps: int,
    profile: bool,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for warmup in range(WARMUP):
        started = time.perf_counter()
        _get(client, url, params)
        if warmup == 0 and time.perf_counter() - started > SLOW_S:
            # Minutes a page: a median of a few says as much, and the bench still ends.
            print(f"# {name}.{mode}: over {SLOW_S:.0f} s a GET: {SLOW_REPS} reps", flush=True)
            reps = min(reps, SLOW_REPS)
            break
    timings, cpu = [], []
    for _ in range(reps):
        started, cpu_started = time.perf_counter(), time.process_time()
        _get(client, url, params)
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        size = len(_get(client, url, params).content)
    print(f"{name}.{mode}.ms {statistics.median(timings):.1f}", flush=True)
    print(f"{name}.{mode}.queries {len(queries)}", flush=True)
    # Wall minus this process's CPU: the database's share (Postgres) or waiting for a CPU.
    print(
        f"# {name}.{mode}: min {min(timings):.1f} max {max(timings):.1f} ms; "
        f"CPU of this process {statistics.median(cpu):.1f} ms (median); {size / 1024:.0f} KB",
        flush=True,
    )
    if profile:
        for query in queries.captured_queries:
            print(f"#   query {float(query['time']) * 1000:6.1f} ms {query['sql'][:150]}")
        _profile(f"{name}.{mode}", lambda: _get(client, url, params))


def count_queries(client: Any, name: str, mode: str, url: str, params: dict[str, Any]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _get(client, url, params)
    with CaptureQueriesContext(connection) as queries:
        _get(client, url, params)
    print(f"{name}.{mode}.queries {len(queries)}", flush=True)


def measure_sweep(client: Any, world: Any, sweeps: dict[str, Any], mode: str, args: Any) -> None:
    from django.urls import NoReverseMatch, reverse

    slug = world.explore.slug
    try:
        urls = {key: reverse("runs:sweep_compare", args=[slug, s.pk]) for key, s in sweeps.items()}
    except NoReverseMatch:
        print("# sweep_compare skipped: no runs:sweep_compare route", flush=True)
        return
    # The metric and step the page would pick by itself, spelled out; the loss curve is its
    # default second chart (a 20-point series per run).
    params = {"metric": "accuracy", "step": "evaluate", "direction": "max"}
    measure_page(client, "sweep_compare", mode, urls["500"], params, args.reps, args.profile)
    count_queries(client, "sweep_compare_q20", mode, urls["20"], params)


# The runs language's filter of the runs list: about 1 in 7 of the 10,000 runs match (an
# `accuracy` drawn from 0.6-0.95 on each run that got to evaluate).
RUNS_FILTER = "metrics.accuracy > 0.9"
# The same comparison on the 3-run workspace, at a threshold its one measured run (0.89)
# passes: a page with no row skips the queries of its rows, which would flatter the count.
RUNS_FILTER_Q3 = "metrics.accuracy > 0.5"


def _matches(client: Any, url: str, params: dict[str, Any]) -> int | None:
    """The runs list's count (its heading, `Runs (1,234)`)."""
    heading = re.search(r"<h1>Runs <span[^>]*>\(([\d,]+)\)", _get(client, url, params).text)
    return int(heading.group(1).replace(",", "")) if heading else None


def _filtering_query(client: Any, listing: str) -> dict[str, Any]:
    """{param: RUNS_FILTER} with the parameter the runs page filters by: `filter` (as the
    API and DECISIONS name it) or `q` (the page's own box); the `#` line says which."""
    total = _matches(client, listing, {})
    for key in ("filter", "q"):
        found = _matches(client, listing, {key: RUNS_FILTER})
        if found is not None and total is not None and found < total:
            print(f"# runs_list_expression: ?{key}={RUNS_FILTER!r}: {found:,} of {total:,} runs")
            return {key: RUNS_FILTER}
    print(f"# runs_list_expression: neither ?filter= nor ?q= filtered the {total} runs")
    return {"filter": RUNS_FILTER}


def measure_run_pages(client: Any, world: Any, mode: str, args: Any) -> None:
    """The run page of a run with metrics, the runs list filtered by an expression, and the
    N-run compare of 10 runs, all in the 10,000-run workspace."""
    from django.urls import reverse

    from runs_app.models import PipelineRun, RunStatus

    def succeeded(workspace: Any) -> Any:
        return PipelineRun.objects.filter(workspace=workspace, status=RunStatus.SUCCEEDED)

    runs = world.runs.slug
    newest = succeeded(world.runs).order_by("-pk").first()
    small = succeeded(world.small).order_by("-pk").first()
    detail = reverse("runs:detail", args=[runs, newest.pk])
    measure_page(client, "run_metrics", mode, detail, {}, args.reps, args.profile)
    if small is not None:
        small_detail = reverse("runs:detail", args=["small", small.pk])
        count_queries(client, "run_metrics_q3", mode, small_detail, {})
    listing = reverse("runs:list", args=[runs])
    expression = _filtering_query(client, listing)
    measure_page(client, "runs_list_expression", mode, listing, expression, args.reps, args.profile)
    small_list = reverse("runs:list", args=["small"])
    small_expression = {key: RUNS_FILTER_Q3 for key in expression}
    print(f"# runs_list_expression_q3: {_matches(client, small_list, small_expression)} of 3 runs")
    count_queries(client, "runs_list_expression_q3", mode, small_list, small_expression)

    # The oldest runs: never among the 30 recent ones the two-run picker lists, so a page
    # that links all ten compares them.
    ten = list(succeeded(world.runs).order_by("pk").values_list("pk", flat=True)[:10])
    compare = reverse("runs:compare", args=[runs])
    query = {"runs": ",".join(map(str, ten))}
    page = _get(client, compare, query).content.decode()
    if all(reverse("runs:detail", args=[runs, pk]) in page for pk in ten):
        measure_page(client, "compare_n10", mode, compare, query, args.reps, args.profile)
        count_queries(client, "compare_n3", mode, compare, {"runs": ",".join(map(str, ten[:3]))})
    else:
        print("# n-run compare: not on this branch (?runs= compared nothing): ?a=&b= instead")
        pair = {"a": ten[0], "b": ten[1]}
        measure_page(client, "compare_2", mode, compare, pair, args.reps, args.profile)


def measure_zip(client: Any, world: Any, run: Any, mode: str, expected: int) -> None:
    from django.urls import reverse

    url = reverse("runs:outputs_zip", args=[world.explore.slug, run.pk])
    gc.collect()
    reset = _reset_peak_rss()
    baseline_kb = _status_kb("VmRSS") if reset else _status_kb("VmHWM")
    started = time.perf_counter()
    response = _get(client, url, {})
    size = 0
    for chunk in response.streaming_content:
        size += len(chunk)
    response.close()
    elapsed = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    if size != int(response["Content-Length"]) or size < expected:
        raise RuntimeError(f"the zip has {size} bytes, Content-Length {response['Content-Length']}")
    print(f"run_zip.{mode}.mb_per_s {size / MB / elapsed:.0f}", flush=True)
    print(f"run_zip.{mode}.peak_rss_mb {(peak_kb - baseline_kb) / 1024:.1f}", flush=True)
    how = "VmHWM reset before the download" if reset else "VmHWM could not be reset: over it"
    print(
        f"# run_zip.{mode}: {size / MB:.0f} MB in {elapsed:.2f} s; baseline RSS "
        f"{baseline_kb / 1024:.0f} MB ({how})",
        flush=True,
    )


def child(arguments: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings
    from django.urls import reverse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _pages_data as data

    mode = arguments.mode
    started = time.monotonic()
    # The manifest storage needs `collectstatic`; the pages' cost does not depend on it.
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with override_settings(STORAGES={**settings.STORAGES, "staticfiles": static}):
        call_command("migrate", verbosity=0)
        world = data.world_create()
        explorer_run = data.explorer_run_create(world, arguments.steps)
        tiny_run = data.explorer_run_create(world, 3, name="tiny")
        data.runs_list_create(world, world.runs, arguments.runs)
        data.runs_list_create(world, world.small, 3)
        sweeps = {
            "500": data.sweep_create(world, "sweep500", 5, 10, 10),
            "20": data.sweep_create(world, "sweep20", 2, 2, 5),
        }
        if connection.vendor == "postgresql":
            # Autovacuum would have analysed tables this size on a live database, and vacuumed
            # them after so many inserts (its insert threshold, Postgres 13+), which sets the
            # visibility map that index-only scans read; here the pages would otherwise be
            # measured before it wakes up (or, worse, while it does).
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        built = time.monotonic()
        big_run = data.big_run_create(world, ZIP_FILES, arguments.zip_mb * MB // ZIP_FILES)
        print(
            f"# {mode}: data written in {built - started:.1f} s (migrate included"
            f"{', then VACUUM ANALYZE' if connection.vendor == 'postgresql' else ''}), "
            f"the {arguments.zip_mb} MB run in {time.monotonic() - built:.1f} s",
            flush=True,
        )

        client = Client(HTTP_HOST="localhost")
        client.force_login(world.user)
        explore, runs = world.explore.slug, world.runs.slug
        measure_page(
            client,
            "explorer",
            mode,
            reverse("runs:detail", args=[explore, explorer_run.pk]),
            {},
            arguments.reps,
            arguments.profile,
        )
        count_queries(
            client, "explorer_q3", mode, reverse("runs:detail", args=[explore, tiny_run.pk]), {}
        )
        runs_url = reverse("runs:list", args=[runs])
        measure_page(client, "runs_list", mode, runs_url, {}, arguments.reps, arguments.profile)
        filtered = {"status": "failed", "pipeline": "pipe1", "metric": "accuracy"}
        measure_page(
            client,
            "runs_list_filtered",
            mode,
            runs_url,
            filtered,
            arguments.reps,
            arguments.profile,
        )
        count_queries(client, "runs_list_q3", mode, reverse("runs:list", args=["small"]), {})
        measure_run_pages(client, world, mode, arguments)
        measure_sweep(client, world, sweeps, mode, arguments)
        measure_zip(client, world, big_run, mode, arguments.zip_mb * MB)

    load = os.getloadavg()[0]
    print(
        f"# {mode} took {time.monotonic() - started:.1f} s; load average {load:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, help="run one mode here (the parent's child)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--zip-mb", type=int, default=1024)
    parser.add_argument("--profile", action="store_true", help="print where each page's time goes")
    parser.add_argument("--browser-reps", type=int, default=5)
    parser.add_argument(
        "--browser",
        choices=("yes", "no", "only"),
        default="yes",
        help="the sweep comparison's first view in Chromium (~2 min: it runs the demo sweep)",
    )
    arguments = parser.parse_args()
    # A SIGTERM unwinds through the finally blocks: temp folders removed, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if arguments.mode:
        return child(arguments)
    failed = 0
    if arguments.browser != "no":
        failed = measure_sweep_first_view(arguments)
    if arguments.browser == "only":
        return failed
    passed = [
        f"--reps={arguments.reps}",
        f"--steps={arguments.steps}",
        f"--runs={arguments.runs}",
        f"--zip-mb={arguments.zip_mb}",
        *(["--profile"] if arguments.profile else []),
    ]
    return parent(arguments, passed) or failed


if __name__ == "__main__":
    sys.exit(main())
