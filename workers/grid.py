"""``crypto-ai backtest --fleet``: a grid's cells as ``backtest.cell`` tasks on the running fleet.

The composition root's half of a fleet grid: load the fleet's configuration, configure this
process's runtime (its Redis: the config's, ``$REDIS_URL``, or the embedded server) and bind
the shared tasks to the fleet's app; ``tasks.backtest.run_grid`` then sends the cells and
waits. ``workers/cli.py`` hands :func:`run_on_fleet` to ``backtest.cli.make_app``, since the
replay's package imports no Celery.

The LLM: on the fleet, an ``--llm`` cell asks its worker's own LLM (``workers/runtime.py``
``llm()``: the worker's config, behind the fleet's shared LLM limiter; ``tasks/backtest.py``
hands it in); in this process the command asks the one :func:`connect_llm` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backtest.grid import Cell, Outcome, Progress

if TYPE_CHECKING:
    from agents.llm import LLMPort
    from core.config import LLMConfig


def run_on_fleet(
    cells: Sequence[Cell], *, config: Path | None, timeout: float, progress: Progress
) -> list[Outcome]:
    """Return every cell's outcome from the fleet (:func:`tasks.backtest.run_grid`).

    Raises :class:`~core.errors.ConfigError` for a bad config file.
    """
    import workers.app  # noqa: F401 - binds the shared tasks to the fleet's app
    from core.config_loader import load_config
    from tasks.backtest import run_grid
    from workers import runtime

    runtime.configure(load_config(config))
    return run_grid(cells, timeout=timeout, progress=progress)


def connect_llm(config: LLMConfig) -> LLMPort:
    """Return the fleet's LLM adapter for ``crypto-ai backtest --llm``.

    Without the fleet's limiter (like ``crypto-ai llm check``): the replay opens no Redis
    connection, and does not share the running fleet's request or token budget.
    """
    from llm.openai_compatible import OpenAICompatibleLLM  # langchain only when used

    return OpenAICompatibleLLM(config)
