"""The API's token authentication: knox's, plus when each token was last used.

Its own module (not workspaces.tokens) because DRF imports it while the settings load.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.signals import token_expired

from workspaces.models import ApiToken

# A token's last use is written at most this often: not one UPDATE per API call.
LAST_USED_EVERY = timedelta(minutes=1)


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's authentication, recording when each token was last used, in one query a call.

    knox also reads all of the user's tokens on every call, to delete the expired ones; here
    that happens when the last use is written (at most once a minute a token), and an expired
    token presented is deleted as knox deletes it."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, ApiToken]:
        user, auth_token = super().authenticate_credentials(token)
        now = timezone.now()
        if auth_token.last_used is None or now - auth_token.last_used > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=auth_token.pk).update(last_used=now)
            auth_token.last_used = now
            ApiToken.objects.filter(user=user, expiry__lt=now).delete()
        return user, auth_token

    def _cleanup_token(self, auth_token: ApiToken) -> bool:
        """True (and the token deleted) when the token presented has expired."""
        if auth_token.expiry is None or auth_token.expiry >= timezone.now():
            return False
        username = auth_token.user.get_username()
        auth_token.delete()
        token_expired.send(sender=self.__class__, username=username, source="auth_token")
        return True
