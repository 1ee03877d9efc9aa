"""``netmon run --role collector|scorer``: the pipeline split over a log (issue 12).

* :mod:`.collector`: sources -> decode -> publish, partitioned by internal host;
* :mod:`.scorer`: the partitions it leases -> aggregate -> detect -> sinks, one
  aggregator and one set of detectors per partition, checkpointed in the log.

What equality is promised (tested in tests/cluster/ on the sample capture, and on the
7-day, 2,000-host simulation by tests/benchmarks/equal_cluster.py): for every host-interval and
every per-host detector (rules, baseline, drift) the cluster gives exactly what one
process gives on the merged capture, whatever the partitioning, the number of
collectors or a takeover. Population-level views (the population forest, the hosts
detector's group view) see the hosts of one partition only: their scores equal what
one process gives on that partition's hosts, not on the whole campus.
"""
