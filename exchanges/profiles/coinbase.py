"""coinbase: the fleet's side of this exchange is being built (issue 15)."""

from __future__ import annotations

from exchanges.profiles import ExchangeProfile

PROFILE = ExchangeProfile(ccxt_id="coinbase", missing="no profile for coinbase yet")
