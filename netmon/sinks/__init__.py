"""Sinks: where scored intervals go (embedded store, InfluxDB, alert hooks)."""
