"""The fault suite's small-N subset, on every submission (CI's PostgreSQL leg): real
`rundramatiq` groups killed, drained and cut off from PostgreSQL, on Redis and RabbitMQ
where each is reachable. `make faults` runs every scenario at full size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from faults.scenarios import CI_SUBSET

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not settings.BROKER_URL, reason="needs BROKER_URL (the broker leg)"),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="the fault suite makes a database of its own on PostgreSQL",
    ),
]


def _server_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/"


def test_the_fault_subset_loses_nothing_leaves_nothing_stuck_and_duplicates_no_effect(
    tmp_path: Path,
) -> None:
    rows_file = tmp_path / "rows.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "faults", "--ci", "--size", "quick", "--broker", "both"),
            *("--seed", "14", "--json", str(rows_file)),
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": _server_url() + "postgres"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    rows = json.loads(rows_file.read_text())
    ran = [row for row in rows if not row["skipped"]]
    assert {row["scenario"] for row in ran} == set(CI_SUBSET), done.stdout[-3000:]
    for row in ran:
        where = f"{row['scenario']} on {row['broker']}: {row['problems']}"
        broken = [row[key] for key in ("lost", "stuck", "duplicate_effects", "corrupt")]
        assert broken == [0, 0, 0, 0], where
        assert row["runs"] >= 4 and row["executions"] >= row["steps"], where
    injected = {row["scenario"]: sum(row["faults"].values()) for row in ran}
    # The storms always strike; the fault points may by chance not fire in a small run.
    assert all(injected[name] for name in ("sigkill", "db_outage", "deploy")), injected
