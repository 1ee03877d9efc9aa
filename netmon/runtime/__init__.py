"""What the pipeline owns while it runs: event time across sources (:mod:`.clock`),
sources supervised in their own threads (:mod:`.sources`) and sinks behind bounded
queues (:mod:`.sinks`). :mod:`netmon.pipeline` wires them; plug-ins know none of this.
"""
