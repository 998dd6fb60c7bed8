"""An exchange's API error: an HTTP status, the exchange's code and its exact message.

Each dialect (``sandbox/dialects/``) renders it in its exchange's wire format: Binance's
``{"code": -1121, "msg": ...}``, OKX's ``{"code": "50011", "msg": ..., "data": []}``,
Kraken's HTTP 200 with ``{"error": ["EAPI:Rate limit exceeded"]}``, and so on.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the sandbox answers as the exchange would (see the module docstring)."""

    def __init__(
        self, status: int, code: int | str, msg: str, headers: dict[str, str] | None = None
    ):
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}
