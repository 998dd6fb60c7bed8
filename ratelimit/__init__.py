"""Fleet-wide rate limiting: pure reference algorithms and an atomic Redis backend."""
