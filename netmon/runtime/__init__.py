"""What the pipeline owns while it runs: event time across sources (:mod:`.clock`),
sources supervised in their own threads (:mod:`.sources`; a run of replays only reads
them in the pipeline's thread) and sinks behind bounded queues (:mod:`.sinks`).
:mod:`netmon.pipeline` wires them; plug-ins know none of this,
but for the alerts sink, which fans one interval's alerts out to its hooks and puts each
hook behind a managed queue of its own (so a hook too only encodes and sends).

The cluster roles (issue 12, :mod:`netmon.cluster`) reuse these parts: a collector is
this pipeline with an outbox in the aggregator's place (rows are published before any
window, so the seam is there, not at the sinks, which receive scored intervals); a
scorer keeps one :class:`~netmon.runtime.clock.Clock` per partition, each collector a
tag added at first sight with its lateness, ``stall_timeout`` being the "dead
collector" rule, and hands closed intervals to managed sinks like the pipeline.
"""
