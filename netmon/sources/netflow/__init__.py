"""NetFlow v5, v9 and IPFIX collector (source ``netflow``); see ``source`` for the plug-in."""

from netmon.sources.netflow.source import Config, NetflowSource, build

__all__ = ["Config", "NetflowSource", "build"]
