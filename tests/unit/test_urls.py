"""Pointing ccxt's URLs at another host."""

from __future__ import annotations

from exchanges.urls import rebase_urls


def test_rebase_keeps_paths_and_replaces_hosts() -> None:
    api = {
        "public": "https://api.binance.com/api/v3",
        "sapi": "https://api.binance.com/sapi/v1",
        "nested": {"x": "https://fapi.binance.com/fapi/v1"},
        "n": 3,
    }
    assert rebase_urls(api, "http://127.0.0.1:8901/") == {
        "public": "http://127.0.0.1:8901/api/v3",
        "sapi": "http://127.0.0.1:8901/sapi/v1",
        "nested": {"x": "http://127.0.0.1:8901/fapi/v1"},
        "n": 3,
    }
