"""Binance's spot order types: which take a price, which wait for a stop, and when one fires.

``STOP_LOSS`` / ``TAKE_PROFIT`` become a market order when the last trade price reaches
``stopPrice``; ``STOP_LOSS_LIMIT`` / ``TAKE_PROFIT_LIMIT`` become a limit order at ``price``.
A sell stop-loss fires at or below its stop, a sell take-profit at or above; buys mirror that
(Binance spot API docs, "New order (TRADE)"). ``LIMIT_MAKER`` is a limit order that is
rejected rather than take liquidity. Until it fires a stop order is ``NEW`` with
``isWorking`` false and is not on the book.
"""

from __future__ import annotations

from sandbox.errors import ApiError

STOP_KINDS = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
#: Kinds that carry a limit ``price`` once working (the rest execute at market).
PRICED_KINDS = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
KINDS = frozenset({"MARKET", "LIMIT", "LIMIT_MAKER"}) | STOP_KINDS
TIME_IN_FORCE = ("GTC", "IOC", "FOK")


def is_stop_loss(kind: str) -> bool:
    """Return True for STOP_LOSS and STOP_LOSS_LIMIT."""
    return kind.startswith("STOP_LOSS")


def trigger_bounds(kind: str, side: str, stop: float) -> tuple[float | None, float | None]:
    """Return (fire at or below, fire at or above) for a stop order; one of them is None."""
    falls = is_stop_loss(kind) == (side == "SELL")
    return (stop, None) if falls else (None, stop)


def would_trigger(kind: str, side: str, stop: float, last: float) -> bool:
    """Return True if a stop order would fire at once at the last trade price ``last``."""
    below, above = trigger_bounds(kind, side, stop)
    return (below is not None and last <= below) or (above is not None and last >= above)


def _not_required(name: str) -> ApiError:
    return ApiError(400, -1106, f"Parameter '{name}' sent when not required.")


def _mandatory(name: str) -> ApiError:
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def check_params(kind: str, params: dict[str, str]) -> str:
    """Check the params a kind needs and refuses, as Binance does; return the timeInForce."""
    if kind not in KINDS:
        raise ApiError(400, -1116, "Invalid orderType.")
    tif = params.get("timeInForce", "")
    if kind in STOP_KINDS and not params.get("stopPrice"):
        raise ApiError(
            400,
            -1102,
            "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!",
        )
    if kind not in STOP_KINDS and params.get("stopPrice"):
        raise _not_required("stopPrice")
    if kind in ("STOP_LOSS", "TAKE_PROFIT", "LIMIT_MAKER") and tif:
        raise _not_required("timeInForce")
    if kind in ("STOP_LOSS", "TAKE_PROFIT") and params.get("price"):
        raise _not_required("price")
    if kind in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and not tif:
        raise _mandatory("timeInForce")
    if kind == "LIMIT":
        tif = tif or "GTC"
    if kind == "LIMIT_MAKER":
        tif = "GTC"
    if kind in PRICED_KINDS and tif not in TIME_IN_FORCE:
        raise ApiError(400, -1115, "Invalid timeInForce.")
    return tif
