"""Run the crypto_ai_trading fleet locally, and the seed's Python API.

``python main.py [--config FILE] [--once]`` is ``crypto-ai up``: embedded Redis if none is
configured, the sandboxes, a Celery worker per priority tier, beat and Flower, until Ctrl-C
(``--once``: one analysis cycle over the watchlist, then stop).

From Python (with the fleet's workers running)::

    from main import MultiExchangeTradingSystem

    system = MultiExchangeTradingSystem("config.yaml")
    await system.start()
    task_id = await system.submit_trading_request(
        exchange="binance", endpoint="/api/v3/ticker/price", params={"symbol": "BTCUSDT"},
        priority="high")
    price = await system.get_result(task_id, timeout=30)   # or raises the task's error
    status = await system.get_system_status()   # queue_stats, circuit_breakers, workers
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from workers.cli import app


class MultiExchangeTradingSystem:
    """The seed's entry point: submit exchange requests to the fleet and read its status."""

    def __init__(self, config_path: str | Path = "config.yaml") -> None:
        self.config_path = Path(config_path)
        self._started = False

    async def start(self) -> None:
        """Load the config and connect to the fleet's Redis (embedded if none is configured)."""
        from core.config_loader import load_config
        from workers import runtime

        runtime.configure(load_config(self.config_path))
        await asyncio.to_thread(runtime.redis_url)
        from workers.app import app as celery_app

        self.app = celery_app
        self._started = True

    async def submit_trading_request(
        self,
        exchange: str,
        endpoint: str,
        params: dict[str, Any] | None = None,
        priority: str = "high",
    ) -> str:
        """Queue one resilient exchange call on the priority's queue; return the task id."""
        from ratelimit.pools import Priority

        if not self._started:
            raise RuntimeError("call await system.start() first")
        queue = Priority.parse(priority).name.lower()
        result = self.app.send_task(
            "exchange.request", args=[exchange, endpoint, params or {}], queue=queue
        )
        return str(result.id)

    async def get_result(self, task_id: str, timeout: float | None = 30.0) -> Any:
        """Wait for a submitted task; return its result or raise the error it failed with.

        Raises ``celery.exceptions.TimeoutError`` when it has not finished in ``timeout``
        seconds (None: wait for ever); the task keeps running and can be waited for again.
        """
        from tasks.runs import release

        if not self._started:
            raise RuntimeError("call await system.start() first")
        result = self.app.AsyncResult(task_id)
        try:
            return await asyncio.to_thread(result.get, timeout=timeout, propagate=True)
        finally:
            release(result)

    async def get_system_status(self) -> dict[str, Any]:
        """Return queue depths, circuit breakers and workers, as ``crypto-ai status`` shows."""
        from core.redis_target import redact_url
        from workers import runtime
        from workers.status import fleet_status

        def gather() -> dict[str, Any]:
            client, keys, config = runtime.redis_client(), runtime.keyspace(), runtime.config()
            snapshot = fleet_status(self.app, client, keys, redact_url(runtime.redis_url()), config)
            return {
                "queue_stats": {"priority": snapshot.queues},
                "circuit_breakers": {"breakers": snapshot.breakers},
                "workers": snapshot.workers,
                "health": snapshot.health,
                "budgets": snapshot.budgets,
                "alerts": snapshot.alerts,
                "runs": snapshot.runs,
            }

        return await asyncio.to_thread(gather)


def main(argv: list[str] | None = None) -> None:
    """Start the fleet with the given options; exits with the fleet's exit code."""
    args = sys.argv[1:] if argv is None else argv
    app(["up", *args], prog_name="main.py")


if __name__ == "__main__":
    main()
