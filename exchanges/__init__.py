"""Exchange access through ccxt: adapter, error mapping, limit tables, resilient client.

Not built yet: see the project's open issues.
"""
