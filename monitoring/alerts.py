"""Alerts from the seed's thresholds, evaluated fleet-wide from counters kept in Redis.

Rules: ``error_rate`` (failed exchange calls / all calls in the window), ``response_time``
(mean exchange call latency, milliseconds), ``queue_size`` (waiting tasks in any queue),
``breaker_open`` (any circuit breaker open) and ``ban_received`` (any 418 in the window). An
alert fires once, is sent again every ``repeat_interval`` while it lasts, and resolves;
notifications go to the log, the Redis stream ``alerts:stream`` and an optional webhook
(a JSON POST, Slack/Telegram style). State lives in Redis, so any process may evaluate.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from core.config import AlertsConfig
from core.keys import KeySpace
from core.redact import redact, redact_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """What the fleet looked like over the last window."""

    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    bans: int = 0
    queue_sizes: Mapping[str, int] = field(default_factory=dict)
    open_breakers: tuple[str, ...] = ()

    @property
    def error_rate(self) -> float:
        """Return failed calls over all calls (0 with no calls)."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def response_time_ms(self) -> float:
        """Return the mean call latency in milliseconds (0 with no calls)."""
        return self.latency_ms_sum / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Notification:
    """One message about one alert: firing, repeat or resolved."""

    alert: str
    status: str
    value: float
    threshold: float
    detail: str
    at: float


def firing_rules(reading: Reading, config: AlertsConfig) -> dict[str, tuple[float, float, str]]:
    """Return the rules that fire now: name -> (value, threshold, detail)."""
    t = config.thresholds
    fired: dict[str, tuple[float, float, str]] = {}
    if reading.requests and reading.error_rate > t.error_rate:
        fired["error_rate"] = (
            reading.error_rate,
            t.error_rate,
            f"{reading.errors} of {reading.requests} exchange calls failed",
        )
    if reading.requests and reading.response_time_ms > t.response_time:
        fired["response_time"] = (reading.response_time_ms, t.response_time, "mean latency (ms)")
    biggest = max(reading.queue_sizes.items(), key=lambda kv: kv[1], default=("", 0))
    if biggest[1] > t.queue_size:
        fired["queue_size"] = (float(biggest[1]), float(t.queue_size), f"queue {biggest[0]}")
    if reading.open_breakers:
        fired["breaker_open"] = (
            float(len(reading.open_breakers)),
            0.0,
            ", ".join(reading.open_breakers),
        )
    if reading.bans:
        fired["ban_received"] = (float(reading.bans), 0.0, "418 answers: the IP is banned")
    return fired


class AlertEngine:
    """Turn readings into notifications and send them, with state in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace,
        config: AlertsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.keys, self.config, self.clock = client, keys, config, clock
        self.state_key, self.stream_key = keys.alert_state(), keys.alert_stream()

    def evaluate(self, reading: Reading) -> list[Notification]:
        """Return (and send) the notifications this reading causes."""
        now = self.clock()
        fired = firing_rules(reading, self.config)
        state = {
            k.decode(): json.loads(v)
            for k, v in cast(dict[bytes, bytes], self.client.hgetall(self.state_key)).items()
        }
        notes: list[Notification] = []
        for name, (value, threshold, detail) in fired.items():
            previous = state.get(name)
            if previous is None:
                notes.append(Notification(name, "firing", value, threshold, detail, now))
            elif now - previous["sent"] >= self.config.repeat_interval:
                notes.append(Notification(name, "repeat", value, threshold, detail, now))
            else:
                continue
            since = previous["since"] if previous else now
            self.client.hset(self.state_key, name, json.dumps({"since": since, "sent": now}))
        for name in set(state) - set(fired):
            notes.append(Notification(name, "resolved", 0.0, 0.0, "back under the threshold", now))
            self.client.hdel(self.state_key, name)
        for note in notes:
            self.send(note)
        return notes

    def active(self) -> dict[str, Any]:
        """Return the alerts that are firing now, with when they started."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.state_key))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def send(self, note: Notification) -> None:
        """Send a notification to the log, the Redis stream and the webhook."""
        # details name breakers, queues and errors: nothing of that leaves with a secret
        text = redact(
            f"ALERT {note.alert} {note.status}: {note.detail} "
            f"(value {note.value:g}, threshold {note.threshold:g})"
        )
        note_fields = redact_data(asdict(note))
        (log.info if note.status == "resolved" else log.warning)(text)
        fields = {k: str(v) for k, v in note_fields.items()}
        self.client.xadd(self.stream_key, fields, maxlen=10_000, approximate=True)  # type: ignore[arg-type]
        if self.config.webhook_url is not None:
            body = json.dumps({"text": text, **note_fields}).encode()
            request = urllib.request.Request(  # noqa: S310 - the operator's configured URL
                self.config.webhook_url.get_secret_value(),
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                    pass
            except OSError as exc:  # urllib's errors may quote the URL: the webhook's token
                log.warning("alert webhook failed: %s", redact(str(exc)))
