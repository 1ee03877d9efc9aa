"""Decoding: link-layer frames to UDP/123 observations with NTP fields, whole batches at a time."""
