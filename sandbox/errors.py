"""Binance-style API errors: an HTTP status, a negative code and the exact message."""

from __future__ import annotations


class ApiError(Exception):
    """An error the sandbox answers as Binance would: ``{"code": -1121, "msg": "..."}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}
