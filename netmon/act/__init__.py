"""Actions on the network: opt-in, audited, reversible (see ``netmon.act.muzzle``)."""
