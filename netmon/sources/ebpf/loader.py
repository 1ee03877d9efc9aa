"""Build, load, attach and detach the tc program; read its maps; muzzle hosts.

The program (``ntp_tc.c`` beside this file) is compiled once with clang and cached by
the hash of its source. libbpf (through ctypes) loads it; pyroute2 attaches both
programs to the interface's clsact qdisc as direct-action classifiers, named
``netmon-<pid>_<start time>`` so that ``netmon cleanup`` can tell whose they are and remove the
ones a dead netmon left behind. Maps are also pinned under ``/sys/fs/bpf/netmon/``
when a BPF filesystem is mounted there, for ``bpftool`` and the muzzle command.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import ipaddress
import os
import platform
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from netmon.batch import addr_to_int
from netmon.sources import live
from netmon.sources.ebpf import libbpf

log = structlog.get_logger(__name__)

SOURCE = Path(__file__).with_name("ntp_tc.c")
FILTER_PREFIX = "netmon-"
PRIO = 123  # tc filter preference netmon uses on clsact ingress and egress
HANDLE = 0x7B
PIN_ROOT = Path("/sys/fs/bpf/netmon")
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TC_INGRESS = 0xFFFFFFF2
TC_EGRESS = 0xFFFFFFF3
ETH_P_ALL = 0x0003
BPF_ANY = 0
MUZZLE_MAP = "netmon_muzzle"
CONFIG_MAP = "netmon_config"

#: struct counter_key / counter_val in ntp_tc.c; host as two big-endian halves like Observations.
KEY_DTYPE = np.dtype(
    [("host_hi", ">u8"), ("host_lo", ">u8"), ("dir", "u1"), ("mode", "u1"), ("version", "u1"), ("pad", "u1"),
     ("kod", "=u4")]
)
VAL_DTYPE = np.dtype(
    [("packets", "=u8"), ("bytes", "=u8"), ("sampled_packets", "=u8"), ("sampled_bytes", "=u8"),
     ("muzzled", "=u8"), ("last_ns", "=u8")]
)
SNAP = 160
#: struct sample in ntp_tc.c: one ring buffer record.
SAMPLE_DTYPE = np.dtype(
    [("ktime_ns", "=u8"), ("ifindex", "=u4"), ("wirelen", "=u4"), ("vlan_tci", "=u2"), ("vlan_proto", ">u2"),
     ("caplen", "=u2"), ("ingress", "u1"), ("pad", "u1"), ("data", "u1", SNAP)]
)
MUZZLE_DTYPE = np.dtype(
    [("rate", "=u8"), ("expiry_ns", "=u8"), ("tokens", "=u8"), ("last_ns", "=u8"), ("dropped", "=u8")]
)
EVENTS = ("sample_capped", "ringbuf_full", "counter_full")
DIR_OUT, DIR_IN = 0, 1
LiveError = live.LiveError


def _host_bytes(host: str) -> bytes:
    return addr_to_int(host).to_bytes(16, "big")


def check_privileges() -> None:
    """LiveError unless this process may load BPF programs and change tc filters."""
    live.require_caps(
        "the eBPF source",
        {"CAP_BPF": live.CAP_BPF, "CAP_PERFMON": live.CAP_PERFMON, "CAP_NET_ADMIN": live.CAP_NET_ADMIN},
        alternatives=(live.CAP_BPF, live.CAP_PERFMON),
    )


def check_kernel() -> None:
    """LiveError when the kernel lacks BTF, which the program's maps are described with."""
    if not BTF_PATH.exists():
        raise LiveError(
            f"kernel {platform.release()} has no BTF ({BTF_PATH} missing): use a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y (Debian 11+ stock kernels are), or use the AF_PACKET source (type = \"capture\")"
        )


def include_dirs() -> list[str]:
    """Extra header directories for clang: the arch's asm/types.h (bpf/ is in /usr/include)."""
    arch = f"/usr/include/{platform.machine()}-linux-gnu"
    return [d for d in (arch,) if Path(d).is_dir()]


def check_toolchain() -> str:
    """The clang path; LiveError when clang or libbpf-dev's headers are missing."""
    clang = shutil.which("clang")
    if clang is None:
        raise LiveError("clang not found: the eBPF source compiles its program at start; apt-get install clang llvm")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise LiveError("bpf/bpf_helpers.h not found: apt-get install libbpf-dev")
    return clang


def program_defines(release: str | None = None) -> list[str]:
    """clang ``-D`` flags for this kernel: the coarse clock helper exists from Linux 5.11."""
    numbers = [int(n) for n in re.findall(r"\d+", release or platform.release())[:2]]
    return ["-DNETMON_COARSE_CLOCK"] if numbers >= [5, 11] else []


def default_cache_dir() -> Path:
    """Where compiled programs are kept: ``$CACHE_DIRECTORY/ebpf`` under systemd (the unit's
    ``CacheDirectory=netmon``, writable by its dynamic user, which has no home), else
    ``$XDG_CACHE_HOME/netmon/ebpf`` or ``~/.cache/netmon/ebpf``."""
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd) / "ebpf"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netmon" / "ebpf"


def compile_program(cache_dir: Path | None = None) -> Path:
    """The compiled object for ``ntp_tc.c``, built with clang once per source version and kernel features."""
    defines = program_defines()
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(defines).encode()).hexdigest()[:16]
    cache = cache_dir or default_cache_dir()
    target = cache / f"ntp_tc-{digest}.o"
    if target.exists():
        return target
    clang = check_toolchain()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    argv = [clang, "-target", "bpf", "-O2", "-g", *defines, *[f"-I{d}" for d in include_dirs()], "-c", str(SOURCE),
            "-o", str(tmp)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise LiveError(f"clang could not build {SOURCE.name} (is libbpf-dev installed?):\n{done.stderr.strip()}")
    tmp.replace(target)
    log.info("ebpf program built", object=str(target))
    return target


def bpffs_mounted(path: Path = Path("/sys/fs/bpf")) -> bool:
    """True when ``path`` is a BPF filesystem (pins are possible); the last mount there counts."""
    kind = ""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[1] == str(path):
                kind = fields[2]
    return kind == "bpf"


def lookup_all(fd: int, key_dtype: np.dtype, val_dtype: np.dtype, max_entries: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (key, value) of a hash map, with BPF_MAP_LOOKUP_BATCH (falls back to one by one)."""
    keys = np.empty(max_entries, key_dtype)
    vals = np.empty(max_entries, val_dtype)
    lib = libbpf.lib()
    opts = libbpf.BatchOpts(ctypes.sizeof(libbpf.BatchOpts), 0, 0)
    tokens = [ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)]
    total, first, chunk = 0, True, 4096
    while total < max_entries:
        count = ctypes.c_uint32(min(chunk, max_entries - total))
        ret = lib.bpf_map_lookup_batch(
            fd, None if first else tokens[0], tokens[1], keys[total:].ctypes.data, vals[total:].ctypes.data,
            ctypes.byref(count), ctypes.byref(opts),
        )
        total += count.value
        if ret == -errno.ENOENT:
            break
        if ret == -errno.ENOSPC:  # one hash bucket holds more than `count`: ask for more
            chunk *= 2
            continue
        if ret in (-errno.EINVAL, -errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else -524) and first:
            return _lookup_each(fd, keys, vals)
        libbpf.check(ret, "bpf_map_lookup_batch")
        tokens[0], tokens[1] = tokens[1], tokens[0]
        first = False
    return keys[:total], vals[:total]


def _lookup_each(fd: int, keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lib = libbpf.lib()
    n, prev = 0, None
    while n < len(keys) and lib.bpf_map_get_next_key(fd, prev, keys[n:].ctypes.data) == 0:
        prev = keys[n:].ctypes.data
        if lib.bpf_map_lookup_elem(fd, keys[n:].ctypes.data, vals[n:].ctypes.data) == 0:
            n += 1
    return keys[:n], vals[:n]


@dataclass
class Attachment:
    """One loaded program attached to one interface."""

    interface: str
    netns: str
    ifindex: int
    obj: int
    maps: dict[str, int]
    programs: dict[str, int]
    max_hosts: int
    created_clsact: bool = False
    pin_dir: Path | None = None
    attached: list[int] = field(default_factory=list)

    @property
    def filter_name(self) -> str:
        return f"{FILTER_PREFIX}{owner_tag(os.getpid())}"

    def read_counters(self) -> tuple[np.ndarray, np.ndarray]:
        """Every counter entry: keys (KEY_DTYPE) and cumulative values (VAL_DTYPE)."""
        return lookup_all(self.maps["netmon_counters"], KEY_DTYPE, VAL_DTYPE, self.max_hosts)

    def events(self) -> dict[str, int]:
        """Kernel-side event counts (summed over CPUs): samples capped, ring full, counter map full."""
        out = {}
        for i, name in enumerate(EVENTS):
            key = ctypes.c_uint32(i)
            values = (ctypes.c_uint64 * _possible_cpus())()
            libbpf.lib().bpf_map_lookup_elem(self.maps["netmon_events"], ctypes.byref(key), values)
            out[name] = int(sum(values))
        return out

    def set_internal(self, prefixes: list[str]) -> None:
        """Campus prefixes into the LPM tries (one for IPv4, one for IPv6); only packets to or from these are counted."""
        nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
        if not nets:
            log.warning("ebpf: no campus prefixes configured ([campus] internal): nothing will be counted")
        for net in nets:
            # IPv4 prefixes in their own 4-byte trie (the program looks IPv4 packets up there)
            fd = self.maps["netmon_internal4" if net.version == 4 else "netmon_internal"]
            key = net.prefixlen.to_bytes(4, "little") + net.network_address.packed
            one = ctypes.c_uint32(1)
            libbpf.check(libbpf.lib().bpf_map_update_elem(fd, key, ctypes.byref(one), BPF_ANY), "internal prefix")

    def set_sampling(self, rate: float, burst: float) -> None:
        """Header samples per second (whole machine; split over CPUs) and the burst allowed."""
        ncpu = _possible_cpus()
        settings = _read_settings(self.maps[CONFIG_MAP])
        settings["rate"] = int(np.ceil(rate / ncpu)) if rate > 0 else 0
        settings["burst"] = max(1, int(np.ceil(burst / ncpu)))
        _write_settings(self.maps[CONFIG_MAP], settings)


#: struct settings in ntp_tc.c
SETTINGS_DTYPE = np.dtype([("rate", "=u8"), ("burst", "=u8"), ("muzzling", "=u8")])


def _read_settings(fd: int) -> np.ndarray:
    value = np.zeros(1, SETTINGS_DTYPE)
    key = ctypes.c_uint32(0)
    libbpf.check(libbpf.lib().bpf_map_lookup_elem(fd, ctypes.byref(key), value.ctypes.data), "read settings")
    return value[0]


def _write_settings(fd: int, value: np.ndarray) -> None:
    key = ctypes.c_uint32(0)
    libbpf.check(libbpf.lib().bpf_map_update_elem(fd, ctypes.byref(key), value.tobytes(), BPF_ANY), "settings")


def _possible_cpus() -> int:
    """CPUs the kernel sizes per-CPU maps for (/sys/devices/system/cpu/possible)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def load(object_path: Path, max_hosts: int) -> tuple[int, dict[str, int], dict[str, int]]:
    """Open and load the object; returns (bpf_object pointer, map fds, program fds)."""
    lib = libbpf.lib()
    with contextlib.suppress(ValueError, OSError):  # kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    libbpf.take_messages()
    obj = lib.bpf_object__open_file(str(object_path).encode(), None)
    if not obj:
        raise LiveError(f"libbpf could not open {object_path}: {os.strerror(ctypes.get_errno())}")
    counters = lib.bpf_object__find_map_by_name(obj, b"netmon_counters")
    libbpf.check(lib.bpf_map__set_max_entries(counters, max_hosts), "set max_hosts")
    ret = lib.bpf_object__load(obj)
    if ret < 0:
        messages = "\n".join(libbpf.take_messages()[-20:])
        lib.bpf_object__close(obj)
        hint = ""
        if -ret in (errno.EPERM, errno.EACCES) and "invalid" not in messages:
            hint = " (needs CAP_BPF and CAP_PERFMON, or root; check ulimit -l / memlock)"
        raise LiveError(f"the kernel refused the eBPF program: {os.strerror(-ret)}{hint}\n{messages}")
    maps = {}
    for name in ("netmon_counters", "netmon_internal", "netmon_internal4", "netmon_muzzle", "netmon_samples",
                 "netmon_buckets", "netmon_config", "netmon_events"):
        maps[name] = lib.bpf_map__fd(lib.bpf_object__find_map_by_name(obj, name.encode()))
    programs = {
        name: lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, name.encode()))
        for name in ("netmon_ingress", "netmon_egress")
    }
    return obj, maps, programs


def _ipr(netns: str):
    """A pyroute2 IPRoute whose socket lives in ``netns`` (entered here: pyroute2's own
    ``netns=`` argument would create a namespace that is missing)."""
    from pyroute2 import IPRoute

    with live.netns(netns):
        return IPRoute()


def attach(
    interface: str, netns: str = "", max_hosts: int = 262144, object_path: Path | None = None
) -> Attachment:
    """Load the program and attach it to ``interface`` (ingress and egress)."""
    from pyroute2 import NetlinkError

    check_privileges()
    check_kernel()
    obj_path = object_path or compile_program()
    with live.netns(netns):
        ifindex = live.interface_index(interface)
    obj, maps, programs = load(obj_path, max_hosts)
    att = Attachment(interface, netns, ifindex, obj, maps, programs, max_hosts)
    try:
        with _ipr(netns) as ipr:
            live.require_ethernet(interface, ipr.get_links(ifindex)[0]["ifi_type"])
            try:
                ipr.tc("add", "clsact", ifindex)
                att.created_clsact = True
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            for parent, prog in ((TC_INGRESS, "netmon_ingress"), (TC_EGRESS, "netmon_egress")):
                ipr.tc(
                    "add-filter", "bpf", ifindex, HANDLE, fd=programs[prog], name=att.filter_name, parent=parent,
                    prio=PRIO, protocol=ETH_P_ALL, classid=1, direct_action=True,
                )
                att.attached.append(parent)
    except NetlinkError as exc:
        detach(att)
        if exc.code == errno.EEXIST:
            raise LiveError(
                f"{interface} already carries a netmon filter (tc pref {PRIO}): another netmon watches it, or a "
                "dead one left it attached: run `netmon cleanup`"
            ) from None
        raise LiveError(f"cannot attach to {interface}: {exc} (needs CAP_NET_ADMIN)") from None
    except Exception:
        detach(att)
        raise
    att.pin_dir = _pin(att)
    log.info("ebpf attached", interface=interface, netns=netns or None, filter=att.filter_name)
    return att


def _pin(att: Attachment) -> Path | None:
    """Pin the counter and muzzle maps for bpftool and other netmon processes; best effort."""
    if not bpffs_mounted():
        return None
    where = f"{att.netns or 'host'}-{att.interface}".replace(".", "_")  # bpffs refuses dots in names
    pin_dir = PIN_ROOT / f"{owner_tag(os.getpid())}-{where}"
    try:
        pin_dir.mkdir(parents=True, exist_ok=True)
        for name in ("netmon_counters", "netmon_muzzle"):
            libbpf.check(libbpf.lib().bpf_obj_pin(att.maps[name], str(pin_dir / name).encode()), f"pin {name}")
    except OSError as exc:
        log.warning("ebpf: maps not pinned", path=str(pin_dir), error=str(exc))
        shutil.rmtree(pin_dir, ignore_errors=True)
        return None
    return pin_dir


def _delete_filters(ipr, ifindex: int, parents: list[int]) -> None:
    from pyroute2 import NetlinkError

    for parent in parents:
        try:
            ipr.tc("del-filter", "bpf", ifindex, HANDLE, parent=parent, prio=PRIO, protocol=ETH_P_ALL)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise


def detach(att: Attachment) -> None:
    """Remove the filters (and the clsact qdisc if netmon made it and it is empty), unpin, close."""
    from pyroute2 import NetlinkError

    try:
        with _ipr(att.netns) as ipr:
            _delete_filters(ipr, att.ifindex, att.attached)
            if att.created_clsact and not any(_filters(ipr, att.ifindex)):
                try:
                    ipr.tc("del", "clsact", att.ifindex)
                except NetlinkError as exc:
                    if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                        raise
    except OSError as exc:
        log.warning("ebpf detach: interface or namespace already gone", error=str(exc))
    att.attached.clear()
    if att.pin_dir is not None:
        shutil.rmtree(att.pin_dir, ignore_errors=True)
        att.pin_dir = None
    if att.obj:
        libbpf.lib().bpf_object__close(att.obj)
        att.obj = 0
    log.info("ebpf detached", interface=att.interface)


def _filters(ipr, ifindex: int):
    """(parent, filter message) for every classifier on the clsact hooks of ``ifindex``."""
    from pyroute2 import NetlinkError

    for parent in (TC_INGRESS, TC_EGRESS):
        try:
            messages = list(ipr.get_filters(index=ifindex, parent=parent))
        except NetlinkError:
            continue  # no clsact qdisc on this interface
        for msg in messages:
            if msg.get_attr("TCA_KIND"):
                yield parent, msg


def _bpf_name(msg) -> str:
    options = msg.get_attr("TCA_OPTIONS")
    return (options.get_attr("TCA_BPF_NAME") if options else None) or ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tag(pid: int) -> str:
    """``<pid>_<start time>``: names netmon's filters and pins; a reused pid does not match."""
    return f"{pid}_{_start_time(pid)}"


def _owner_alive(tag: str) -> bool:
    pid, _, start = tag.partition("_")
    return pid.isdigit() and bool(start) and _start_time(int(pid)) == start


@dataclass(frozen=True)
class Leftover:
    """A netmon filter or pin directory found on the system."""

    kind: str  # "filter" or "pin"
    where: str  # "netns/interface ingress|egress" or the pin path
    owner: str  # "<pid>_<start time>" of the netmon that made it
    alive: bool


def _namespaces() -> list[str]:
    try:
        return [""] + sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return [""]


def cleanup(include_live: bool = False, dry_run: bool = False) -> list[Leftover]:
    """Find (and unless ``dry_run`` remove) netmon filters and pins whose netmon is gone.

    Looks at every interface of the current and every named network namespace; a
    filter is netmon's when its name is ``netmon-<pid>_<start time>``, and left over
    when that process is gone (``include_live`` takes live ones too).
    """
    found: list[Leftover] = []
    for ns in _namespaces():
        try:
            found.extend(_cleanup_namespace(ns, include_live, dry_run))
        except Exception as exc:  # a namespace deleted meanwhile, or one we may not enter
            log.warning("cleanup: namespace skipped", netns=ns or "(host)", error=str(exc))
    if PIN_ROOT.is_dir():
        for pin in sorted(PIN_ROOT.iterdir()):
            tag = pin.name.split("-", 1)[0]
            alive = _owner_alive(tag)
            found.append(Leftover("pin", str(pin), tag, alive))
            if (include_live or not alive) and not dry_run:
                shutil.rmtree(pin, ignore_errors=True)
    return found


def _cleanup_namespace(ns: str, include_live: bool, dry_run: bool) -> list[Leftover]:
    found = []
    with _ipr(ns) as ipr:
        for link in ipr.get_links():
            ifindex, ifname = link["index"], link.get_attr("IFLA_IFNAME")
            for parent, msg in list(_filters(ipr, ifindex)):
                name = _bpf_name(msg)
                if not name.startswith(FILTER_PREFIX):
                    continue
                tag = name[len(FILTER_PREFIX):]
                alive = _owner_alive(tag)
                hook = "ingress" if parent == TC_INGRESS else "egress"
                found.append(Leftover("filter", f"{ns or '(host)'}/{ifname} {hook}", tag, alive))
                if (include_live or not alive) and not dry_run:
                    _delete_filters(ipr, ifindex, [parent])
    return found


@contextlib.contextmanager
def _netmon_maps(attachments: list[Attachment] | None) -> Iterator[dict[str, list[int]]]:
    """Muzzle and settings map fds: of ``attachments``, or of every netmon program in the kernel
    (all interfaces, all namespaces, other processes: found by map name)."""
    names = (MUZZLE_MAP, CONFIG_MAP)
    if attachments is not None:
        yield {name: [a.maps[name] for a in attachments] for name in names}
        return
    found: dict[str, list[int]] = {name: [] for name in names}
    for map_id in libbpf.map_ids():
        fd = libbpf.lib().bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            continue
        name = libbpf.map_info(fd).name.decode()
        if name in found:
            found[name].append(fd)
        else:
            os.close(fd)
    try:
        yield found
    finally:
        for fd in found[MUZZLE_MAP] + found[CONFIG_MAP]:
            os.close(fd)


def muzzle(host: str, rate: float = 0.0, expiry: float | None = None,
           attachments: list[Attachment] | None = None) -> int:
    """Drop (``rate`` 0) or limit to ``rate`` packets/s the UDP/123 of ``host``, until ``expiry``.

    ``expiry`` is UNIX time in seconds (None: until unmuzzled). Applies to every loaded
    netmon program (or to ``attachments``) while it stays attached; returns how many
    programs now hold the muzzle.
    """
    expiry_ns = 0
    if expiry is not None:
        expiry_ns = max(1, int((expiry - time.time() + time.monotonic()) * 1e9))
    rate_pps = int(np.ceil(rate)) if rate > 0 else 0
    value = np.array([(rate_pps, expiry_ns, rate_pps * 1_000_000_000, time.monotonic_ns(), 0)], MUZZLE_DTYPE)
    key = _host_bytes(host)
    with _netmon_maps(attachments) as maps:
        for fd in maps[MUZZLE_MAP]:
            libbpf.check(libbpf.lib().bpf_map_update_elem(fd, key, value.tobytes(), BPF_ANY), "muzzle")
        for fd in maps[CONFIG_MAP]:  # the program skips the muzzle lookups until this is set
            settings = _read_settings(fd)
            settings["muzzling"] = 1
            _write_settings(fd, settings)
        return len(maps[MUZZLE_MAP])


def unmuzzle(host: str, attachments: list[Attachment] | None = None) -> int:
    """Lift the muzzle on ``host``; returns how many programs held it."""
    key = _host_bytes(host)
    with _netmon_maps(attachments) as maps:
        return sum(libbpf.lib().bpf_map_delete_elem(fd, key) == 0 for fd in maps[MUZZLE_MAP])


def muzzled(attachments: list[Attachment] | None = None) -> dict[str, dict[str, float]]:
    """host -> {rate, expiry (UNIX s, 0 = none), dropped} over every netmon program."""
    from netmon.batch import addr_text

    out: dict[str, dict[str, float]] = {}
    with _netmon_maps(attachments) as maps:
        for fd in maps[MUZZLE_MAP]:
            keys, vals = lookup_all(fd, np.dtype([("hi", ">u8"), ("lo", ">u8")]), MUZZLE_DTYPE, 65536)
            for key, val in zip(keys, vals):
                host = addr_text(key["hi"], key["lo"])
                expiry = 0.0
                if val["expiry_ns"]:
                    expiry = float(val["expiry_ns"]) / 1e9 - time.monotonic() + time.time()
                entry = out.setdefault(host, {"rate": float(val["rate"]), "expiry": expiry, "dropped": 0.0})
                entry["dropped"] += float(val["dropped"])
    return out
