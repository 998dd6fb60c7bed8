"""Run reports: every input, both cases, the decision, the rung that answered, the order.

Written per (exchange, symbol) as JSON and as a readable Markdown page under
``reports.dir/<run_id>/``, and kept in Redis for ``reports.keep_days``. When a rung below
the LLM answered, the page shows the stage's ``fallback_reason`` (why the LLM did not)
under its heading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.redact import redact_data, secrets_of
from tasks import stages
from tasks.context import Runtime


def build(rt: Runtime, run_id: str, exchange: str, symbol: str) -> dict[str, Any]:
    """Assemble the report of one symbol from its stage outputs."""
    snapshot = stages.load(rt, run_id, exchange, symbol, "snapshot")
    return {
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
    if plan["action"] != "hold":
        lines += [
            f"Size {plan['size']:.8f} at {plan['entry']:.8g}, stop {plan['stop_loss']:.8g}, "
            f"take profit {plan['take_profit']:.8g}, horizon {plan['horizon']}.",
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
    lines += ["## News", ""]
    for item in report["news"] or []:
        flag = " (SUSPICIOUS: ignored)" if item["suspicious"] else ""
        lines.append(f"- {item['published']} {item['title']} [{item['sentiment']:+.2f}]{flag}")
    if not report["news"]:
        lines.append("- none in the lookback window")
    return "\n".join(lines) + "\n"


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
