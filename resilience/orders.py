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
   client order id before anything is sent). A bare order (no client order id) sent from a
   task is named by its delivery (``resilience/delivery.py``: task id and place in the task),
   so a redelivered message finds it instead of placing it again. An entry whose delivery
   is **cancelled** (its task's time limit, ``run_async``'s timeout) leaves the claim
   *abandoned*: a later delivery of it (the broker restored the message) never sends it.
   Cancelled before it was sent: refused. Cancelled while its request was at the exchange:
   looked up once the request's time is over, found or refused, never resent. Exits are not
   abandoned (the next watch tick must be able to close the position);
3. the symbol's lease serialises orders of one symbol on one account; a plan whose data was
   taken before the symbol's last order is refused (it does not know that order);
4. the risk guard (``agents/risk.py``) on fresh reads: kill switch, price deviation, open
   orders, daily loss, notional, position. A bare order that breaks a limit is refused; a
   plan from the execution stage (``resize=True``) is cut to the limits;
5. **paper** against an exchange that is not a sandbox: a simulated fill at the book's
   touch, nothing sent; **sandbox** and **live**: the order is looked up by client order
   id, then sent; an unknown outcome is reconciled by client order id before any resend;
6. every fill the gate learns (the order's answer, a paper fill, an order found or
   reconciled by client order id) is applied to the position ledger
   (``resilience/ledger.py``) once, before the symbol's lease is released; in paper mode
   the ledger is the paper wallet, which refuses a fill it cannot pay;
7. every decision is appended to the ``orders:audit`` stream.

Cancels skip the kill switch and the risk guard (they only reduce risk) but not paper
mode. So do **exits** (``exit_reason``: ``resilience/exits.py`` closing a position) and
**protective orders** (:meth:`OrderGate.protect`: an exchange-native stop/take-profit of a
position): they are reduce-only, never more than the ledger's position, and paper mode still
simulates an exit. Before a sell is sent, the position's exchange protection is cancelled
(its legs lock the amount the sell needs); the fleet watch protects what is left.
Raw REST writes (``"POST /api/v3/order"``) are refused except cancels: the gate
cannot read an exchange-specific order body; send ``create_order`` instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from agents import risk as risk_lib
from agents.orders import client_order_id
from agents.types import TradePlan
from core.errors import (
    CryptoAIError,
    GiveUpError,
    OrderRefusedError,
    OutcomeUnknownError,
    RetryableError,
)
from core.events import emit
from exchanges.endpoints import Endpoint
from resilience.account import read_risk_state
from resilience.delivery import next_order_key
from resilience.leases import Lease, wait_while_held
from resilience.ledger import Ledger, PlanRef, fill_from_order
from resilience.order_request import GateAnswer, Mode, OrderRequest, order_mode, summary
from resilience.paper import simulated_fill

if TYPE_CHECKING:
    from exchanges.request import Request
    from resilience.client import ResilientAPIClient

__all__ = ["GateAnswer", "OrderGate", "OrderRequest", "PlanRef", "order_mode", "summary"]

log = logging.getLogger(__name__)

#: How long a settled claim answers redeliveries without asking the exchange.
SETTLED_SECONDS = 7 * 86400
#: A claim's record once its holder is done: ``settled`` (an answer) or ``abandoned``.
FINAL_STATES = ("settled", "abandoned")


@dataclasses.dataclass
class _Progress:
    """How far one delivery of an order got: whether its request left for the exchange."""

    sent_at: float | None = None


AUDIT_LENGTH = 100_000


class OrderGate:
    """Check, claim, send (or simulate) and record every order write."""

    def __init__(self, client: ResilientAPIClient) -> None:
        self.client = client
        self.clients, self.keys = client.clients, client.keys
        #: The position ledger every fill of this gate is applied to.
        self.ledger = Ledger(client.clients, client.keys)
        # the holder renews its leases before every exchange call, so a lease only has to
        # outlive one request: a dead holder's lease lapses soon after its last request ended
        self.send_seconds = client.gateway.timeout_ms / 1000
        self.lease_seconds = self.send_seconds + 2.0
        self.wait_seconds = self.lease_seconds * 4

    async def submit(
        self, request: OrderRequest, plan: PlanRef | None = None, *, exit_reason: str | None = None
    ) -> GateAnswer:
        """Pass one write through the gate; refusals come back as ``approved=False``.

        ``plan`` is what a position this order opens records (run, stop, take-profit,
        horizon); without it, the run id is read from an ``execution:<run>`` origin.
        ``exit_reason``: the order closes the position (a sell, cut to the position held;
        no kill switch, no entry limits; refused when nothing is held).
        """
        mode = order_mode(self.client, request.exchange)
        endpoint = Endpoint.parse(request.endpoint)
        try:
            if endpoint.rest:
                answer = await self._raw(request, mode)
            elif endpoint.cancel:
                answer = await self._cancel(request, mode)
            else:
                answer = await self._create(request, mode, plan, exit_reason)
        except OrderRefusedError as refused:
            answer = GateAnswer(False, None, "refused", mode, refused.reasons)
            emit("risk.rejected", reason=refused.reasons[0].split(" ")[0])
        except CryptoAIError as error:  # the exchange refused it, or its outcome is unknown
            reason = f"{type(error).__name__}: {error}"
            await self._audit(request, GateAnswer(False, None, "failed", mode, [reason]))
            raise
        await self._audit(request, answer)
        return answer

    def _request(self, request: OrderRequest, params: dict[str, Any]) -> Request:
        """Return the exchange request of a write, with one request's time to answer.

        A second more than ccxt's own timeout, so ccxt's timeout (an unknown outcome, looked
        up by client order id) comes first.
        """
        return self.client.request(
            request.exchange, request.endpoint, params, self.send_seconds + 1.0
        )

    async def _raw(self, request: OrderRequest, mode: Mode) -> GateAnswer:
        if not Endpoint.parse(request.endpoint).cancel:
            raise OrderRefusedError(
                f"raw REST order write {request.endpoint!r} refused: the gate cannot check an "
                "exchange-specific body; send create_order, edit_order or cancel_order"
            )
        return await self._cancel(request, mode)

    async def _cancel(self, request: OrderRequest, mode: Mode) -> GateAnswer:
        if mode == "paper":  # paper orders never rest on a real exchange: nothing to cancel
            order = {"id": request.params.get("id"), "status": "canceled", "simulated": True}
            return GateAnswer(True, order, "paper", mode)
        data, source = await self.client.writes.send(self._request(request, dict(request.params)))
        return GateAnswer(True, data, source, mode)

    async def _create(
        self,
        request: OrderRequest,
        mode: Mode,
        plan: PlanRef | None = None,
        exit_reason: str | None = None,
    ) -> GateAnswer:
        now = datetime.now(UTC)
        if request.valid_until is not None and now > request.valid_until:
            raise OrderRefusedError(
                f"plan expired at {request.valid_until.isoformat()} (its data is from "
                f"{request.decided_at.isoformat() if request.decided_at else 'earlier'}); "
                "nothing is sent on stale analysis"
            )
        cid, known_id = self._client_order_id(request)
        claim = Lease(
            self.clients,
            self.keys.order_claim(request.exchange, cid),
            self.lease_seconds,
            state="sending",
            symbol=request.symbol,
        )
        record = await self._claim(claim)
        if record is not None and record.get("state") == "abandoned":
            return await self._after_abandoned(request, mode, cid, record, plan)
        if record is not None:
            log.info("order %s was already placed by another delivery", claim.key)
            return GateAnswer(**{**record["answer"], "source": "found"})
        # Any other failure leaves the order's existence unknown: the claim stays until it
        # lapses, so the next delivery waits and then looks the order up before sending.
        progress = _Progress()
        try:
            answer = await self._under_symbol_lease(
                request,
                mode,
                cid,
                claim,
                lookup=known_id,
                plan=plan,
                exit_reason=exit_reason,
                progress=progress,
            )
        except GiveUpError:  # refused by the gate or by the exchange: nothing was placed
            await claim.release()
            raise
        except asyncio.CancelledError:  # the task timed out: this entry is never sent later
            if exit_reason is None:
                await asyncio.shield(self._abandon(request, mode, claim, progress))
            raise
        await claim.replace(SETTLED_SECONDS, state="settled", answer=dataclasses.asdict(answer))
        return answer

    def _client_order_id(self, request: OrderRequest) -> tuple[str, bool]:
        """Return the order's client order id and whether a redelivery computes the same.

        The caller's id; else, inside a task, one named by the delivery
        (``resilience/delivery.py``); else a random one.
        """
        if request.client_order_id is not None:
            return request.client_order_id, True
        rules = self.client.profile(request.exchange)
        key = next_order_key()
        if key is None:
            return rules.new_client_order_id(), False
        cid = client_order_id(
            f"delivery|{key}",
            request.exchange,
            request.symbol,
            str(request.side),
            rules.client_order_length,
        )
        return cid, True

    async def _claim(self, claim: Lease) -> dict[str, Any] | None:
        """Take the claim, or return the final record of whoever held it."""
        while not await claim.acquire():
            log.info("order claim %s is held by another delivery; waiting for it", claim.key)
            record = await wait_while_held(
                claim,
                lambda r: r.get("state") in FINAL_STATES,
                timeout=self.wait_seconds,
                sleep=self.client._sleep,
            )
            if record is not None:
                return record
        return None

    async def _abandon(
        self, request: OrderRequest, mode: Mode, claim: Lease, progress: _Progress
    ) -> None:
        """Mark a cancelled delivery's claim abandoned, and audit it."""
        sent = progress.sent_at is not None
        await claim.replace(SETTLED_SECONDS, state="abandoned", sent=sent, sent_at=progress.sent_at)
        where = "while its request was at the exchange" if sent else "before it was sent"
        reason = f"cancelled {where} (its task ran past its time limit)"
        log.warning("order %s %s", request.client_order_id, reason)
        await self._audit(request, GateAnswer(False, None, "cancelled", mode, [reason]))

    async def _after_abandoned(
        self,
        request: OrderRequest,
        mode: Mode,
        cid: str,
        record: dict[str, Any],
        plan: PlanRef | None,
    ) -> GateAnswer:
        """Answer a delivery of an order an earlier, cancelled delivery abandoned.

        Never sends: cancelled before sending, it is refused; cancelled in flight, it is
        looked up by client order id once that request's time is over (found: its fill is
        applied; not found: refused, and reconciliation reports it if it appears later).
        """
        if not record.get("sent"):
            raise OrderRefusedError(
                f"order {cid} was cancelled before it was sent by an earlier delivery (its "
                "task ran past its time limit); a cancelled order is never sent later"
            )
        over = float(record.get("sent_at") or 0.0) + self.send_seconds + 1.0
        await self.client._sleep(max(0.0, over - time.time()))
        symbol_lease = await self._symbol_lease(request, cid)
        try:
            found = await self.client.writes.find_order(
                self._request(request, {}), request.symbol, cid
            )
            if found is None:
                raise OrderRefusedError(
                    f"order {cid} was in flight when an earlier delivery was cancelled and is "
                    f"not on {request.exchange}; it is not sent again"
                )
            log.info("order %s of a cancelled delivery found on %s", cid, mode)
            answer = GateAnswer(True, recorded(found), "found", mode)
            return await self._apply_fill(request, answer, plan)
        finally:
            await asyncio.shield(symbol_lease.release())

    async def _under_symbol_lease(
        self,
        request: OrderRequest,
        mode: Mode,
        cid: str,
        claim: Lease,
        *,
        lookup: bool,
        plan: PlanRef | None = None,
        exit_reason: str | None = None,
        progress: _Progress | None = None,
    ) -> GateAnswer:
        symbol_lease = await self._symbol_lease(request, cid, claim)
        try:
            if not await claim.extend():
                raise RetryableError(f"lost the claim of {cid} while waiting for {request.symbol}")
            if lookup and mode != "paper":
                found = await self.client.writes.find_order(
                    self._request(request, {}), request.symbol, cid
                )
                if found is not None:
                    log.info("order %s already exists on %s; not placing it again", cid, mode)
                    answer = GateAnswer(True, recorded(found), "found", mode)
                    return await self._apply_fill(request, answer, plan)
            await self._refuse_if_overtaken(request)
            leases = (claim, symbol_lease)
            answer = await self._checked_send(
                request, mode, cid, leases, exit_reason, progress=progress
            )
            # under the symbol's lease: the next order of the symbol sees this fill
            return await self._apply_fill(request, answer, plan)
        finally:
            await asyncio.shield(symbol_lease.release())

    async def _symbol_lease(
        self, request: OrderRequest, cid: str, claim: Lease | None = None
    ) -> Lease:
        """Take the lease of the one order in flight for the request's symbol.

        While it waits, the order's ``claim`` is kept (renewed every third of its TTL), so
        no other delivery takes the order over meanwhile and a cancellation can abandon it.
        """
        symbol_lease = Lease(
            self.clients,
            self.keys.order_symbol(request.exchange, request.symbol),
            self.lease_seconds,
            client_order_id=cid,
        )
        renewed = time.monotonic()

        async def sleep(seconds: float) -> None:
            nonlocal renewed
            await self.client._sleep(seconds)
            if claim is not None and time.monotonic() - renewed > self.lease_seconds / 3:
                if not await claim.extend():
                    raise RetryableError(f"lost the claim of {cid} while waiting")
                renewed = time.monotonic()

        while not await symbol_lease.acquire():
            log.info("an order for %s is in flight; waiting for it", request.symbol)
            try:
                await wait_while_held(symbol_lease, lambda r: False, self.wait_seconds, sleep=sleep)
            except TimeoutError as exc:
                raise RetryableError(
                    f"another order for {request.symbol} on {request.exchange} is in flight"
                ) from exc
        return symbol_lease

    async def _refuse_if_overtaken(self, request: OrderRequest) -> None:
        if request.decided_at is None:
            return
        last_key = self.keys.order_last(request.exchange)
        raw = await self.clients.aio().hget(last_key, request.symbol)
        last = float(cast(bytes, raw)) if raw else 0.0
        if last > request.decided_at.timestamp():
            sent = datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds")
            raise OrderRefusedError(
                f"an order for {request.symbol} was sent at {sent}, after this plan's data "
                f"({request.decided_at.isoformat(timespec='seconds')}): the plan does not "
                "know it; the next run decides with it"
            )

    async def _checked_send(
        self,
        request: OrderRequest,
        mode: Mode,
        cid: str,
        leases: tuple[Lease, Lease],
        exit_reason: str | None = None,
        *,
        progress: _Progress | None = None,
    ) -> GateAnswer:
        client = self.client
        rules = client.profile(request.exchange)
        if request.side == "sell" and mode != "paper":
            # the protective legs lock what the sell needs (and count as open orders)
            await self._unprotect(request.exchange, request.symbol)
        state, ticker = await read_risk_state(
            client, self.ledger, request.exchange, request.symbol, mode
        )
        entry = request.price or request.reference or state.market_price
        if exit_reason is None:
            wanted, reasons = self._guarded(request, state, entry)
        else:
            wanted, reasons = await self._reduce_only(request, exit_reason)
        size = await client.writes.to_precision(
            self._request(request, {}), request.symbol, wanted, mode
        )
        if size <= 0:
            raise OrderRefusedError(f"size {wanted:g} rounds to 0 on {request.exchange}")
        if mode == "paper":
            order = simulated_fill(request, cid, size, ticker, client.config.trading.paper)
            return GateAnswer(True, order, "paper", mode, reasons, size)

        async def still_ours() -> None:
            # a lease that lapsed while we waited may be another delivery's now: send nothing
            if not all([await lease.extend() for lease in leases]):
                raise RetryableError(f"lost the claim of {cid} before sending; nothing was sent")

        await still_ours()
        if progress is not None:
            progress.sent_at = time.time()
        await self._mark_sent(request)
        params = request.ccxt_params(size, cid, rules.client_order_param)
        if rules.market_buy_price and request.type == "market" and request.side == "buy":
            params["price"] = entry  # its ccxt class spends amount * price of the quote
        sent = self._request(request, params)
        data, source = await client.writes.send(sent, still_ours)
        data = await client.writes.completed(sent, data)
        return GateAnswer(True, recorded(data), source, mode, reasons, size)

    def _guarded(
        self, request: OrderRequest, state: risk_lib.RiskState, entry: float
    ) -> tuple[float, list[str]]:
        """Return the size the risk guard allows and its reasons; raise if it refuses."""
        amount = float(request.amount or 0.0)
        intent = TradePlan(
            action=cast(Literal["buy", "sell"], request.side),
            symbol=request.symbol,
            size=amount,
            entry=entry,
        )
        decision = risk_lib.check(intent, self.client.config.trading.risk, state)
        cut = decision.size < amount * (1 - 1e-9)
        if not decision.approved or (cut and not request.resize):
            reasons = decision.reasons
            if decision.approved:  # a bare order is refused, never silently cut
                reasons = [
                    f"over a risk limit: {request.side} {amount:g} {request.symbol} at "
                    f"{entry:g} ({'; '.join(decision.reasons)})"
                ]
            raise OrderRefusedError("; ".join(reasons), reasons)
        return decision.size, decision.reasons

    async def _reduce_only(self, request: OrderRequest, reason: str) -> tuple[float, list[str]]:
        """Return an exit's size: at most the position held; raise when nothing is held."""
        position = await self.ledger.aposition(request.exchange, request.symbol)
        if request.side != "sell" or position is None or position.side != "long":
            raise OrderRefusedError(f"exit ({reason}): no long position of {request.symbol}")
        return min(float(request.amount or position.amount), position.amount), [f"exit: {reason}"]

    async def _unprotect(self, exchange: str, symbol: str) -> None:
        """Cancel the position's exchange protection before a sell (resilience/exits.py)."""
        from resilience.exits import cancel_protection

        position = await self.ledger.aposition(exchange, symbol)
        if position is not None and (position.protection or {}).get("kind") == "exchange":
            await cancel_protection(self.client, position)

    async def protect(
        self,
        request: OrderRequest,
        endpoint: str,
        params: dict[str, Any],
        find: Callable[[], Awaitable[dict[str, Any] | None]],
    ) -> GateAnswer:
        """Place an exchange-native protective order of a position (reduce-only).

        ``request`` names it (exchange, symbol, sell, amount, the list's client order id);
        ``endpoint``/``params`` are the exchange's own write (Binance: ``POST
        /api/v3/orderList/oco``); ``find`` looks it up by its client order id. Claimed like
        any order, so two workers place it once; refused above the position held; never
        sent in paper mode. No kill switch, no entry limits: it only reduces risk.
        """
        mode = order_mode(self.client, request.exchange)
        cid = str(request.client_order_id)
        if mode == "paper":
            answer = GateAnswer(True, {"clientOrderId": cid, "status": "simulated"}, "paper", mode)
            await self._audit(request, answer)
            return answer
        claim = Lease(
            self.clients, self.keys.order_claim(request.exchange, cid), self.lease_seconds
        )
        record = await self._claim(claim)
        if record is not None and record.get("state") == "settled":
            return GateAnswer(**{**record["answer"], "source": "found"})
        if record is not None:  # protective orders are never abandoned; not ours to answer
            raise OrderRefusedError(f"protective order {cid} has an abandoned claim")
        try:
            symbol_lease = await self._symbol_lease(request, cid)
            try:
                leases = (claim, symbol_lease)
                answer = await self._protective_send(request, endpoint, params, find, leases)
            finally:
                await asyncio.shield(symbol_lease.release())
        except OrderRefusedError as refused:
            await claim.release()
            answer = GateAnswer(False, None, "refused", mode, refused.reasons)
            await self._audit(request, answer)
            return answer
        except CryptoAIError as error:
            await claim.release()
            failed = GateAnswer(False, None, "failed", mode, [f"{type(error).__name__}: {error}"])
            await self._audit(request, failed)
            raise
        await claim.replace(SETTLED_SECONDS, state="settled", answer=dataclasses.asdict(answer))
        await self._audit(request, answer)
        return answer

    async def _protective_send(
        self,
        request: OrderRequest,
        endpoint: str,
        params: dict[str, Any],
        find: Callable[[], Awaitable[dict[str, Any] | None]],
        leases: tuple[Lease, Lease],
    ) -> GateAnswer:
        """Send a protective write once; an unknown outcome is looked up before any resend.

        ``find`` (the write's own lookup by its client order id: Binance's list client
        order id) runs before the first send and after every unknown outcome (a timeout, a
        reset, a lost answer); only when the exchange has nothing is the write sent again,
        at most the retry policy's attempts in all.
        """
        mode = order_mode(self.client, request.exchange)
        position = await self.ledger.aposition(request.exchange, request.symbol)
        amount = float(request.amount or 0.0)
        if position is None or position.side != "long" or amount > position.amount * (1 + 1e-9):
            held = position.amount if position else 0.0
            raise OrderRefusedError(
                f"protection of {request.symbol}: {amount:g} is more than the {held:g} held"
            )
        found = await find()
        if found is not None:
            return GateAnswer(True, found, "found", mode, ["protection"], amount)
        sent = self.client.request(request.exchange, endpoint, params, self.send_seconds + 1.0)
        writes = self.client.writes

        async def still_ours() -> None:
            # a lease that lapsed meanwhile may be another delivery's now: send nothing
            if not all([await lease.extend() for lease in leases]):
                raise RetryableError(f"lost the claim of {request.client_order_id}; not sent")

        for attempt in range(1, writes.retry.max_attempts + 1):
            await still_ours()
            try:
                data = await writes.send_once(sent)
                return GateAnswer(True, dict(data), "exchange", mode, ["protection"], amount)
            except OutcomeUnknownError as error:
                log.warning(
                    "%s %s: outcome unknown (%s); looking it up", request.exchange, endpoint, error
                )
                await still_ours()
                found = await find()
                if found is not None:
                    return GateAnswer(True, found, "reconciled", mode, ["protection"], amount)
                if attempt == writes.retry.max_attempts:
                    raise
                await self.client._sleep(writes.retry.backoff(attempt - 1))
        raise AssertionError("unreachable")

    async def _apply_fill(
        self, request: OrderRequest, answer: GateAnswer, plan: PlanRef | None
    ) -> GateAnswer:
        """Apply the answer's fill to the ledger (once per fill; see resilience/ledger.py)."""
        fill = fill_from_order(request.symbol, answer.order or {})
        if fill is None:  # nothing filled (yet): a later answer or reconciliation adds it
            return answer
        if plan is None and request.origin.startswith("execution:"):
            plan = PlanRef(run_id=request.origin.split(":", 1)[1])
        paper = self.client.config.trading.paper
        applied = await self.ledger.aapply_fill(
            request.exchange,
            request.symbol,
            fill,
            plan=plan,
            mode=answer.mode,
            wallet=dict(paper.starting_balances) if answer.mode == "paper" else None,
        )
        if applied.applied:
            opened = await self.ledger.apositions(request.exchange)
            marks = {request.symbol: fill.average}
            emit(
                "position",
                exchange=request.exchange,
                symbol=request.symbol,
                amount=applied.position.amount if applied.position else 0.0,
                unrealized=sum(p.unrealized(marks.get(p.symbol, p.entry)) for p in opened),
                realized_today=await self.ledger.arealized_today(request.exchange),
            )
        return answer

    async def _mark_sent(self, request: OrderRequest) -> None:
        last_key = self.keys.order_last(request.exchange)
        await self.clients.aio().hset(last_key, request.symbol, repr(time.time()))

    async def _audit(self, request: OrderRequest, answer: GateAnswer) -> None:
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
        await self.clients.aio().xadd(
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


def recorded(order: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of an order the fleet records: :func:`summary` and its fees."""
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    kept = [
        {"cost": f.get("cost"), "currency": f.get("currency")}
        for f in fees
        if isinstance(f, dict) and f.get("cost") is not None
    ]
    return {**summary(order), "fees": kept}
