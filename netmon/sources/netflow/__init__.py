"""NetFlow v1/v5/v9 and IPFIX collector: the ``netflow`` source plug-in.

Modules, one job each: ``v5`` / ``v9`` / ``ipfix`` read their wire version's
headers and sets; ``templates`` keeps templates per exporter and observation
domain (and data held back for one); ``layout`` turns a template into a numpy
dtype so ``np.frombuffer`` decodes all its records at once; ``fields.csv`` /
``fields`` are the information elements netmon reads; ``collector`` holds the
per-exporter state (sampling, sequence numbers, system init time); ``records``
is the flow table and the UDP/123 rows kept from it; ``listener`` and
``datagrams`` receive exports (UDP, or a pcap of them); ``source`` is the plug-in;
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

from netmon.sources.netflow.source import Config, NetflowSource, build, check

__all__ = ["Config", "NetflowSource", "build", "check"]
