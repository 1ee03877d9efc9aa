"""Between a collector and its scorers (issue 12): observation batches over an existing log.

* :mod:`.partition`: which partition an internal host belongs to (the one function
  collectors and scorers share);
* :mod:`.wire`: one message's bytes, a small header and OBS_DTYPE rows (no pickle);
* :mod:`.jetstream`: the NATS JetStream transport (publisher, partition consumers,
  leases and per-partition checkpoints), registered as transport ``jetstream`` in
  :mod:`netmon.registry`, so another log (Kafka) is one more module of the same shape.

Nothing here imports the aggregate or detect stages: a collector publishes decoded
rows, a scorer (:mod:`netmon.cluster`) hands what it consumes to its own stages.
"""
