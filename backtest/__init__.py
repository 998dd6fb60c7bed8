"""Replay on history: the live agents, strategy and risk guard over recorded candles.

``data`` loads candles (CSV, ccxt JSON) or makes seeded synthetic ones; ``replay`` walks
them on a simulated clock; ``metrics`` turns the run into figures; ``report`` writes the
output files; ``cli`` is ``crypto-ai backtest``. docs/BACKTEST.md states every assumption.
"""
