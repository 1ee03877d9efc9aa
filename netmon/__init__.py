"""netmon: a network-side anomaly monitor for NTP (UDP/123) traffic leaving a campus."""

__version__ = "0.1.0"
