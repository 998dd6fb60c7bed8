"""The five agents (news, long, short, strategy, execution): functions over typed data.

Not built yet: see the project's open issues. Nothing here may import celery, ccxt, redis
or langchain (an import-linter contract checks it).
"""
