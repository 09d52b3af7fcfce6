"""Optional bearer-token authentication, for deployments without a gateway in front.

With a token set (``--auth-token`` or ``MLSCALE_AUTH_TOKEN``), ``/invocations``
and ``/version`` need ``Authorization: Bearer <token>``; anything else gets 401
with MLflow's error JSON and ``WWW-Authenticate: Bearer``, before its body is
read. ``/ping`` and ``/health`` stay open because Kubernetes probes send no
credentials, and ``/metrics`` stays open for Prometheus: it holds counts and
timings, never request data. Put the server behind a gateway, or keep its port
private, if those must be closed too.
"""

from __future__ import annotations

import hashlib
import hmac

from mlscale.protocol.errors import ServingError

# The endpoints a token guards: scoring, and the version that tells an attacker
# which MLflow to look up vulnerabilities for.
PROTECTED = frozenset({"invocations", "version", "infer", "v2_metadata"})


class Unauthenticated(ServingError):
    status = 401
    error_code = "UNAUTHENTICATED"

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b'Bearer realm="mlscale"')]


class BearerToken:
    def __init__(self, token: str) -> None:
        # Digests of equal length, so the comparison's time says nothing about
        # the token, not even its length.
        self._digest = hashlib.sha256(token.encode()).digest()

    def allows(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries the token."""
        if authorization is None:
            return False
        scheme, _, credentials = authorization.strip().partition(b" ")
        offered = hashlib.sha256(credentials.strip()).digest()
        # compare_digest even for a wrong scheme: every refusal takes the same path.
        matches = hmac.compare_digest(offered, self._digest)
        return scheme.lower() == b"bearer" and matches

    @staticmethod
    def refusal(authorization: bytes | None) -> Unauthenticated:
        if authorization is None:
            return Unauthenticated(
                "This server requires a bearer token: send the header 'Authorization: Bearer <token>'."
            )
        return Unauthenticated("The bearer token is missing or wrong.")
