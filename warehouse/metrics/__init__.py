"""Metrics behind a small interface: library counters, per-run batch gauges, the sinks."""
