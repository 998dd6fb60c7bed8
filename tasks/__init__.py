"""Celery tasks: thin shells that decode arguments, call one function and store a small result."""
