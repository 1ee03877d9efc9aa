"""What the pipeline owns while it runs: event time across sources (:mod:`.clock`),
sources supervised in their own threads (:mod:`.sources`) and sinks behind bounded
queues (:mod:`.sinks`). :mod:`netmon.pipeline` wires them; plug-ins know none of this,
but for the alerts sink, which fans one interval's alerts out to its hooks and puts each
hook behind a managed queue of its own (so a hook too only encodes and sends).

Ready for the cluster work (issue 12): a transport is a source/sink pair behind the
registry, so a scorer's consumer is one more supervised source and a collector's
publisher one more managed sink (its queue and ``when_full`` are the back-pressure).
:class:`~netmon.runtime.clock.Clock` keys watermarks by any tag and drops a silent
one from the minimum after ``stall_timeout`` (counted), which is the "dead collector"
rule; a consumer that receives several collectors' batches adds each collector to the
clock at first sight (its lateness) and calls
:meth:`netmon.pipeline.Pipeline.handle` with each collector's id as the tag.
"""
