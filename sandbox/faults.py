"""Faults the sandbox injects on demand: per endpoint, by probability, a number of times."""

from __future__ import annotations

import random
from collections import Counter

from core.config import SandboxFault


class FaultInjector:
    """Pick the fault (if any) that hits a request to ``METHOD /path``."""

    def __init__(self, rules: list[SandboxFault], seed: int = 0) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - fault sampling, not security
        self.rules: list[SandboxFault] = []
        self._left: list[int | None] = []
        self.injected: Counter[str] = Counter()
        self.set(rules)

    def set(self, rules: list[SandboxFault]) -> None:
        """Replace every rule."""
        self.rules = list(rules)
        self._left = [rule.count for rule in self.rules]

    def pick(self, endpoint: str) -> SandboxFault | None:
        """Return the first rule matching the endpoint that fires this time, counting it."""
        for index, rule in enumerate(self.rules):
            if rule.endpoint not in ("*", endpoint) or self._left[index] == 0:
                continue
            if self._rng.random() >= rule.rate:
                continue
            left = self._left[index]
            if left is not None:
                self._left[index] = left - 1
            self.injected[rule.kind] += 1
            return rule
        return None
