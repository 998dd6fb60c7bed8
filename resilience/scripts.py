"""The Lua scripts of the resilience package (``resilience/lua/*.lua``), read once."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def lua(name: str) -> str:
    """Return the text of ``resilience/lua/<name>``."""
    return resources.files("resilience").joinpath("lua", name).read_text(encoding="utf-8")
