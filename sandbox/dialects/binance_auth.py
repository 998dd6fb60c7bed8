"""Binance's signed-request checks: API key, timestamp within recvWindow, HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac

from sandbox.errors import ApiError


def unsigned_payload(total: str) -> tuple[str, str | None]:
    """Split ``query + body`` into the signed payload and the signature sent with it."""
    parts = [p for p in total.split("&") if p]
    signature = next((p.split("=", 1)[1] for p in parts if p.startswith("signature=")), None)
    return "&".join(p for p in parts if not p.startswith("signature=")), signature


def check_signed(
    api_key: str | None,
    secrets: dict[str, str],
    total_params: str,
    params: dict[str, str],
    server_ms: int,
) -> str:
    """Return the account (API key) of a valid signed request; raise ApiError otherwise."""
    if not api_key:
        raise ApiError(401, -2014, "API-key format invalid.")
    secret = secrets.get(api_key)
    if secret is None:
        raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    try:
        timestamp = int(params["timestamp"])
        recv_window = int(params.get("recvWindow", "5000"))
    except (KeyError, ValueError):
        raise ApiError(
            400,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        ) from None
    if recv_window > 60000:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    if timestamp > server_ms + 1000:
        raise ApiError(
            400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if server_ms - timestamp > recv_window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    payload, signature = unsigned_payload(total_params)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if signature is None or not hmac.compare_digest(expected, signature.lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    return api_key
