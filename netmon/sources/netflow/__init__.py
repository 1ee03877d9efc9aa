"""NetFlow v1/v5/v7/v9 and IPFIX collector: the ``netflow`` source plug-in.

Modules, one job each: ``v5`` / ``v9`` / ``ipfix`` parse and validate their wire
version (bytes in, an ``export.Export`` or ``export.Invalid`` out; they hold no
state); ``collector`` applies what they return and holds the per-exporter state
(templates, sampling, sequence numbers, system init time), bounded by ``state``;
``templates`` keeps templates per exporter and observation domain (and data held
back for one); ``layout`` turns a template into a numpy dtype so ``np.frombuffer``
decodes all its records at once; ``fields.csv`` / ``fields`` are the information
elements netmon reads; ``records`` is the flow table and the UDP/123 rows kept from
it; ``listener`` receives exports (a receiver process, a byte-bounded queue) and
``datagrams`` cuts them out of captured frames (parsed by ``netmon.decode.packets``);
``incapture`` routes exports found in a replayed capture; ``source`` is the plug-in;
``listing`` prints every record (``netmon decode --flows``). ``netmon.sources.sflow``
reuses the listener and the flow table.

Example::

    [[sources]]
    type = "netflow"
    listen = ["0.0.0.0:2055", "[::]:4739"]
    exporters = ["192.0.2.0/24"]          # allowlist; empty allows any
    sampling = { "192.0.2.1" = 1000 }      # override a router's own rate
    record_delay = 60                      # the exporters' active timeout
"""

from typing import Any

__all__ = ["Config", "NetflowSource", "build", "check"]


def __getattr__(name: str) -> Any:
    """The plug-in's names, imported when first used: a replay that only looks for
    export datagrams in a capture (``datagrams``) does not pay for the collector."""
    if name in __all__:
        from netmon.sources.netflow import source

        return getattr(source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
