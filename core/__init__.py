"""Core: configuration models, the error tree, the Redis key registry, domain types.

Nothing here imports celery, ccxt, redis or langchain (an import-linter contract checks it).
"""
