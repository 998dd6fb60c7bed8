"""The fleet's composition root: the Celery app, the per-process runtime, the CLI."""

from workers.app import app

__all__ = ["app"]
