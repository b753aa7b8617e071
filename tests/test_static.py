"""The static files `make run` collects: every vendored asset present, no CDN, and the
manifest storage (DEBUG off) able to process them all."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.test import Client

from config.staticfiles import plotly_bundle

ROOT = Path(__file__).resolve().parent.parent


def _collect_for_production(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    call_command("collectstatic", "--noinput", verbosity=0)
    return json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]


def test_collectstatic_with_the_production_storage_succeeds(settings, tmp_path):
    manifest = _collect_for_production(settings, tmp_path)

    for asset in ("vendor/htmx.min.js", "vendor/dagre.min.js", "vendor/plotly.min.js"):
        assert asset in manifest


def test_plotly_comes_from_the_installed_package_not_from_git():
    copies = [path for path in (ROOT / "static").rglob("plotly*.min.js")]

    assert copies == []
    assert finders.find("vendor/plotly.min.js") == str(plotly_bundle())
    # Only the bundle: not the package's datasets nor its 4.8 MB widget bundle.
    assert finders.find("vendor/widgetbundle.js") is None
    assert finders.find("plotly.min.js") is None


def test_collected_plotly_is_the_package_bundle_served_by_hashed_name_for_a_year(
    settings, tmp_path, db
):
    manifest = _collect_for_production(settings, tmp_path)
    hashed = manifest["vendor/plotly.min.js"]
    collected = tmp_path / "static" / hashed

    assert hashed != "vendor/plotly.min.js"  # the content's hash is in the name
    assert collected.read_bytes() == plotly_bundle().read_bytes()
    url = staticfiles_storage.url("vendor/plotly.min.js")
    assert url == f"/static/{hashed}"
    response = Client().get(url)  # whitenoise reads STATIC_ROOT when the client starts
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
    assert "max-age=315360000" in response["Cache-Control"]


def test_no_page_or_script_loads_anything_from_the_internet():
    pattern = re.compile(r"""(src|href)\s*=\s*["']https?://""")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("templates", "static/js", "static/css")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and pattern.search(path.read_text(errors="replace"))
    ]
    assert offenders == []
