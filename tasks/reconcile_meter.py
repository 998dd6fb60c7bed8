"""What one reconciliation run spends at the exchange, as the fleet's limiter prices it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from core import events

if TYPE_CHECKING:
    from resilience import ResilientAPIClient


class WeightMeter:
    """Sum what the limiter admitted for this run's requests, priced by the fleet's table.

    The limiter reports each admitted request (``limiter.admitted``: exchange and scope);
    requests made in this run's context (and the tasks it starts) are counted, priced with
    the parameters the run passed (``calling``), which decide e.g. Binance's open-orders
    weight (6 for one symbol, 80 for all).
    """

    def __init__(self, client: ResilientAPIClient, exchange: str) -> None:
        self.client, self.exchange = client, exchange
        self.weight, self.requests = 0.0, 0
        self.by_scope: dict[str, float] = {}
        self.params: dict[str, Any] = {}

    def admitted(self, exchange: str, scope: str) -> None:
        """Count one admitted request."""
        if exchange != self.exchange:
            return
        try:
            charges = self.client.limiter.charges(exchange, scope, self.params)
        except ValueError:
            return
        weight = charges[0].weight if charges else 0.0
        self.weight += weight
        self.requests += 1
        self.by_scope[scope] = self.by_scope.get(scope, 0.0) + weight

    @contextlib.contextmanager
    def calling(self, params: Mapping[str, Any]) -> Iterator[None]:
        """Price the requests made inside the block with ``params``."""
        before, self.params = self.params, dict(params)
        try:
            yield
        finally:
            self.params = before


_meter: ContextVar[WeightMeter | None] = ContextVar("crypto_ai_reconcile_meter", default=None)


def _listener(event: str, fields: Mapping[str, Any]) -> None:
    meter = _meter.get()
    if meter is not None and event == "limiter.admitted":
        meter.admitted(str(fields.get("exchange")), str(fields.get("scope")))


@contextlib.contextmanager
def metering(meter: WeightMeter) -> Iterator[WeightMeter]:
    """Count every request admitted inside the block (in this context) on ``meter``."""
    token = _meter.set(meter)
    events.subscribe(_listener)
    try:
        yield meter
    finally:
        _meter.reset(token)
