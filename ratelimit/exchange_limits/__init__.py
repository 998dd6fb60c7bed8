"""Each exchange's limit table, one module per exchange (its pools, scopes, sources)."""
