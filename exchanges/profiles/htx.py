"""htx: the fleet's side of this exchange is being built (issue 15)."""

from __future__ import annotations

from exchanges.profiles import ExchangeProfile

PROFILE = ExchangeProfile(ccxt_id="htx", missing="no profile for htx yet")
