"""What a dialect is: one exchange's wire format and limit model over the shared sandbox.

The shared parts live in :class:`sandbox.server.Sandbox`: the price paths and the clock
(``sandbox/market.py``), the accounts and the matching engine (``sandbox/matching.py``,
which speaks neutral params: ``symbol`` as the path key such as ``BTCUSDT``, ``side``
``BUY``/``SELL``, ``type`` ``MARKET``/``LIMIT`` (or Binance's ``LIMIT_MAKER`` and stop kinds
with ``stopPrice``, ``sandbox/order_kinds.py``), ``quantity``, ``price``, ``quoteOrderQty``,
``newClientOrderId``; ``find``/``cancel`` by ``orderId`` or ``origClientOrderId``), the fault
injector, request counting and the admin endpoints.

A dialect adds its routes, reads its requests' params and account, enforces its exchange's
published limit model, and renders errors, faults and stats the way its exchange does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.config import SandboxFault
from sandbox.errors import ApiError

if TYPE_CHECKING:
    from sandbox.server import Sandbox


def json_response(data: Any, status: int = 200) -> web.Response:
    """Return ``data`` as a JSON response."""
    return web.json_response(data, status=status)


class Dialect:
    """One exchange's wire format; subclasses override what their exchange does."""

    #: The ccxt id this dialect speaks to.
    name = "base"

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add the exchange's endpoints to the app."""
        raise NotImplementedError

    def account_of(self, request: web.Request) -> str | None:
        """Return the API key a request names (signed or not), if any."""
        raise NotImplementedError

    def admit(self, request: web.Request, endpoint: str, ip: str) -> dict[str, str]:
        """Charge the request to the exchange's limits or raise its limit error.

        Returns the headers the exchange puts on the response (usage counts).
        """
        raise NotImplementedError

    def usage_headers(self, ip: str, account: str | None) -> dict[str, str]:
        """Return the usage headers for an error response."""
        return {}

    def error(self, exc: ApiError) -> web.Response:
        """Render an API error the way the exchange does."""
        return json_response({"code": exc.code, "msg": exc.msg}, exc.status)

    def fault(self, fault: SandboxFault, ip: str) -> ApiError:
        """Return the error a server fault (http_500, http_503, http_429, clock_skew) gives."""
        raise NotImplementedError

    def malformed(self) -> web.Response:
        """Return a truncated JSON body, as a broken gateway would send."""
        return web.Response(text='{"data": [{"last": "6', content_type="application/json")

    def client_stats(self) -> dict[str, dict[str, Any]]:
        """Return per-client counters (requests, limit answers) for ``/sandbox/stats``."""
        return {}

    def violations(self) -> int:
        """Return how many limit violations (429s, lockouts, bans) the sandbox answered."""
        return 0

    def reset_limits(self) -> None:
        """Forget every count, wait and ban."""


#: The request's params (query and form body merged) and its raw query + body, set by the
#: sandbox's middleware before any dialect code runs.
PARAMS = web.RequestKey("params", dict[str, str])
TOTAL = web.RequestKey("total_params", str)
