"""A small raster canvas that writes PNG files: lines, filled columns, a 5x7 bitmap font.

Why not Pillow or matplotlib: the report needs a few polylines, one filled area and a line
of text, which this draws in about 150 lines of the standard library (``zlib`` and
``struct``); a plotting library would add tens of megabytes of dependency, and its font
rendering changes between versions, while these bytes depend on nothing but the figures:
the same run writes the same PNG on every machine (the report's files are compared byte
for byte).

The PNG is 8-bit truecolour (RGB), not interlaced, every scanline with filter 0.
"""

from __future__ import annotations

import itertools
import struct
import zlib

RGB = tuple[int, int, int]

#: The glyphs, 5 columns by 7 rows ("#" is ink). Upper case is drawn as lower case.
_FONT_ROWS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "a": "..... ..... .###. ....# .#### #...# .####",
    "b": "#.... #.... #.##. ##..# #...# #...# ####.",
    "c": "..... ..... .###. #.... #.... #...# .###.",
    "d": "....# ....# .##.# #..## #...# #...# .####",
    "e": "..... ..... .###. #...# ##### #.... .###.",
    "f": "..##. .#..# .#... ###.. .#... .#... .#...",
    "g": "..... .#### #...# #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...#",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
    "j": "...#. ..... ..##. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "m": "..... ..... ##.#. #.#.# #.#.# #...# #...#",
    "n": "..... ..... #.##. ##..# #...# #...# #...#",
    "o": "..... ..... .###. #...# #...# #...# .###.",
    "p": "..... ..... ####. #...# ####. #.... #....",
    "q": "..... ..... .#### #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #....",
    "s": "..... ..... .###. #.... .###. ....# ####.",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##.",
    "u": "..... ..... #...# #...# #...# #..## .##.#",
    "v": "..... ..... #...# #...# #...# .#.#. ..#..",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#.",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...#",
    "y": "..... ..... #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... #####",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
}
FONT = {ch: rows.split() for ch, rows in _FONT_ROWS.items()}
GLYPH_W, GLYPH_H = 5, 7


class Canvas:
    """An RGB raster of ``width`` by ``height`` pixels; (0, 0) is the top left."""

    def __init__(self, width: int, height: int, background: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, colour: RGB) -> None:
        """Paint one pixel (outside the canvas: nothing)."""
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(colour)

    def line(
        self, a: tuple[float, float], b: tuple[float, float], colour: RGB, wide: int = 1
    ) -> None:
        """Draw a straight line from ``a`` to ``b`` (Bresenham), ``wide`` pixels thick downwards."""
        x0, y0, x1, y1 = round(a[0]), round(a[1]), round(b[0]), round(b[1])
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for w in range(wide):
                self.dot(x0, y0 + w, colour)
            if x0 == x1 and y0 == y1:
                return
            twice = 2 * err
            if twice >= dy:
                err += dy
                x0 += sx
            if twice <= dx:
                err += dx
                y0 += sy

    def polyline(self, points: list[tuple[float, float]], colour: RGB, wide: int = 1) -> None:
        """Draw the segments joining ``points`` in order."""
        for a, b in itertools.pairwise(points):
            self.line(a, b, colour, wide)

    def column(self, x: int, top: float, bottom: float, colour: RGB) -> None:
        """Fill column ``x`` from row ``top`` to row ``bottom`` (inclusive, either order)."""
        low, high = sorted((round(top), round(bottom)))
        for y in range(low, high + 1):
            self.dot(x, y, colour)

    def text(self, x: int, y: int, words: str, colour: RGB, scale: int = 2) -> None:
        """Write ``words`` with the top left of the first glyph at (x, y); unknown glyphs blank."""
        for i, char in enumerate(words.lower()):
            rows = FONT.get(char)
            if rows is None:
                continue
            left = x + i * (GLYPH_W + 1) * scale
            for r, row in enumerate(rows):
                for c, ink in enumerate(row):
                    if ink == "#":
                        for dy in range(scale):
                            for dx in range(scale):
                                self.dot(left + c * scale + dx, y + r * scale + dy, colour)

    def png(self) -> bytes:
        """Return the canvas as PNG file bytes."""
        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )


def text_width(words: str, scale: int = 2) -> int:
    """Return the width in pixels :meth:`Canvas.text` gives ``words``."""
    return len(words) * (GLYPH_W + 1) * scale


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
