"""The fault suite: `python -m faults` (make faults), `python -m faults --soak` (make soak).

Each broker's scenarios run in a child process of their own (`--leg`): its own PostgreSQL
database, its own broker (a redis-server of its own, or RabbitMQ behind a proxy) and queue
names, real `rundramatiq` worker groups it kills and replaces. Prints one row a scenario and
exits 1 if any row lost, left stuck, duplicated an effect or corrupted an artifact.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from faults.fleet import ROOT, Broker, Database

SEEDS = Path(__file__).with_name("SEEDS")

COLUMNS = (
    ("scenario", 14),
    ("broker", 8),
    ("runs", 4),
    ("steps", 5),
    ("exec", 4),
    ("dup exec", 8),
    ("lost", 4),
    ("stuck", 5),
    ("dup eff", 7),
    ("corrupt", 7),
    ("max s", 6),
    ("resent", 6),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    parser.add_argument("--broker", choices=("redis", "rabbitmq", "both"), default="both")
    parser.add_argument("--scenario", action="append", help="one scenario (repeatable)")
    parser.add_argument("--ci", action="store_true", help="the small subset CI runs")
    parser.add_argument("--size", choices=("full", "quick"), default="full")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (printed)")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="a seeded random mix")
    parser.add_argument(
        "--regressions", action="store_true", help="replay every soak seed kept in faults/SEEDS"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument("--leg", choices=("redis", "rabbitmq"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    if args.leg:
        return _leg(args, seed)
    if args.regressions:
        return _regressions()

    brokers = ["redis", "rabbitmq"] if args.broker == "both" else [args.broker]
    if args.soak and args.broker == "both":
        brokers = [random.Random(seed).choice(brokers)]
    print(f"fault suite: seed {seed}, brokers {', '.join(brokers)}", flush=True)
    rows: list[dict[str, Any]] = []
    for broker in brokers:
        why = Broker.unavailable(broker)
        if why:
            print(f"{broker}: skipped ({why})", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, "-m", "faults", "--leg", broker, "--seed", str(seed)]
            command += ["--size", args.size, "--json", out.name]
            command += [f"--scenario={name}" for name in args.scenario or []]
            command += ["--ci"] * args.ci + ["--keep"] * args.keep
            if args.soak:
                command += ["--soak", str(args.soak)]
            done = subprocess.run(command, cwd=ROOT, check=False)
            leg_rows = json.loads(Path(out.name).read_text() or "[]")
            if done.returncode not in (0, 1) and not leg_rows:
                print(f"{broker}: the leg crashed (exit {done.returncode})", flush=True)
                return 2
            rows += leg_rows
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if not _ok(r)]
    for row in failed:
        print(f"\nFAILED {row['scenario']} on {row['broker']}:", *row["problems"], sep="\n  ")
    if failed:
        print(f"\nrerun: python -m faults --seed {seed} (a failing soak's seed: faults/SEEDS)")
    return 1 if failed else 0


def _regressions() -> int:
    """Each seed a soak failed with, replayed as that soak (faults/SEEDS: `seed broker
    minutes  # what it found`): once fixed, it must pass for good."""
    failed = 0
    for line in SEEDS.read_text().splitlines():
        fields = line.partition("#")[0].split()
        if not fields:
            continue
        seed, broker, minutes = fields
        command = ["--soak", minutes, "--seed", seed, "--broker", broker]
        print(f"regression: python -m faults {' '.join(command)}", flush=True)
        failed += main(command) != 0
    return 1 if failed else 0


def _ok(row: dict[str, Any]) -> bool:
    return bool(row["skipped"]) or not any(
        row.get(k) for k in ("lost", "stuck", "duplicate_effects", "corrupt", "injector_failed")
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The report: one line a scenario, the faults and the reasons spelled out after it."""
    head = " ".join(name.rjust(width) for name, width in COLUMNS) + "  faults; reasons"
    lines = [head, "-" * len(head)]
    for row in rows:
        if row["skipped"]:
            lines.append(f"{row['scenario']:>14} {row['broker']:>8}  skipped: {row['skipped']}")
            continue
        values = (
            *(row["scenario"], row["broker"], row["runs"], row["steps"], row["executions"]),
            *(row["duplicate_executions"], row["lost"], row["stuck"], row["duplicate_effects"]),
            *(row["corrupt"], row["max_s_to_terminal"], row["resent"]),
        )
        cells = " ".join(str(v).rjust(width) for v, (_, width) in zip(values, COLUMNS, strict=True))
        faults = " ".join(f"{k}={v}" for k, v in sorted(row["faults"].items())) or "-"
        reasons = " ".join(f"{k}={v}" for k, v in sorted(row["reasons"].items())) or "-"
        notes = "".join(f"; {note}" for note in row.get("notes", []))
        lines.append(f"{cells}  {faults}; {reasons}{notes}")
    return "\n".join(lines)


def _leg(args: argparse.Namespace, seed: int) -> int:
    """One broker's scenarios, in this process (Django is set up for its services)."""
    kind = args.leg
    workdir = Path(tempfile.mkdtemp(prefix=f"stepworks-faults-{kind}-"))
    database = Database(
        os.environ.get("DATABASE_URL", ""), f"stepworks_faults_{kind}_{os.getpid()}"
    )
    prefix = f"swf-{kind}-{os.getpid()}"
    broker = Broker(kind, prefix, workdir)
    rows: list[dict[str, Any]] = []
    try:
        try:
            database.create()
        except Exception as error:
            print(f"{kind}: the fault suite needs PostgreSQL ({database.admin_url}): {error}")
            return 2
        broker.start()
        env = _environment(database, broker, workdir)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        os.environ.update(env)
        import django

        django.setup()
        logging.getLogger("pika").setLevel(logging.WARNING)  # a line per connection
        from faults import scenarios

        size = scenarios.Size.named(args.size)
        if args.soak:
            size = scenarios.Size(
                runs=max(4, int(args.soak * 60 / 8)), storm_s=args.soak * 60, lo=0.5, hi=3.0
            )
            chosen = [scenarios.MIX]
        elif args.scenario:
            chosen = [scenarios.BY_NAME[name] for name in args.scenario]
        elif args.ci:
            chosen = [scenarios.BY_NAME[name] for name in scenarios.CI_SUBSET]
        else:
            chosen = scenarios.SCENARIOS
        for scenario in chosen:
            print(f"{kind}: {scenario.name}: {scenario.what} ...", flush=True)
            row = scenarios.play(
                scenario,
                broker=broker,
                database=database,
                env=env,
                workdir=workdir,
                size=size,
                seed=seed,
            )
            rows.append(row.__dict__)
            print(table([row.__dict__]).splitlines()[-1], flush=True)
            if args.json:  # as it goes: a crash later keeps the rows so far
                args.json.write_text(json.dumps(rows))
    finally:
        broker.close()
        failed = any(not _ok(r) for r in rows)
        if args.keep or failed:
            print(f"{kind}: logs kept in {workdir}; database {database.name}")
            database.proxy.close()
        else:
            _drop(database)
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(not _ok(r) for r in rows) else 0


def _drop(database: Database) -> None:
    from django.db import connections

    connections.close_all()
    for _ in range(3):
        try:
            database.drop()
            return
        except Exception:
            time.sleep(1)


def _environment(database: Database, broker: Broker, workdir: Path) -> dict[str, str]:
    """The settings the suite and its workers share (workers' DATABASE_URL: the proxy's)."""
    markers = workdir / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    (workdir / "artifacts").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database.url,
        "BROKER_URL": broker.url,
        "STEPWORKS_QUEUE_PREFIX": broker.prefix,
        "SECRET_KEY": "stepworks-fault-suite",
        "STEPWORKS_ARTIFACTS_BACKEND": "filesystem",
        "STEPWORKS_ARTIFACTS_ROOT": str(workdir / "artifacts"),
        "STEPWORKS_DATA_DIR": str(workdir / "data"),
        "STEPWORKS_STEP_WRITE_DIRS": str(markers),
        # A 3 s lease, as in the fault report that filed issue 14.
        "STEPWORKS_LEASE_S": "3",
        "STEPWORKS_HEARTBEAT_S": "1",
        "STEPWORKS_REAPER_S": "1",
        "STEPWORKS_DRAIN_S": "5",
    }


if __name__ == "__main__":
    sys.exit(main())
