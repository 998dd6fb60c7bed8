"""The grid in this process: walk-forward windows per seed, cells that replay exactly what the
single run does, one gathered summary, and a failed cell named, never dropped; with --llm,
a record per cell, their usage added up, and a record directory that is not there named."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backtest.cli import app
from backtest.data import synthetic, write_csv
from backtest.grid import Cell, plan, run_cell
from backtest.history import store_path
from backtest.metrics import summary
from backtest.replay import Settings, replay, walk_forward

SETTINGS = Settings(symbol="BTC/USDT")


def run(args: list[str], out: Path, code: int = 0) -> dict[str, Any]:
    done = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert done.exit_code == code, done.output
    figures: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return figures


def shown(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "assumptions"}


def test_walk_forward_with_seeds_reports_every_seeds_windows(tmp_path: Path) -> None:
    args = ["--synthetic", "300", "--symbol", "BTC/USDT", "--walk-forward", "2", "--seeds", "3"]
    figures = run(args, tmp_path / "o")
    runs = figures["seeds"]["runs"]
    assert [len(r["windows"]) for r in runs] == [2, 2, 2]
    assert runs[0]["windows"] == figures["windows"]  # the top level is seed 0's
    assert runs[1]["windows"] != runs[0]["windows"]  # seed 1 is another walk
    for k, window in enumerate(figures["seeds"]["windows"]):
        returns = [r["windows"][k]["total_return"] for r in runs]
        assert window["window"] == k + 1
        assert window["spread"]["total_return"]["min"] == min(returns)
        assert window["spread"]["total_return"]["max"] == max(returns)
    # seed 2's windows are the walk-forward of walk 2, exactly
    alone = [shown(summary(r, [])) for r in walk_forward(synthetic(300, seed=2), SETTINGS, 2)]
    assert runs[2]["windows"] == alone
    assert runs[2]["windows_spread"]["total_return"]["max"] == max(w["total_return"] for w in alone)


def test_a_window_cell_replays_what_walk_forward_does(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    candles = synthetic(400, seed=7)
    write_csv(candles, data)
    cells = plan(["BTC/USDT"], files={"BTC/USDT": data}, windows=3, seeds=1, settings=SETTINGS)
    assert [c.name for c in cells] == [f"BTC/USDT window {k}/3 seed 0" for k in (1, 2, 3)]
    wanted = [shown(summary(r, [])) for r in walk_forward(candles, SETTINGS, 3)]
    got = [run_cell(c) for c in cells]
    assert [
        {k: v for k, v in g.items() if k not in ("cell", "window", "seed")} for g in got
    ] == wanted
    whole = plan(["BTC/USDT"], files={"BTC/USDT": data}, windows=0, seeds=1, settings=SETTINGS)
    assert whole[0].name == "BTC/USDT seed 0"
    assert (
        run_cell(whole[0])["total_return"] == summary(replay(candles, SETTINGS), [])["total_return"]
    )


def test_a_cell_is_small_json_and_comes_back_the_same(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    write_csv(synthetic(3000, seed=1), data)
    (cell,) = plan(["BTC/USDT"], files={"BTC/USDT": data}, windows=0, seeds=1, settings=SETTINGS)
    text = json.dumps(cell.to_json())
    assert len(text) < 1000  # the path and its digest travel, never the candles
    assert Cell.from_json(json.loads(text)) == cell


def test_a_file_changed_after_the_grid_was_planned_fails_its_cell_by_name(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    write_csv(synthetic(300, seed=1), data)
    (cell,) = plan(["BTC/USDT"], files={"BTC/USDT": data}, windows=0, seeds=1, settings=SETTINGS)
    write_csv(synthetic(300, seed=2), data)
    with pytest.raises(ValueError, match="differs from the file the grid was planned with"):
        run_cell(cell)


def store(tmp_path: Path, symbols: dict[str, int]) -> Path:
    root = tmp_path / "store"
    for symbol, seed in symbols.items():
        path = store_path(root, "binance", symbol, "1h")
        path.parent.mkdir(parents=True)
        write_csv(synthetic(300, seed=seed), path)
    return root


def test_the_grid_gathers_every_cell_per_symbol_and_across_seeds(tmp_path: Path) -> None:
    root = store(tmp_path, {"BTC/USDT": 1, "ETH/USDT": 2})
    args = ["--store", str(root), "--exchange", "binance", "--symbols", "BTC/USDT,ETH/USDT"]
    figures = run([*args, "--walk-forward", "2", "--seeds", "2"], tmp_path / "o")
    assert figures["grid"]["cells"] == 8 and figures["grid"]["ran"] == "this process"
    assert figures["failed"] == []
    names = [c["cell"] for c in figures["cells"]]
    assert names[:4] == [
        "BTC/USDT window 1/2 seed 0", "BTC/USDT window 2/2 seed 0",
        "BTC/USDT window 1/2 seed 1", "BTC/USDT window 2/2 seed 1",
    ]  # fmt: skip
    eth = [c for c in figures["cells"] if c["symbol"] == "ETH/USDT"]
    per = figures["symbols"]["ETH/USDT"]
    assert per["spread"]["total_return"]["max"] == max(c["total_return"] for c in eth)
    first = [c for c in eth if c["window"] == 1]
    assert per["windows"][0]["seeds_spread"]["total_return"]["mean"] == pytest.approx(
        sum(c["total_return"] for c in first) / len(first)
    )
    # a fixed file: every seed replays the same, and the summary says so
    assert per["windows"][0]["seeds_spread"]["total_return"]["std"] == 0
    assert "deterministic" in figures["grid"]["random"]
    # the same symbol alone, as a single run, gives the same figures
    single = run(["--store", str(root), "--exchange", "binance", "--symbol", "ETH/USDT",
                  "--walk-forward", "2"], tmp_path / "single")  # fmt: skip
    same = [{k: v for k, v in c.items() if k not in ("cell", "window", "seed", "ran_on")}
            for c in first + [c for c in eth if c["window"] == 2 and c["seed"] == 0]]  # fmt: skip
    assert same[0] == single["windows"][0] and same[-1] == single["windows"][1]
    with (tmp_path / "o" / "cells.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["cell"] for r in rows] == names
    assert "<h2>Cells</h2>" in (tmp_path / "o" / "report.html").read_text()


def test_a_failed_cell_is_named_and_the_rest_still_gathered(tmp_path: Path) -> None:
    root = store(tmp_path, {"BTC/USDT": 1, "ETH/USDT": 2})
    bad = store_path(root, "binance", "ETH/USDT", "1h")
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",1,2,1,,1"
    bad.write_text("\n".join(lines) + "\n")
    args = ["--store", str(root), "--exchange", "binance", "--symbols", "BTC/USDT,ETH/USDT"]
    done = CliRunner().invoke(app, [*args, "--seeds", "2", "--out", str(tmp_path / "o")])
    assert done.exit_code == 1, done.output
    assert "ETH/USDT seed 0: failed: DataError:" in done.output
    assert "row 4, column close" in done.output
    figures = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [f["cell"] for f in figures["failed"]] == ["ETH/USDT seed 0", "ETH/USDT seed 1"]
    assert figures["grid"]["failed"] == 2
    assert [c["cell"] for c in figures["cells"] if "error" not in c] == [
        "BTC/USDT seed 0", "BTC/USDT seed 1",
    ]  # fmt: skip
    assert figures["symbols"]["ETH/USDT"]["failed"] == 2


def test_an_llm_grid_keeps_a_record_per_cell_and_adds_up_their_usage(tmp_path: Path) -> None:
    from backtest.cli import make_app
    from backtest.llm_record import Record
    from tests.unit.test_backtest_llm import FakePort

    config = tmp_path / "llm.yaml"
    config.write_text("llm:\n  base_url: http://127.0.0.1:9/v1\n  model: m\n")
    ports: list[FakePort] = []

    def connect(llm: Any) -> FakePort:
        ports.append(FakePort())
        return ports[-1]

    args = ["--synthetic", "60", "--symbols", "BTC/USDT,ETH/USDT", "--walk-forward", "2"]
    args += ["--seeds", "2", "--llm", "--config", str(config)]
    app_ = make_app(None, connect)

    def grid(out: str) -> dict[str, Any]:
        done = CliRunner().invoke(app_, [*args, "--out", str(tmp_path / out)])
        assert done.exit_code == 0, done.output
        figures: dict[str, Any] = json.loads((tmp_path / out / "summary.json").read_text())
        return figures

    first = grid("o")
    records = tmp_path / "o" / "llm_records"  # the default: a directory in --out
    names = sorted(p.name for p in records.iterdir())
    assert names == sorted(
        f"{s}_w{k}_s{seed}.jsonl"
        for s in ("BTC-USDT", "ETH-USDT")
        for k in (1, 2)
        for seed in (0, 1)
    )
    for cell in first["cells"]:
        entries = Record(Path(cell["llm"]["record"])).entries()
        assert len(entries) == cell["llm"]["recorded"] > 0
        assert {e.sampling for e in entries} == {cell["seed"]}
    asked = sum(len(p.calls) for p in ports)
    assert first["llm"]["recorded"] == asked == sum(c["llm"]["recorded"] for c in first["cells"])
    assert first["llm"]["cells"] == 8 and first["llm"]["records"] == str(records.resolve())
    assert first["llm"]["fallbacks"] == sum(c["llm"]["fallbacks"] for c in first["cells"])
    assert "(one per cell)" in " ".join(first["assumptions"])
    # the same records replayed: no question asked, the same figures
    again = CliRunner().invoke(
        app_, [*args, "--llm-record", str(records), "--out", str(tmp_path / "a")]
    )
    assert again.exit_code == 0, again.output
    assert "llm: 0 requests, 0 answers recorded" in again.output
    assert sum(len(p.calls) for p in ports) == asked
    replayed = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert replayed["llm"]["replayed"] == asked
    strip = [{k: v for k, v in c.items() if k != "llm"} for c in first["cells"]]
    assert [{k: v for k, v in c.items() if k != "llm"} for c in replayed["cells"]] == strip


def test_an_llm_cell_whose_record_directory_is_not_here_fails_naming_it(tmp_path: Path) -> None:
    from backtest.grid import HERE, run_here
    from backtest.llm_record import RecordError

    config = tmp_path / "none.yaml"
    config.write_text("{}\n")
    records = tmp_path / "records"  # the command creates it; a worker on another host has none
    cells = plan(["BTC/USDT"], synthetic=60, windows=0, seeds=1, settings=SETTINGS,
                 llm_records=records, llm_config=config)  # fmt: skip
    with pytest.raises(RecordError, match="every worker needs the LLM record directory"):
        run_cell(cells[0])

    class Quiet:
        def done(self, *_: Any) -> None: ...
        def waiting(self, *_: Any) -> None: ...

    (outcome,) = run_here(cells, Quiet())
    assert outcome.ran_on == HERE and outcome.error is not None
    assert outcome.error.startswith(f"failed: RecordError: {records}: no such LLM record directory")
    records.mkdir()
    assert run_cell(cells[0])["llm"]["sampling"] == 0
    assert (records / "BTC-USDT_s0.jsonl").is_file()


def test_an_llm_grid_refuses_records_two_cells_would_share(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would share the LLM record"):
        plan(["BTC/USDT", "BTC-USDT"], synthetic=60, windows=0, seeds=1, settings=SETTINGS,
             llm_records=tmp_path)  # fmt: skip
    (tmp_path / "file").write_text("")
    args = ["--synthetic", "60", "--symbols", "BTC/USDT", "--llm-record", str(tmp_path / "file")]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert done.exit_code == 2 and "is a file, not a directory" in done.output
