"""One logged-in Redfish client per BMC system: sushy's root over a `DeadlineConnector`,
authenticated with a session (`X-Auth-Token`) when the BMC offers one, Basic otherwise.

The client is what `REDFISH_SESSIONS` keeps between calls; `close()` logs the session out
(DELETE of the session resource), so a BMC's few session slots are not left taken.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sushy
from sushy import auth

from maas_lib.bmc.redfish_http import DeadlineConnector
from maas_lib.credentials import Credential
from maas_lib.errors import BmcError

log = logging.getLogger(__name__)


class SessionIfAdvertised(auth.SessionOrBasicAuth):  # type: ignore[misc]
    """A session where the service root advertises one (`Links.Sessions`, which the
    specification requires), Basic straight away where it does not: no failed login per
    connection, and no error logged for it, on services without sessions."""

    def _do_authenticate(self) -> None:
        links = self._root_resource.json.get("Links")
        if isinstance(links, dict) and isinstance(links.get("Sessions"), dict):
            super()._do_authenticate()
        else:
            self._fallback_to_basic_authentication()


class RedfishClient:
    """A sushy root logged in to one BMC; `conn` makes raw requests under the deadline."""

    def __init__(
        self,
        base_url: str,
        credential: Credential,
        *,
        verify: bool | str,
        timeout: float,
        connect_timeout: float,
        deadline: float,
    ) -> None:
        self.base_url = base_url
        self.conn = DeadlineConnector(
            base_url + "/redfish/v1/",
            verify=verify,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.conn.begin(deadline)
        self._closed = threading.Lock()
        # Session first (what BMCs with few slots expect, and the only way into some),
        # Basic when the BMC has no session service.
        self.root: Any = sushy.Sushy(
            base_url + "/redfish/v1/",
            auth=SessionIfAdvertised(credential.username, credential.password),
            connector=self.conn,
        )

    @property
    def session_uri(self) -> str | None:
        """The BMC's resource for our session, None when the BMC took Basic auth."""
        auth = getattr(self.root, "_auth", None)
        return auth.get_session_resource_id() if auth is not None else None

    def begin(self, seconds: float) -> None:
        self.conn.begin(seconds)

    def get_json(self, path: str) -> tuple[dict[str, Any], Any]:
        """A resource's JSON body (untrusted) and the response, for its headers."""
        response = self.conn.get(path)
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise BmcError(f"GET {path}: the BMC answered without a JSON object")
        return doc, response

    def abandon(self) -> None:
        """Forget the client without logging out (its BMC did not answer, or refused us):
        sushy would otherwise try the logout from whichever thread garbage-collects it."""
        if self._closed.acquire(blocking=False):
            self.root._auth = None
            self.conn.close()

    def close(self) -> None:
        """Log out (DELETE the session) within one request's timeouts; never raises."""
        if not self._closed.acquire(blocking=False):
            return
        auth, self.root._auth = getattr(self.root, "_auth", None), None
        try:
            self.conn.begin(self.conn.connect_timeout_s + self.conn.read_timeout)
            if auth is not None:
                auth.close()
        except Exception as exc:  # logging out is best effort: the BMC expires it anyway
            log.debug("could not log out of %s: %s", self.base_url, type(exc).__name__)
        finally:
            self.conn.close()
