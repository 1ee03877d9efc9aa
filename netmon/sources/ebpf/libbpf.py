"""The few libbpf calls netmon needs, through ctypes (Debian's libbpf1, no compiler at run time).

libbpf does the hard part of loading (BTF, map creation, relocations, verifier log);
netmon only opens the object, sets map sizes, loads it and then works with file
descriptors: batch lookups, element updates, the ring buffer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

from netmon.sources.live import LiveError


class LibbpfMissing(LiveError):
    """libbpf1 is not installed."""


SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (linux/bpf.h), the fields netmon reads."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "bpf_object__open_file": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
    "bpf_object__load": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_object__close": (None, [ctypes.c_void_p]),
    "bpf_object__find_map_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_object__find_program_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_map__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__set_max_entries": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32]),
    "bpf_program__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]),
    "bpf_map_lookup_batch": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
         ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(BatchOpts)],
    ),
    "bpf_map_update_batch": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(BatchOpts)],
    ),
    "bpf_obj_pin": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
    "bpf_obj_get": (ctypes.c_int, [ctypes.c_char_p]),
    "bpf_map_get_next_id": (ctypes.c_int, [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    "bpf_map_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]),
    "ring_buffer__new": (ctypes.c_void_p, [ctypes.c_int, SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]),
    "ring_buffer__poll": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "ring_buffer__consume": (ctypes.c_int, [ctypes.c_void_p]),
    "ring_buffer__free": (None, [ctypes.c_void_p]),
    "libbpf_set_print": (ctypes.c_void_p, [PRINT_FN]),
}

_lib: ctypes.CDLL | None = None
_messages: list[str] = []
_libc = ctypes.CDLL(None, use_errno=True)
_vsnprintf = _libc.vsnprintf
_vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    """libbpf's log lines (verifier output included) collected for error messages."""
    buf = ctypes.create_string_buffer(4096)
    _vsnprintf(buf, len(buf), fmt, args)
    _messages.append(buf.value.decode(errors="replace").rstrip())
    return 0


def lib() -> ctypes.CDLL:
    """libbpf.so.1 with argument types set; LibbpfMissing names the package to install."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            handle = ctypes.CDLL(name, use_errno=True)
        except OSError:
            raise LibbpfMissing("libbpf is not installed: apt-get install libbpf1 (Debian 12) or libbpf-dev") from None
        for fn, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(handle, fn)
            func.restype = restype
            func.argtypes = argtypes
        handle.libbpf_set_print(_print)
        _lib = handle
    return _lib


def take_messages() -> list[str]:
    """libbpf log lines since the last call (the verifier log after a failed load)."""
    lines = list(_messages)
    _messages.clear()
    return lines


def check(ret: int, what: str) -> int:
    """``ret`` unless it is a negative errno, which becomes an OSError naming ``what``."""
    if ret < 0:
        err = -ret if ret != -1 else ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "bpf_obj_get_info_by_fd")
    return info


def map_ids() -> list[int]:
    """Every BPF map id in the kernel (needs CAP_SYS_ADMIN)."""
    ids, current = [], ctypes.c_uint32(0)
    while lib().bpf_map_get_next_id(current.value, ctypes.byref(current)) == 0:
        ids.append(current.value)
    return ids


class RingBuffer:
    """A BPF ring buffer whose records are handed, as bytes, to ``on_record``."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        def callback(_ctx: int, data: int, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            return 0

        self._callback = SAMPLE_FN(callback)  # keep a reference for the C side
        self._rb = lib().ring_buffer__new(map_fd, self._callback, None, None)
        if not self._rb:
            raise OSError(ctypes.get_errno(), "ring_buffer__new failed")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for records and hand them over; returns how many."""
        ret = lib().ring_buffer__poll(self._rb, timeout_ms)
        if ret == -4:  # EINTR: a signal arrived, the caller's loop decides
            return 0
        return check(ret, "ring_buffer__poll")

    def consume(self) -> int:
        return check(lib().ring_buffer__consume(self._rb), "ring_buffer__consume")

    def close(self) -> None:
        if self._rb:
            lib().ring_buffer__free(self._rb)
            self._rb = None
