"""The detect stage's process-wide settings: freed temporaries are reused, not faulted back in."""

from __future__ import annotations

import resource

import numpy as np

from netmon.detect.engine import REUSED_BLOCK, reuse_freed_memory


def _faults_making(nbytes: int) -> int:
    """Minor page faults taken to make, fill and free one array of ``nbytes``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(nbytes // 8)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_interval_temporary_is_reused_without_faulting_its_pages_in_again():
    assert reuse_freed_memory(), "glibc's mallopt refused the settings"
    size = REUSED_BLOCK // 2  # a million hosts' float64 column is 8 MB; two of them
    _faults_making(size)  # the heap grows once
    again = _faults_making(size)
    pages = size // resource.getpagesize()  # handed back and mapped again: 4096 faults, or ~470 with huge pages
    assert again < pages // 64, f"{again} page faults making a {size >> 20} MiB array again ({pages} pages): memory was handed back"
