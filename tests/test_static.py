"""The static files `make run` collects: every vendored asset present, no CDN, and the
manifest storage (DEBUG off) able to process them all."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def test_collectstatic_with_the_production_storage_succeeds(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

    call_command("collectstatic", "--noinput", verbosity=0)

    manifest = (tmp_path / "static" / "staticfiles.json").read_text()
    for asset in ("vendor/htmx.min.js", "vendor/dagre.min.js", "vendor/plotly.min.js"):
        assert f'"{asset}"' in manifest


def test_no_page_or_script_loads_anything_from_the_internet():
    pattern = re.compile(r"""(src|href)\s*=\s*["']https?://""")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("templates", "static/js", "static/css")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and pattern.search(path.read_text(errors="replace"))
    ]
    assert offenders == []
