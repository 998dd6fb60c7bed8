"""``crypto-ai backtest`` as a user runs it: a synthetic year in, every report file out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from backtest.data import synthetic, write_csv
from backtest.report import FILES

CLI = str(Path(sys.executable).parent / "crypto-ai")


def test_a_year_of_hourly_candles_writes_every_report_file(tmp_path: Path) -> None:
    data = tmp_path / "year.csv"
    write_csv(synthetic(365 * 24, seed=5), data)
    out = tmp_path / "report"
    done = subprocess.run(
        [CLI, "backtest", "--data", str(data), "--symbol", "BTC/USDT", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"to {out}" in done.stdout
    assert "replayed 8760/8760 bars (100%)" in done.stderr
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] == 8760 and summary["trades"] > 0
    assert "<svg" in (out / "report.html").read_text()
    assert "http" not in (out / "report.html").read_text().replace("http://www.w3.org/2000/svg", "")


def test_a_bad_csv_gives_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("timestamp,open,high,low,close,volume\n0,1,2,1,1,1\n3600000,1,2,1,,1\n")
    done = subprocess.run(
        [CLI, "backtest", "--data", str(data), "--symbol", "BTC/USDT", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {data}: row 3, column close: '' is not a number"
    assert not (tmp_path / "o").exists()
