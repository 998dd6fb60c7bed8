"""A local exchange emulator that unmodified ccxt talks to over HTTP.

Not built yet: see the project's open issues.
"""
