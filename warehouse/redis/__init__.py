"""The one place that builds Redis clients, and the circuit breaker of the calls; the cache and
the outbox both use it, and neither imports the other for it."""
