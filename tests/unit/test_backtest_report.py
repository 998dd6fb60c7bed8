"""The report's pictures and page: report.png is a valid PNG of the stated size whose pixels
follow the curves, and report.html shows the windows and seeds and loads nothing."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.charts import DRAWDOWN_RGB, EQUITY_RGB, HOLD_RGB, PNG_SIZE
from backtest.charts import png as chart_png
from backtest.cli import app
from backtest.data import synthetic, write_csv
from backtest.replay import Result, Settings, replay
from backtest.report import FILES, write

SETTINGS = Settings(symbol="BTC/USDT")
Pixels = list[list[tuple[int, int, int]]]


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def decode(data: bytes) -> tuple[int, int, Pixels]:
    """Return (width, height, rows of RGB) of an 8-bit RGB PNG, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        at += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)  # 8-bit truecolour, not interlaced
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * 3
    assert len(raw) == height * (stride + 1)
    rows: list[bytearray] = []
    prior = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - 3] if i >= 3 else 0
            up, corner = prior[i], prior[i - 3] if i >= 3 else 0
            add = [0, left, up, (left + up) // 2, paeth(left, up, corner)][kind]
            line[i] = (line[i] + add) & 0xFF
        rows.append(line)
        prior = line
    pixels = [[(r[x], r[x + 1], r[x + 2]) for x in range(0, stride, 3)] for r in rows]
    return width, height, pixels


def columns_of(pixels: Pixels, colour: tuple[int, int, int]) -> dict[int, list[int]]:
    """Return, per x, the rows where ``colour`` is drawn."""
    found: dict[int, list[int]] = {}
    for y, row in enumerate(pixels):
        for x, rgb in enumerate(row):
            if rgb == colour:
                found.setdefault(x, []).append(y)
    return found


@pytest.fixture(scope="module")
def year() -> Result:
    # seed 3 rises about +350% over the year while the rules stay near their cash
    return replay(synthetic(2000, seed=3), SETTINGS)


def test_the_png_is_a_valid_png_of_the_stated_size(year: Result) -> None:
    width, height, pixels = decode(chart_png(year))
    assert (width, height) == PNG_SIZE
    assert len(pixels) == height and all(len(row) == width for row in pixels)


def test_the_png_draws_equity_above_or_below_buy_and_hold_where_they_are(year: Result) -> None:
    _, _, pixels = decode(chart_png(year))
    hold, equity = columns_of(pixels, HOLD_RGB), columns_of(pixels, EQUITY_RGB)
    assert hold and equity
    last = year.marks[-1]
    first_close = year.marks[0].close
    held = SETTINGS.cash * last.close / first_close
    assert held > last.equity  # the data: buy-and-hold ends far above the rules
    right = max(x for x in hold if x in equity)
    assert max(hold[right]) < min(equity[right])  # higher value: nearer the top
    assert columns_of(pixels, DRAWDOWN_RGB)  # the rules fell from a peak at some point


def test_two_different_runs_give_different_pictures(year: Result) -> None:
    other = replay(synthetic(2000, seed=4), SETTINGS)
    a, b = decode(chart_png(year))[2], decode(chart_png(other))[2]
    differ = sum(
        pa != pb for ra, rb in zip(a, b, strict=True) for pa, pb in zip(ra, rb, strict=True)
    )
    assert differ > 1000
    assert chart_png(year) == chart_png(replay(synthetic(2000, seed=3), SETTINGS))


def test_write_puts_the_png_beside_the_page(year: Result, tmp_path: Path) -> None:
    write(year, tmp_path)
    assert "report.png" in FILES
    assert decode((tmp_path / "report.png").read_bytes())[:2] == PNG_SIZE
    assert (tmp_path / "report.png").read_bytes() == chart_png(year)


def self_contained(text: str) -> None:
    """Fail when the page would load anything: no URL, no src/href, no script or style link."""
    bare = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?:|//[a-z]|\bsrc=|\bhref=|url\(|<script|<link|@import", bare, re.I)


def test_the_page_shows_the_windows_of_every_seed_and_loads_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["--synthetic", "300", "--symbol", "BTC/USDT", "--out", str(out)]
    done = CliRunner().invoke(app, [*args, "--walk-forward", "2", "--seeds", "2"])
    assert done.exit_code == 0, done.output
    text = (out / "report.html").read_text()
    self_contained(text)
    assert "<svg" in text
    for heading in ("Walk-forward windows", "Seeds", "Windows per seed"):
        assert f"<h2>{heading}</h2>" in text
    table = text.split("<h2>Windows per seed</h2>")[1].split("</table>")[0]
    # a header and one row per (seed, window), then the spread across the seeds per window
    assert table.count("<tr>") == 1 + 2 * 2 + 2
    assert "2024-01-01" in table


def test_a_plain_run_has_no_window_or_seed_tables(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    write_csv(synthetic(300, seed=1), data)
    out = tmp_path / "o"
    done = CliRunner().invoke(app, ["--data", str(data), "--symbol", "BTC/USDT", "--out", str(out)])
    assert done.exit_code == 0, done.output
    text = (out / "report.html").read_text()
    self_contained(text)
    assert "<svg" in text
    assert "Walk-forward" not in text and "Seeds" not in text
