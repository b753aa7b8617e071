"""The deployment files users start from (issue 15): deploy/compose.yaml, its Dockerfile, and
the systemd units. Nothing here runs Docker or systemd; the files are parsed and held to the
project: every command names a management command (with options it takes), the WSGI
module or an infrastructure image; every variable set for Stepworks is one the settings
read and the README's configuration table lists; the pieces wire up (the migrations once
before the web and the workers, the bucket made, the services named in the URLs)."""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INFRASTRUCTURE = {"postgres", "redis", "minio/minio", "minio/mc"}
# Read by boto3 and django-storages themselves (the usual AWS way), listed in the table.
AWS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"}


def readme_variables() -> set[str]:
    """The variable names in the first column of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[1]))
    return names


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def ours(services: dict[str, Any]) -> dict[str, Any]:
    """The services that run the Stepworks image."""
    return {name: s for name, s in services.items() if "build" in s}


def check_command(argv: list[str]) -> None:
    """`argv` runs something the project has, with options it takes."""
    if argv[:2] == ["python", "manage.py"]:
        name = argv[2]
        app = get_commands().get(name)
        assert app is not None, f"no management command {name!r}"
        parser = load_command_class(app, name).create_parser("manage.py", name)
        parser.parse_args(argv[3:])  # SystemExit on an option it does not take
    elif Path(argv[0]).name == "gunicorn":
        from gunicorn.config import Config

        options = Config().parser().parse_args(argv[1:])
        module, _, attribute = options.args[0].partition(":")
        application = getattr(importlib.import_module(module), attribute or "application")
        assert callable(application), options.args
    else:
        pytest.fail(f"not a command of the project: {argv}")


def test_every_service_runs_a_command_of_the_project_or_an_infrastructure_image() -> None:
    services = compose()["services"]

    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
            check_command(service["command"])
        else:
            image = service["image"].rsplit(":", 1)[0]
            assert image in INFRASTRUCTURE, (name, image)
    assert {"postgres", "redis", "minio", "minio-bucket", "migrate", "web", "worker"} <= set(
        services
    )
    assert services["web"]["command"][:2] == ["gunicorn", "config.wsgi"]
    assert services["worker"]["command"][:3] == ["python", "manage.py", "rundramatiq"]
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]


def test_every_variable_set_for_stepworks_is_read_by_the_settings_and_in_the_readme() -> None:
    table = readme_variables()
    settings_source = (ROOT / "config" / "settings.py").read_text()
    example = DEPLOY / "systemd" / "stepworks.env.example"
    example_names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    for name, service in ours(compose()["services"]).items():
        variables = set(service["environment"])
        assert variables, name
        assert variables <= table, (name, sorted(variables - table))
        for variable in variables | example_names:
            assert variable in AWS or f'"{variable}"' in settings_source, variable
    assert example_names <= table, sorted(example_names - table)


def test_the_services_wire_up_the_migrations_once_the_bucket_and_the_addresses() -> None:
    document = compose()
    services = document["services"]
    environment = services["web"]["environment"]

    for name in ("web", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["minio-bucket"]["condition"] == "service_completed_successfully", name
        assert services[name]["environment"] == environment  # one environment for all
    assert services["migrate"]["restart"] == "no"  # run once
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    bucket = " ".join(services["minio-bucket"]["command"])
    assert f"mc mb --ignore-existing local/{environment['STEPWORKS_S3_BUCKET']}" in bucket
    for variable, service in (
        ("DATABASE_URL", "postgres"),
        ("BROKER_URL", "redis"),
        ("STEPWORKS_S3_ENDPOINT_URL", "minio"),
    ):
        assert urlsplit(environment[variable]).hostname == service, variable
    minio = services["minio"]["environment"]
    assert environment["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert environment["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert environment["STEPWORKS_ARTIFACTS_BACKEND"] == "s3"
    named = {
        volume.split(":", 1)[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if ":" in volume
    }
    assert named <= set(document["volumes"]), named
    assert "8000:8000" in services["web"]["ports"]


def test_the_image_runs_the_web_and_keeps_secrets_and_local_state_out() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()

    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    check_command(yaml.safe_load(cmd.group(1)))
    assert "SECRET_KEY=collectstatic-only" in dockerfile  # no key file baked in
    assert {".venv", "var", ".git"} <= set(ignored)


@pytest.mark.parametrize(
    ("unit", "runs"),
    [("stepworks-web.service", "gunicorn"), ("stepworks-worker.service", "rundramatiq")],
)
def test_the_systemd_units_restart_always_and_read_an_environment_file(
    unit: str, runs: str
) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read(DEPLOY / "systemd" / unit)

    service = parser["Service"]
    assert service["Restart"] == "always"
    assert service["EnvironmentFile"] == "/etc/stepworks/stepworks.env"
    argv = shlex.split(service["ExecStart"])
    assert runs in " ".join(argv)
    if argv[0].endswith("/python"):
        argv = ["python", *argv[1:]]
    check_command(argv)
    assert parser["Install"]["WantedBy"] == "multi-user.target"
