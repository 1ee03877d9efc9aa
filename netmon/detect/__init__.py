"""Detection: rules for protocol facts and online models, scoring each host-interval."""
