"""Reports that read the store: host tables, per-host evidence for an abuse desk."""
