"""Run reports: every input, both cases, the decision, the rung that answered, the order.

Written per (exchange, symbol) as JSON and as a readable Markdown page under
``reports.dir/<run_id>/``, and kept in Redis for ``reports.keep_days``. When a rung below
the LLM answered, the page shows the stage's ``fallback_reason`` (why the LLM did not)
under its heading. The LLM usage the server reported (``llm/usage.py``: calls, prompt and
completion tokens, time, cost when ``llm.price_per_1k_tokens`` is set) is shown per agent
stage, for the symbol and for the whole run up to the report. The symbol's position in the
ledger before and after the execution (``resilience/ledger.py``) is shown under the order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.redact import redact_data, secrets_of
from llm.usage import RedisUsage, Usage
from tasks import stages
from tasks.context import Runtime


def build(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Assemble the report of one symbol from its stage outputs."""
    snapshot = stages.load(rt, run_id, exchange, symbol, "snapshot")
    report = {
        "run_id": run_id,
        "exchange": exchange,
        "symbol": symbol,
        "taken_at": snapshot["taken_at"],
        "market": {
            "last": snapshot["last"],
            "bid": snapshot["bid"],
            "ask": snapshot["ask"],
            "timeframes": {tf: len(c) for tf, c in snapshot["candles"].items()},
        },
        "news": stages.load(rt, run_id, exchange, symbol, "news"),
        "long": stages.load(rt, run_id, exchange, symbol, "long"),
        "short": stages.load(rt, run_id, exchange, symbol, "short"),
        "plan": stages.load(rt, run_id, exchange, symbol, "plan"),
        "execution": stages.load(rt, run_id, exchange, symbol, "execution"),
        "llm_usage": llm_usage(rt, run_id, exchange, symbol),
    }
    try:
        sentiment = stages.load(rt, run_id, exchange, symbol, "sentiment")
    except LookupError:  # a news stage of a fleet older than the sentiment record
        sentiment = {"rung": "lexicon", "reason": None}
    report["rungs"] = rungs(report, sentiment)
    return report


def rungs(report: dict[str, Any], sentiment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, per agent stage, the rung that answered and why the LLM did not (or None)."""
    found = {"news": {"rung": sentiment["rung"], "reason": sentiment.get("reason")}}
    for stage, key in (("long", "long"), ("short", "short"), ("strategy", "plan")):
        output = report[key]
        found[stage] = {"rung": output["rung"], "reason": output.get("fallback_reason")}
    return found


def llm_usage(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Return the LLM usage of one symbol's stages, their total and the run's so far."""
    store = RedisUsage(rt.redis_client(), rt.keyspace())
    per_stage = store.stages(run_id, exchange, symbol)
    return {
        "stages": {stage: usage.as_dict() for stage, usage in per_stage.items()},
        "symbol": sum(per_stage.values(), Usage()).as_dict(),
        "run": store.run(run_id).as_dict(),
    }


def page(report: dict[str, Any]) -> str:
    """Return the report as a Markdown page a person reads."""
    plan, execution = report["plan"], report["execution"]
    lines = [
        f"# {report['symbol']} on {report['exchange']}, run {report['run_id']}",
        "",
        f"Trace: {report.get('trace_id') or 'tracing off'}",
        "",
        f"Market at {report['taken_at']}: last {report['market']['last']}, "
        f"bid {report['market']['bid']}, ask {report['market']['ask']}.",
        "",
        f"## Decision: {plan['action'].upper()} (answered by: {plan['rung']})",
        "",
        *_fallback(plan),
        plan["rationale"],
        "",
    ]
    lines += _target_lines(plan)
    if plan["action"] != "hold":
        lines += [
            f"Size {plan['size']:.8f} at {plan['entry']:.8g}, stop {_price(plan['stop_loss'])}, "
            f"take profit {_price(plan['take_profit'])}, horizon {plan['horizon']}.",
            "",
        ]
    risk = execution.get("risk", {})
    lines += [
        f"Risk guard: {'approved' if risk.get('approved') else 'not approved'} "
        f"({'; '.join(risk.get('reasons', []))}).",
        "",
    ]
    if "order" in execution:
        order = execution["order"]
        lines += [
            f"Order {order['clientOrderId']}: {order['status']}, filled {order['filled']} "
            f"at {order['average']} ({order['source']}).",
            "",
        ]
    lines += _position_lines(execution.get("position"))
    for side in ("long", "short"):
        case = report[side]
        lines += [
            f"## The {side} case: confidence {case['confidence']:.2f} ({case['rung']})",
            "",
            *_fallback(case),
            case["thesis"],
            "",
        ]
        lines += [f"- {e['name']} = {e['value']:.6g}: {e['meaning']}" for e in case["evidence"]]
        lines.append("")
    lines += _rung_lines(report.get("rungs"))
    lines += _usage_lines(report.get("llm_usage"))
    lines += ["## News", ""]
    for item in report["news"] or []:
        flag = " (SUSPICIOUS: ignored)" if item["suspicious"] else ""
        lines.append(f"- {item['published']} {item['title']} [{item['sentiment']:+.2f}]{flag}")
    if not report["news"]:
        lines.append("- none in the lookback window")
    return "\n".join(lines) + "\n"


#: How the page names the stages that call the LLM, in run order.
STAGE_NAMES = {"news": "news", "long": "long case", "short": "short case", "strategy": "strategy"}


def _price(value: float | None) -> str:
    return "none" if value is None else f"{value:.8g}"


def _target_lines(plan: dict[str, Any]) -> list[str]:
    """Return the line saying which position the plan saw and what it targets."""
    if plan.get("target") is None:  # a plan decided before decisions saw the position
        return []
    held = plan.get("position")
    seen = f"{held['side']} {held['amount']:.8g} at {held['entry']:.8g}" if held else "none"
    return [f"Position seen: {seen}; signal {plan.get('signal')}; target {plan['target']}.", ""]


def _position_lines(position: dict[str, Any] | None) -> list[str]:
    """Return the page's lines of the symbol's position before and after the execution."""
    if position is None:  # a report written before the ledger existed
        return []
    return [
        f"Position before: {_position_text(position.get('before'))}.",
        f"Position after: {_position_text(position.get('after'))}.",
        "",
    ]


def _position_text(held: dict[str, Any] | None) -> str:
    if not held:
        return "none"
    return (
        f"{held['side']} {held['amount']:.8g} at {held['entry']:.8g} (fees {held['fees']:.6g}, "
        f"realised {held['realized_pnl']:.6g}, opened {held['opened_at']} by run {held['run_id']})"
    )


def _usage_lines(usage: dict[str, Any] | None) -> list[str]:
    """Return the page's LLM usage section: a row per stage, the symbol's and the run's."""
    if usage is None:  # a report written before usage was recorded
        return []
    lines = ["## LLM usage", ""]
    if not usage["stages"]:
        return [*lines, "No LLM calls for this symbol.", ""]
    lines += [
        "| stage | calls | failed | prompt tokens | completion tokens | seconds | cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [s for s in STAGE_NAMES if s in usage["stages"]]
    order += sorted(set(usage["stages"]) - set(order))
    for stage in order:
        lines.append(_usage_row(STAGE_NAMES.get(stage, stage), usage["stages"][stage]))
    lines += [_usage_row("**this symbol**", usage["symbol"]), ""]
    unmetered = usage["symbol"]["unmetered"]
    if unmetered:
        lines += [f"{unmetered} calls reported no usage; their tokens are not counted.", ""]
    run = usage["run"]
    lines += [
        f"The whole run so far: {run['calls']} calls, {run['prompt_tokens']:,} prompt + "
        f"{run['completion_tokens']:,} completion tokens{_cost_text(run['cost'])}.",
        "",
    ]
    return lines


def _rung_lines(found: dict[str, Any] | None) -> list[str]:
    """Return the page's table of which rung answered each agent, and why not the LLM."""
    if not found:  # a report written before rungs were recorded
        return []
    lines = ["## Who answered", "", "| agent | rung | why not the LLM |", "| --- | --- | --- |"]
    for stage, answered in found.items():
        why = (answered.get("reason") or "-").replace("|", "\\|")
        lines.append(f"| {STAGE_NAMES.get(stage, stage)} | {answered['rung']} | {why} |")
    return [*lines, ""]


def _usage_row(name: str, usage: dict[str, Any]) -> str:
    cost = "-" if usage["cost"] is None else f"{usage['cost']:.6g}"
    return (
        f"| {name} | {usage['calls']} | {usage['failed']} | {usage['prompt_tokens']:,} | "
        f"{usage['completion_tokens']:,} | {usage['seconds']:.2f} | {cost} |"
    )


def _cost_text(cost: float | None) -> str:
    return "" if cost is None else f", cost {cost:.6g}"


def _fallback(stage: dict[str, Any]) -> list[str]:
    """Return the lines saying why the LLM did not answer a stage (none when it did)."""
    reason = stage.get("fallback_reason")  # absent from reports written before it existed
    return [f"The LLM did not answer: {reason}", ""] if reason else []


def write(rt: Runtime, report: dict[str, Any]) -> Path:
    """Write the JSON and the page; keep the JSON in Redis; return the JSON file's path."""
    config = rt.config()
    # stage outputs carry error texts (LLM fallback reasons, exchange errors): mask secrets
    report = redact_data(report, secrets_of(config))
    folder = Path(config.reports.dir) / str(report["run_id"])
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{report['exchange']}_{str(report['symbol']).replace('/', '')}"
    path: Path = folder / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (folder / f"{stem}.md").write_text(page(report))
    key = rt.keyspace().stage(report["run_id"], report["exchange"], report["symbol"], "report")
    rt.redis_client().set(
        key, json.dumps(report, default=str), ex=int(config.reports.keep_days * 86400)
    )
    return path
