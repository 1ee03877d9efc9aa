"""The detect stage's process-wide settings: freed temporaries are reused, not faulted back in."""

from __future__ import annotations

import ctypes
import platform
import resource

import numpy as np
import pytest

from netmon.config import Detect
from netmon.detect.engine import REUSED_BLOCK, Engine, reuse_freed_memory
from tests.detect.fleet import Fleet


def _faults_making(nbytes: int) -> int:
    """Minor page faults taken to make, fill and free one array of ``nbytes``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(nbytes // 8)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_a_freed_interval_temporary_is_reused_without_faulting_its_pages_in_again():
    assert reuse_freed_memory(), "glibc's mallopt refused the settings"
    size = REUSED_BLOCK // 2  # a million hosts' float64 column is 8 MB; two of them
    _faults_making(size)  # the heap grows once
    again = _faults_making(size)
    pages = size // resource.getpagesize()  # handed back and mapped again: 4096 faults, or ~470 with huge pages
    assert again < pages // 64, f"{again} page faults making a {size >> 20} MiB array again ({pages} pages): memory was handed back"


class _NoMallopt:
    """A C library without the symbol (musl, macOS): looking it up raises AttributeError, as ctypes does."""

    def __init__(self, name: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        raise AttributeError(name)


class _RefusingMallopt:
    """A C library whose mallopt takes no value (returns 0, as musl's stub and 32-bit glibc do for 32 MiB)."""

    def __init__(self, name: object) -> None:
        self.mallopt = lambda param, value: 0


def _unloadable(name: object) -> None:
    raise OSError("cannot open the C library")


@pytest.mark.parametrize("libc", [_NoMallopt, _RefusingMallopt, _unloadable], ids=["no-symbol", "refused", "unloadable"])
def test_a_c_library_without_glibcs_mallopt_leaves_malloc_as_it_is_and_the_engine_scores(monkeypatch, libc):
    monkeypatch.setattr(ctypes, "CDLL", libc)
    assert reuse_freed_memory() is False, "reported the freed-memory settings as taken on a C library without them"
    engine = Engine(Detect(detectors=["rules", "baseline"]), restore=False)
    fleet = Fleet.clients(20)
    batch = fleet.interval(0.0)
    scored = engine.process(batch)
    assert len(batch) and scored.scores["baseline"].shape == (len(batch),), "the engine did not score without mallopt"
