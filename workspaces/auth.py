"""The API's token authentication: knox's, plus when each token was last used.

Its own module (not workspaces.tokens) because DRF imports it while the settings load.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication

from workspaces.models import ApiToken

# A token's last use is written at most this often: not one UPDATE per API call.
LAST_USED_EVERY = timedelta(minutes=1)


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's authentication, recording when each token was last used."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, ApiToken]:
        user, auth_token = super().authenticate_credentials(token)
        now = timezone.now()
        if auth_token.last_used is None or now - auth_token.last_used > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=auth_token.pk).update(last_used=now)
            auth_token.last_used = now
        return user, auth_token
