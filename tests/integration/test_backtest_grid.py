"""``crypto-ai backtest --fleet``: a grid of symbols x windows x seeds as ``backtest.cell``
tasks on real workers (on ``low``), gathered into one summary that matches the same grid
run in this process; a failed cell is named at once, a cell nobody takes at the timeout.
With ``--llm``, each cell asks its worker's own LLM behind the fleet's limiter and writes a
record of its own; a rerun replays every cell at no cost, on the fleet or in this process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from backtest.data import synthetic, write_csv
from backtest.history import store_path
from tests.integration.workers import worker_fleet
from tests.unit.test_backtest_report import self_contained

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "crypto-ai")
GOOD = {"BTC/USDT": 1, "ETH/USDT": 2}


def make_store(root: Path) -> Path:
    """Write two good symbols and one whose file has a bad row 4."""
    for symbol, seed in {**GOOD, "BAD/USDT": 3}.items():
        path = store_path(root, "binance", symbol, "1h")
        path.parent.mkdir(parents=True)
        write_csv(synthetic(360, seed=seed), path)
    bad = store_path(root, "binance", "BAD/USDT", "1h")
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",1,2,1,,1"
    bad.write_text("\n".join(lines) + "\n")
    return root


def figures(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "ran_on"} for c in cells]


def test_the_grid_on_the_fleet_matches_the_grid_here_and_names_its_failed_cells(
    redis_client: redis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    store = make_store(tmp_path / "store")
    args = [CLI, "backtest", "--store", str(store), "--exchange", "binance"]
    args += ["--symbols", "BTC/USDT,ETH/USDT,BAD/USDT", "--walk-forward", "2", "--seeds", "2"]
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:
        here = subprocess.run(
            [*args, "--out", str(tmp_path / "here")],
            env=fleet.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        # one worker on low only: a cell routed anywhere else would never end
        fleet.start("grid", queues="low", concurrency=2)
        there = subprocess.run(
            [*args, "--fleet", "--timeout", "120", "--out", str(tmp_path / "fleet")],
            env=fleet.env(), capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert here.returncode == 1, here.stderr
    assert there.returncode == 1, there.stderr
    a = json.loads((tmp_path / "here" / "summary.json").read_text())
    b = json.loads((tmp_path / "fleet" / "summary.json").read_text())
    assert a["grid"]["ran"] == "this process" and b["grid"]["ran"] == "the fleet"
    assert b["grid"]["cells"] == 12 and b["grid"]["failed"] == 4
    # the same figures, cell by cell, per symbol and across every cell
    assert figures(b["cells"]) == figures(a["cells"])
    assert b["symbols"] == a["symbols"] and b["spread"] == a["spread"]
    ran = [c["ran_on"] for c in b["cells"] if "error" not in c]
    assert len(ran) == 8 and all(r.startswith("grid@") and r.endswith("(queue low)") for r in ran)
    bad = [f"BAD/USDT window {k}/2 seed {s}" for s in (0, 1) for k in (1, 2)]
    assert [f["cell"] for f in b["failed"]] == bad
    for name in bad:
        assert f"{name}: failed: DataError: " in there.stderr
    assert "row 4, column close" in there.stderr
    assert "no result within" not in there.stderr  # reported when it failed, not waited out
    assert "[12/12]" in there.stderr  # progress: one line per cell as it ends
    self_contained((tmp_path / "fleet" / "report.html").read_text())


def test_cells_no_worker_takes_are_each_reported_at_the_timeout(
    redis_client: redis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    args = [CLI, "backtest", "--synthetic", "300", "--symbols", "BTC/USDT,ETH/USDT"]
    args += ["--seeds", "2", "--fleet", "--timeout", "2", "--out", str(tmp_path / "o")]
    with worker_fleet(redis_url, namespace, tmp_path) as fleet:  # no worker started
        done = subprocess.run(args, env=fleet.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    names = [f"{s} seed {k}" for s in ("BTC/USDT", "ETH/USDT") for k in (0, 1)]
    for name in names:
        assert f"{name}: no result within 2 s: still queued or running (revoked)" in done.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [f["cell"] for f in summary["failed"]] == names
    assert summary["symbols"]["BTC/USDT"]["spread"] is None


def cell_files(records: Path) -> dict[str, Path]:
    """Return the record file of each cell of the 2 x 2 x 2 LLM grid, by cell name."""
    return {
        f"{symbol} window {k}/2 seed {s}": records / f"{symbol.replace('/', '-')}_w{k}_s{s}.jsonl"
        for symbol in ("BTC/USDT", "ETH/USDT")
        for s in (0, 1)
        for k in (1, 2)
    }


def test_the_llm_grid_on_the_fleet_records_per_cell_then_replays_at_no_cost(
    redis_client: redis.Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from backtest.llm_record import Record
    from tests.integration.fake_openai import FakeOpenAI
    from tests.integration.test_backtest_llm import CASE, PLAN, config_file

    records = tmp_path / "records"
    args = [CLI, "backtest", "--synthetic", "100", "--symbols", "BTC/USDT,ETH/USDT"]
    args += ["--walk-forward", "2", "--seeds", "2", "--llm", "--llm-record", str(records)]
    limits = "  requests_per_minute: 100000\n  tokens_per_minute: 100000000\n"
    with FakeOpenAI(profile="vllm") as server:
        server.behaviour.by_schema = {"CaseAnswer": CASE, "PlanAnswer": PLAN}
        # the workers read the fake server's URL from the config the fleet starts with
        config = config_file(tmp_path, server.url, name="llm.yaml", more=limits)
        with worker_fleet(redis_url, namespace, tmp_path, config=config) as fleet:
            fleet.start("grid", queues="low", concurrency=2)

            def grid(out: str, *more: str) -> dict[str, Any]:
                done = subprocess.run(
                    [*args, *more, "--out", str(tmp_path / out)],
                    env=fleet.env(), capture_output=True, text=True, timeout=240,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                summary: dict[str, Any] = json.loads((tmp_path / out / "summary.json").read_text())
                return summary

            first = grid("first", "--fleet", "--timeout", "200")
            asked = len(server.behaviour.requests)
            pools = list(redis_client.scan_iter(match=f"{namespace}{{rl:llm}}:pool:*"))
            again = grid("again", "--fleet", "--timeout", "200")
            here = grid("here")  # this process, replaying the records the workers wrote
        assert len(server.behaviour.requests) == asked  # the reruns asked the server nothing
    assert asked > 0 and first["llm"]["requests"] == asked
    # each cell asked through its worker's own adapter, behind the fleet's LLM limiter
    assert pools
    assert all(c["ran_on"].startswith("grid@") for c in first["cells"])
    files = cell_files(records)
    assert sorted(records.iterdir()) == sorted(files.values())
    for cell in first["cells"]:
        entries = Record(files[cell["cell"]]).entries()
        assert entries and {e.sampling for e in entries} == {cell["seed"]}  # seed k: sampling k
        assert cell["llm"]["recorded"] == len(entries) and cell["llm"]["record"] == str(
            files[cell["cell"]]
        )
    assert sum(c["llm"]["requests"] for c in first["cells"]) == asked
    assert first["llm"]["recorded"] == first["llm"]["requests"]
    assert first["llm"]["tokens"] == sum(c["llm"]["tokens"] for c in first["cells"]) > 0
    # the rerun replays every cell from its record: the same decisions, at no cost
    assert again["llm"]["requests"] == 0 and again["llm"]["tokens"] == 0
    assert again["llm"]["replayed"] == first["llm"]["recorded"]
    assert again["llm"]["replayed_tokens"] == first["llm"]["tokens"]

    def unpriced(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "llm"} for c in figures(cells)]

    assert unpriced(again["cells"]) == unpriced(first["cells"])
    # this process replaying the same records gives the fleet's figures, cell by cell
    assert here["grid"]["ran"] == "this process"
    assert figures(here["cells"]) == figures(again["cells"])
    assert here["symbols"] == again["symbols"] and here["llm"] == again["llm"]
