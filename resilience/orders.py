"""The order gate: the one mechanism every order, cancel and amendment of the fleet passes.

Every path that can move money reaches it: the execution stage, the ``exchange.request``
task (``MultiExchangeTradingSystem.submit_trading_request``), ``fleet.payload``
(``PriorityQueueManager``), and ``ResilientAPIClient.resilient_request`` from Python all
end in ``ResilientAPIClient._write``, which hands the request to :meth:`OrderGate.submit`.

For a create or an amendment, in this order:

1. a plan older than its ``valid_until`` is refused;
2. the client order id is **claimed** in Redis (``SET NX`` with a lease longer than the
   request can take). A second delivery that finds the claim waits for the first to finish
   (and answers with its outcome) or for the lease to lapse (then looks the order up by
   client order id before anything is sent);
3. the symbol's lease serialises orders of one symbol on one account; a plan whose data was
   taken before the symbol's last order is refused (it does not know that order);
4. the risk guard (``agents/risk.py``) on fresh reads: kill switch, price deviation, open
   orders, daily loss, notional, position. A bare order that breaks a limit is refused; a
   plan from the execution stage (``resize=True``) is cut to the limits;
5. **paper** against an exchange that is not a sandbox: a simulated fill at the book's
   touch, nothing sent; **sandbox** and **live**: the order is looked up by client order
   id, then sent; an unknown outcome is reconciled by client order id before any resend;
6. every decision is appended to the ``orders:audit`` stream.

Cancels skip the kill switch and the risk guard (they only reduce risk) but not paper
mode. Raw REST writes (``"POST /api/v3/order"``) are refused except cancels: the gate
cannot read an exchange-specific order body; send ``create_order`` instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from agents import risk as risk_lib
from agents.types import TradePlan
from core.errors import (
    CryptoAIError,
    GiveUpError,
    InvalidRequestError,
    OrderRefusedError,
    RetryableError,
)
from core.events import emit
from exchanges.gateway import is_cancel
from resilience.account import read_risk_state
from resilience.leases import Lease, wait_while_held

if TYPE_CHECKING:
    from resilience.client import ResilientAPIClient

log = logging.getLogger(__name__)

Mode = Literal["paper", "sandbox", "live"]
#: How long a settled claim answers redeliveries without asking the exchange.
SETTLED_SECONDS = 7 * 86400
AUDIT_LENGTH = 100_000


@dataclass(frozen=True)
class OrderRequest:
    """One order write as the gate reads it (built once from the caller's params)."""

    exchange: str
    endpoint: str
    symbol: str = ""
    side: str | None = None
    type: str | None = None
    amount: float | None = None
    price: float | None = None
    #: The price the order was decided at (a plan's entry): checked against the market.
    reference: float | None = None
    client_order_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = "api"
    decided_at: datetime | None = None
    valid_until: datetime | None = None
    resize: bool = False

    @classmethod
    def parse(cls, exchange: str, endpoint: str, params: dict[str, Any]) -> OrderRequest:
        """Read a ccxt-style write (``create_order`` params and friends); raise if unusable."""
        extra = dict(params.get("params") or {})
        cid = extra.get("clientOrderId") or extra.get("newClientOrderId")
        request = cls(
            exchange=exchange,
            endpoint=endpoint,
            symbol=str(params.get("symbol") or ""),
            side=params.get("side"),
            type=params.get("type"),
            amount=_number(params.get("amount"), "amount"),
            price=_number(params.get("price"), "price"),
            client_order_id=str(cid) if cid else None,
            params=dict(params),
        )
        if endpoint in ("create_order", "edit_order"):
            missing = [f for f in ("symbol", "side", "type", "amount") if not params.get(f)]
            if missing:
                raise InvalidRequestError(f"{endpoint} needs {', '.join(missing)}")
            if request.side not in ("buy", "sell"):
                raise InvalidRequestError(f"side must be buy or sell, got {request.side!r}")
        return request

    def ccxt_params(self, amount: float, cid: str) -> dict[str, Any]:
        """Return the ccxt call's params with the amount and client order id the gate chose."""
        extra = {**dict(self.params.get("params") or {}), "clientOrderId": cid}
        extra.pop("newClientOrderId", None)
        return {**self.params, "amount": amount, "params": extra}


@dataclass
class GateAnswer:
    """What the gate did: the order (or None), how it was served, and the guard's verdict."""

    approved: bool
    order: dict[str, Any] | None
    source: str
    mode: Mode
    reasons: list[str] = field(default_factory=list)
    size: float | None = None


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}") from None


def order_mode(client: ResilientAPIClient, exchange: str) -> Mode:
    """Return what an order on ``exchange`` does: simulated (paper), sandbox, or live."""
    settings = client.config.exchanges[exchange]
    if settings.sandboxed:
        return "sandbox"
    return "live" if client.config.trading.mode == "live" else "paper"


class OrderGate:
    """Check, claim, send (or simulate) and record every order write."""

    def __init__(self, client: ResilientAPIClient) -> None:
        self.client = client
        self.redis, self.keys = client.redis, client.keys
        # the holder renews its leases before every exchange call, so a lease only has to
        # outlive one request: a dead holder's lease lapses soon after its last request ended
        self.lease_seconds = client.gateway.timeout_ms / 1000 + 2.0
        self.wait_seconds = self.lease_seconds * 4

    async def submit(self, request: OrderRequest) -> GateAnswer:
        """Pass one write through the gate; refusals come back as ``approved=False``."""
        mode = order_mode(self.client, request.exchange)
        try:
            if "/" in request.endpoint:
                answer = await self._raw(request, mode)
            elif is_cancel(request.endpoint):
                answer = await self._cancel(request, mode)
            else:
                answer = await self._create(request, mode)
        except OrderRefusedError as refused:
            answer = GateAnswer(False, None, "refused", mode, refused.reasons)
            emit("risk.rejected", reason=refused.reasons[0].split(" ")[0])
        except CryptoAIError as error:  # the exchange refused it, or its outcome is unknown
            reason = f"{type(error).__name__}: {error}"
            self._audit(request, GateAnswer(False, None, "failed", mode, [reason]))
            raise
        self._audit(request, answer)
        return answer

    async def _raw(self, request: OrderRequest, mode: Mode) -> GateAnswer:
        if not is_cancel(request.endpoint):
            raise OrderRefusedError(
                f"raw REST order write {request.endpoint!r} refused: the gate cannot check an "
                "exchange-specific body; send create_order, edit_order or cancel_order"
            )
        return await self._cancel(request, mode)

    async def _cancel(self, request: OrderRequest, mode: Mode) -> GateAnswer:
        if mode == "paper":  # paper orders never rest on a real exchange: nothing to cancel
            order = {"id": request.params.get("id"), "status": "canceled", "simulated": True}
            return GateAnswer(True, order, "paper", mode)
        data, source = await self.client._send_write(
            request.exchange, request.endpoint, dict(request.params)
        )
        return GateAnswer(True, data, source, mode)

    async def _create(self, request: OrderRequest, mode: Mode) -> GateAnswer:
        now = datetime.now(UTC)
        if request.valid_until is not None and now > request.valid_until:
            raise OrderRefusedError(
                f"plan expired at {request.valid_until.isoformat()} (its data is from "
                f"{request.decided_at.isoformat() if request.decided_at else 'earlier'}); "
                "nothing is sent on stale analysis"
            )
        known_id = request.client_order_id is not None
        cid = request.client_order_id or f"cai-{uuid.uuid4().hex[:28]}"
        claim = Lease(
            self.redis,
            self.keys.order_claim(request.exchange, cid),
            self.lease_seconds,
            state="sending",
            symbol=request.symbol,
        )
        settled = await self._claim(claim)
        if settled is not None:
            return settled
        # Any other failure leaves the order's existence unknown: the claim stays until it
        # lapses, so the next delivery waits and then looks the order up before sending.
        try:
            answer = await self._under_symbol_lease(request, mode, cid, claim, lookup=known_id)
        except GiveUpError:  # refused by the gate or by the exchange: nothing was placed
            claim.release()
            raise
        claim.replace(SETTLED_SECONDS, state="settled", answer=dataclasses.asdict(answer))
        return answer

    async def _claim(self, claim: Lease) -> GateAnswer | None:
        """Take the claim, or return the settled outcome of whoever held it."""
        while not claim.acquire():
            log.info("order claim %s is held by another delivery; waiting for it", claim.key)
            record = await wait_while_held(
                claim,
                lambda r: r.get("state") == "settled",
                timeout=self.wait_seconds,
                sleep=self.client._sleep,
            )
            if record is not None:
                log.info("order %s was already placed by another delivery", claim.key)
                return GateAnswer(**{**record["answer"], "source": "found"})
        return None

    async def _under_symbol_lease(
        self, request: OrderRequest, mode: Mode, cid: str, claim: Lease, *, lookup: bool
    ) -> GateAnswer:
        symbol_lease = Lease(
            self.redis,
            self.keys.order_symbol(request.exchange, request.symbol),
            self.lease_seconds,
            client_order_id=cid,
        )
        while not symbol_lease.acquire():
            log.info("an order for %s is in flight; waiting for it", request.symbol)
            try:
                await wait_while_held(
                    symbol_lease, lambda r: False, self.wait_seconds, sleep=self.client._sleep
                )
            except TimeoutError as exc:
                raise RetryableError(
                    f"another order for {request.symbol} on {request.exchange} is in flight"
                ) from exc
        try:
            if not claim.extend():
                raise RetryableError(f"lost the claim of {cid} while waiting for {request.symbol}")
            if lookup and mode != "paper":
                found = await self.client._find_order(request.exchange, request.symbol, cid)
                if found is not None:
                    log.info("order %s already exists on %s; not placing it again", cid, mode)
                    return GateAnswer(True, summary(found), "found", mode)
            self._refuse_if_overtaken(request)
            return await self._checked_send(request, mode, cid, (claim, symbol_lease))
        finally:
            symbol_lease.release()

    def _refuse_if_overtaken(self, request: OrderRequest) -> None:
        if request.decided_at is None:
            return
        raw = self.redis.hget(self.keys.order_last(request.exchange), request.symbol)
        last = float(cast(bytes, raw)) if raw else 0.0
        if last > request.decided_at.timestamp():
            sent = datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds")
            raise OrderRefusedError(
                f"an order for {request.symbol} was sent at {sent}, after this plan's data "
                f"({request.decided_at.isoformat(timespec='seconds')}): the plan does not "
                "know it; the next run decides with it"
            )

    async def _checked_send(
        self, request: OrderRequest, mode: Mode, cid: str, leases: tuple[Lease, Lease]
    ) -> GateAnswer:
        client, amount = self.client, float(request.amount or 0.0)
        state, ticker = await read_risk_state(client, request.exchange, request.symbol, mode)
        entry = request.price or request.reference or state.market_price
        intent = TradePlan(
            action=cast(Literal["buy", "sell"], request.side),
            symbol=request.symbol,
            size=amount,
            entry=entry,
        )
        decision = risk_lib.check(intent, client.config.trading.risk, state)
        cut = decision.size < amount * (1 - 1e-9)
        if not decision.approved or (cut and not request.resize):
            reasons = decision.reasons
            if decision.approved:  # a bare order is refused, never silently cut
                reasons = [
                    f"over a risk limit: {request.side} {amount:g} {request.symbol} at "
                    f"{entry:g} ({'; '.join(decision.reasons)})"
                ]
            raise OrderRefusedError("; ".join(reasons), reasons)
        size = await client._to_precision(request.exchange, request.symbol, decision.size, mode)
        if size <= 0:
            raise OrderRefusedError(f"size {decision.size:g} rounds to 0 on {request.exchange}")
        if mode == "paper":
            order = _simulated(request, cid, size, ticker)
            return GateAnswer(True, order, "paper", mode, decision.reasons, size)

        def still_ours() -> None:
            # a lease that lapsed while we waited may be another delivery's now: send nothing
            if not all(lease.extend() for lease in leases):
                raise RetryableError(f"lost the claim of {cid} before sending; nothing was sent")

        still_ours()
        self._mark_sent(request)
        data, source = await client._send_write(
            request.exchange, request.endpoint, request.ccxt_params(size, cid), still_ours
        )
        return GateAnswer(True, summary(data), source, mode, decision.reasons, size)

    def _mark_sent(self, request: OrderRequest) -> None:
        self.redis.hset(self.keys.order_last(request.exchange), request.symbol, repr(time.time()))

    def _audit(self, request: OrderRequest, answer: GateAnswer) -> None:
        order = answer.order or {}
        entry = {
            "at": repr(time.time()),
            "exchange": request.exchange,
            "endpoint": request.endpoint,
            "symbol": request.symbol,
            "side": request.side or "",
            "amount": repr(request.amount) if request.amount is not None else "",
            "price": repr(request.price) if request.price is not None else "",
            "client_order_id": str(order.get("clientOrderId") or request.client_order_id or ""),
            "origin": request.origin,
            "mode": answer.mode,
            "outcome": answer.source,
            "status": str(order.get("status") or ""),
            "reasons": "; ".join(answer.reasons),
        }
        self.redis.xadd(
            self.keys.order_audit(),
            cast(Any, entry),
            maxlen=AUDIT_LENGTH,
            approximate=True,
        )
        emit(
            "order",
            exchange=request.exchange,
            outcome=entry["status"] if answer.approved else answer.source,
        )


def summary(order: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of an order the fleet records."""
    keys = ("id", "clientOrderId", "status", "side", "amount", "filled", "average", "cost")
    return {k: order.get(k) for k in keys}


def _simulated(
    request: OrderRequest, cid: str, size: float, ticker: dict[str, Any]
) -> dict[str, Any]:
    """Return a paper fill at the touch (the ask for a buy, the bid for a sell)."""
    touch = ticker.get("ask") if request.side == "buy" else ticker.get("bid")
    price = float(touch or ticker.get("last") or 0.0)
    if request.type == "limit" and request.price is not None:
        marketable = price <= request.price if request.side == "buy" else price >= request.price
        if not marketable:  # no paper book keeps resting orders yet: say so, fill nothing
            raise OrderRefusedError(
                f"paper mode: a {request.side} limit at {request.price:g} would rest (the touch "
                f"is {price:g}); paper mode fills marketable orders only"
            )
    return {
        "id": None,
        "clientOrderId": cid,
        "status": "simulated",
        "side": request.side,
        "amount": size,
        "filled": size,
        "average": price,
        "cost": size * price,
    }
