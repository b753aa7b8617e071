"""manage.py create_token USER [--name NAME] [--days N]: the token alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workspaces.errors import DomainError
from workspaces.management import rejected, user_named
from workspaces.tokens import DEFAULT_DAYS, token_create


class Command(BaseCommand):
    help = "Make an API token for a user and print it (it is not stored: copy it now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token acts as")
        parser.add_argument("--name", default="command line", help="what the token is for")
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            help=f"days until it expires (default {DEFAULT_DAYS}; 0: never)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_named(options["username"])
        try:
            token, key = token_create(user, options["name"], options["days"])
        except DomainError as exc:
            raise rejected(exc) from exc
        expires = token.expiry.date().isoformat() if token.expiry else "never"
        self.stderr.write(f"token {token.name!r} for {user.get_username()}, expires {expires}")
        self.stdout.write(key)
