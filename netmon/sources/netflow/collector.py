"""Export datagrams in, flow records (and sampled frames) out: the state an exporter needs.

A :class:`Collector` keeps, per exporter and observation domain, the templates,
the sampling rates learnt from options data, the system init time and the next
expected sequence number. ``feed`` has the datagram's wire-version module parse
and validate it whole (an :class:`~netmon.sources.netflow.export.Export`, or a
counted skip), applies templates and only queues each data set's bytes; ``flush``
decodes every queued set of one template with numpy in one go, which is where the
records/second come from.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

import numpy as np
import structlog

from netmon import health
from netmon.batch import Frames, addr_halves, empty_observations
from netmon.sources.netflow import ipfix, v5, v9
from netmon.sources.netflow.export import DataSet, Export, Invalid, TemplateRecord, Withdrawal
from netmon.sources.netflow.state import MAX_EXPORTERS, PerExporter, Recent
from netmon.sources.netflow.layout import FieldSpec, Template, compile_template, fixed_columns, variable_columns
from netmon.sources.netflow.records import (FLOW_DTYPE, build, fill_from_frames, flow_columns, flow_times, frames_from, ntp_mask,
                                            observations, pack)
from netmon.sources.netflow.templates import Context, Domain, Pending, TemplateCache

log = structlog.get_logger(__name__)

_VERSION = struct.Struct("!H")
#: The decoded fields :func:`~netmon.sources.netflow.records.ntp_mask` reads.
_NTP_TEST = ("proto", "sport", "dport", "sport_udp", "dport_udp")
#: The first two bytes of a NetFlow v5 datagram.
_V5 = b"\x00\x05"
#: Context from a (exporter, domain, export, uptime, header_rate) tuple without a Python-level call.
_new_context = functools.partial(tuple.__new__, Context)
#: Backward sequence jumps larger than this are an exporter restart, not reordering.
_RESTART_JUMP = 100_000
#: Export version (first 16 bits of a datagram) -> header and set parser.
_PARSERS = {1: v5.parse_v1, 5: v5.parse, 7: v5.parse_v7, 9: v9.parse, 10: ipfix.parse}
#: Seconds before its export a record may have ended and keep its own time (longer: clamped).
MAX_RECORD_AGE = 86400.0


@dataclass
class Decoded:
    """One flush: flow records (FLOW_DTYPE), and records that carried a frame section.

    ``header_flows`` rows are filled from their frame's own headers; the frames
    go to the NTP decoder, so these rows are for display, not for counting twice.
    A collector made with ``ntp_only`` returns its UDP/123 records as ``observations``
    (OBS_DTYPE, counts sampling-corrected) instead of ``flows``.
    """

    flows: np.ndarray
    header_flows: np.ndarray
    frames: Frames | None = None
    observations: np.ndarray = field(default_factory=empty_observations)


@dataclass
class _Queued:
    """The data sets of one template waiting for flush: record bytes, counts, contexts."""

    template: Template
    chunks: list[memoryview] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)


class Collector:
    """NetFlow v1/v5/v7/v9/IPFIX decoding state for any number of exporters.

    The wire-version modules only parse (bytes -> :class:`~netmon.sources.netflow.export.Export`);
    this class applies what they return, so state lives in one place and data
    flows one way. Per-exporter state (sequence numbers, sampling, init times,
    counters) is kept for the ``max_exporters`` most recently heard exporters.
    """

    def __init__(self, sampling: dict[str, int] | None = None, max_templates: int = 65536, max_pending: int = 4096,
                 ntp_only: bool = False, template_lifetime: float = 0.0, max_time_skew: float | None = None,
                 max_templates_per_exporter: int = 4096, max_new_templates: int = 1024,
                 max_exporters: int = MAX_EXPORTERS) -> None:
        """``sampling``: exporter address -> 1-in-N rate overriding what it exports.
        ``template_lifetime``: seconds of export time after which a template not
        announced again is no longer used (RFC 7011 10.3.7 for UDP); 0 = never.
        ``ntp_only``: keep only UDP/123 records (the source's case), returned as
        observations, not flow rows; the rest are counted (``source.netflow.other_records``)
        before any row is built for them.
        ``max_time_skew``: seconds an export time may differ from the datagram's
        arrival before it is replaced by the arrival time, and how far past its
        export a record may end before its times are clamped (None: times as sent,
        for listings). ``max_new_templates``: new or changed templates one exporter
        may announce per flush; beyond that they are dropped and counted, so a
        template flood costs its sender, not every exporter.
        """
        self.ntp_only = ntp_only
        self.template_lifetime = template_lifetime
        self.max_time_skew = max_time_skew
        self.max_new_templates = max_new_templates
        self.override = {k: float(v) for k, v in (sampling or {}).items()}
        self.templates = TemplateCache(max_templates=max_templates, max_pending=max_pending,
                                       max_per_exporter=max_templates_per_exporter)
        expired = "source.netflow.exporters_expired"
        self.rates: Recent[Domain, dict[int | None, float]] = Recent(max_exporters, expired)
        self.sysinit: Recent[Domain, float] = Recent(max_exporters, expired)
        self.next_sequence: Recent[Domain, int] = Recent(max_exporters, expired)
        self.lost: Recent[str, int] = Recent(max_exporters, expired)
        self.exporter_counters = PerExporter("source.netflow.exporter", max_exporters)
        self.last_export = 0.0
        self._halves: Recent[str, tuple[int, int]] = Recent(max_exporters, expired)
        self._new_templates: dict[str, int] = {}
        self._queued: dict[int, _Queued] = {}
        self._datagrams = 0
        self._records = 0
        self._other = 0
        self._rows: list[np.ndarray] = []
        self._observations: list[np.ndarray] = []
        self._header_rows: list[np.ndarray] = []
        self._frames: list[tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]] = []

    # -- datagrams -------------------------------------------------------------
    def feed(self, data: bytes | memoryview, exporter: str, arrival: float | None = None) -> bool:
        """Parse one export datagram from ``exporter`` (address text) received at ``arrival``
        (UNIX s; None for a listing); data sets queue for flush. False when it was skipped (counted)."""
        self._datagrams += 1
        if len(data) < 4:
            health.count("decode.skip.truncated")
            return False
        version = _VERSION.unpack_from(data)[0]
        parser = _PARSERS.get(version)
        if parser is None:
            health.count("decode.skip.netflow_version")
            return False
        try:
            exports = parser(data, exporter)
        except Invalid as exc:
            health.count(f"decode.skip.{exc.reason}")
            return False
        except (struct.error, ValueError, IndexError):
            health.count("decode.skip.malformed")
            log.debug("malformed export datagram", exporter=exporter, version=version, exc_info=True)
            return False
        for export in exports:
            if arrival is not None and self.max_time_skew is not None:
                export.context = self._sane_time(export.context, arrival)
            self._apply(export, data)
        return True

    def feed_batch(self, payloads: list[bytes | memoryview], exporters: list[str], arrivals: list[float] | None = None) -> None:
        """:meth:`feed` for many datagrams (``exporters``/``arrivals`` aligned with ``payloads``).

        NetFlow v5 datagrams are parsed together (:func:`~netmon.sources.netflow.v5.parse_batch`),
        the others one by one; the records (the v5 ones after the batch's others), counters and
        per-exporter state are those that feeding every datagram in order gives (v5 keeps no
        state another version reads).
        """
        v5_at = []
        for i, data in enumerate(payloads):
            if data[:2] == _V5:
                v5_at.append(i)
            else:
                self.feed(data, exporters[i], None if arrivals is None else arrivals[i])
        if v5_at:
            self._feed_v5([payloads[i] for i in v5_at], [exporters[i] for i in v5_at],
                          None if arrivals is None else [arrivals[i] for i in v5_at])

    def _feed_v5(self, payloads: list[bytes | memoryview], exporters: list[str], arrivals: list[float] | None) -> None:
        """NetFlow v5 datagrams as one batch: skips counted by reason, export times checked,
        sequence numbers followed in order, and every record queued under the v5 template."""
        self._datagrams += len(payloads)
        batch = v5.parse_batch(payloads)
        for reason, skipped in batch.skipped.items():
            if skipped:
                health.count(f"decode.skip.{reason}", skipped)
        if not len(batch.index):
            return
        header = batch.header
        export = header["secs"] + header["nsecs"] / 1e9
        at = batch.index.tolist()
        names = [exporters[i] for i in at]
        if arrivals is not None and self.max_time_skew is not None:
            arrival = np.array([arrivals[i] for i in at], dtype=np.float64)
            far = np.flatnonzero(~(np.abs(export - arrival) <= self.max_time_skew))
            if len(far):
                health.count("source.netflow.time_clamped", len(far))
                for i in far.tolist():
                    self.exporter_counters.count(names[i], "time_clamped")
                export[far] = arrival[far]
        engines = (header["engine_type"].astype(np.int64) << 8 | header["engine_id"]).tolist()
        counts = header["count"].tolist()
        domains = [(name, 5, engine) for name, engine in zip(names, engines)]
        contexts = list(map(_new_context, zip(names, domains, export.tolist(), header["uptime"].tolist(),
                                              (header["sampling"] & 0x3FFF).tolist())))
        for domain, sequence, count in zip(domains, header["sequence"].tolist(), counts):
            self.sequence(domain, sequence, count, "records")
        queued = self._queue(v5.TEMPLATE)
        queued.chunks.append(memoryview(batch.records))
        queued.counts += counts
        queued.contexts += contexts

    def _queue(self, tpl: Template) -> _Queued:
        """The records of ``tpl`` waiting for flush (one queue per template object)."""
        queued = self._queued.get(id(tpl))
        if queued is None:
            queued = self._queued[id(tpl)] = _Queued(tpl)
        return queued

    def _sane_time(self, ctx: Context, arrival: float) -> Context:
        """The context with its export time replaced by ``arrival`` when they differ by more than
        ``max_time_skew``: one datagram dated years ahead must not move event time."""
        if abs(ctx.export - arrival) <= (self.max_time_skew or 0.0):
            return ctx
        health.count("source.netflow.time_clamped")
        self.exporter_counters.count(ctx.exporter, "time_clamped")
        return ctx._replace(export=arrival)

    def _apply(self, export: Export, data: bytes | memoryview) -> None:
        """Apply one parsed datagram: templates, withdrawals and data sets in their order, then its sequence."""
        ctx = export.context
        records: int | None = 0
        for item in export.items:
            if isinstance(item, DataSet):
                count = self.data(ctx, item.template_id, data, item.start, item.end)
                records = None if count is None or records is None else records + count
            elif isinstance(item, TemplateRecord):
                self.template(ctx, item.template_id, item.fields, item.scope_count, item.options)
            elif isinstance(item, Withdrawal):
                self.templates.withdraw(ctx.domain, item.template_id, item.options)
                health.count("source.netflow.withdrawn")
            else:
                self.records(ctx, item.template, data, item.start, item.end)
        if export.sequence is not None:
            increment = export.increment if export.increment is not None else records
            self.sequence(ctx.domain, export.sequence, increment, export.unit)

    def sequence(self, domain: Domain, seq: int, increment: int | None, unit: str) -> None:
        """Check a header sequence number; a forward gap is counted as lost ``unit``."""
        expected = self.next_sequence.get(domain)
        if expected is not None:
            gap = (seq - expected) & 0xFFFF_FFFF
            if 0 < gap < 2**31:
                self.lost.put(domain[0], (self.lost.get(domain[0]) or 0) + gap)
                health.count(f"source.netflow.lost.{unit}", gap)
                self.exporter_counters.count(domain[0], f"lost.{unit}", gap)
            elif gap and 2**32 - gap < _RESTART_JUMP:
                health.count("source.netflow.reordered")
                return
        if increment is None:
            self.next_sequence.pop(domain, None)
        else:
            self.next_sequence.put(domain, (seq + increment) & 0xFFFF_FFFF)

    def template(self, ctx: Context, template_id: int, fields: tuple[FieldSpec, ...], scope_count: int = 0, options: bool = False) -> None:
        """Store (or refresh) a template and decode the data sets that waited for it.

        An unchanged template only has its announcement time renewed, so exporters
        that repeat templates in every datagram cost a comparison, not a new layout.
        """
        known = self.templates.get(ctx.domain, template_id)
        if known is not None and known.fields == fields and known.scope_count == scope_count and known.options == options:
            known.announced = ctx.export
            self.templates.touch(ctx.domain, template_id)
            return
        new = self._new_templates.get(ctx.exporter, 0)
        if new >= self.max_new_templates:
            health.count("decode.skip.template_rate")
            self.exporter_counters.count(ctx.exporter, "template_rate")
            return
        self._new_templates[ctx.exporter] = new + 1
        template = compile_template(template_id, fields, scope_count, options)
        if template.record_len == 0:
            health.count("decode.skip.template_empty")
            return
        template.announced = ctx.export
        for item in self.templates.put(ctx.domain, template):
            self.records(item.context, template, item.body, 0, len(item.body))

    def data(self, ctx: Context, template_id: int, data: bytes | memoryview, start: int, end: int) -> int | None:
        """Queue one data set; returns its record count, None when its template is unknown."""
        tpl = self.templates.get(ctx.domain, template_id)
        if tpl is not None and self.template_lifetime and ctx.export - tpl.announced > self.template_lifetime:
            self.templates.withdraw(ctx.domain, template_id, tpl.options)
            health.count("source.netflow.template_expired")
            tpl = None
        if tpl is None:
            self.templates.hold(ctx.domain, template_id, Pending(bytes(data[start:end]), ctx))
            return None
        return self.records(ctx, tpl, data, start, end)

    def records(self, ctx: Context, tpl: Template, data: bytes | memoryview, start: int, end: int) -> int:
        """Queue the records of ``data[start:end]`` laid out by ``tpl``; returns their count."""
        if tpl.dtype is not None and tpl.record_len:
            count = (end - start) // tpl.record_len
            if count == 0:
                return 0
            if tpl.options:
                self._options(ctx, fixed_columns(np.frombuffer(data, tpl.dtype, count, start)), count)
                return count
            queued = self._queue(tpl)
            queued.chunks.append(memoryview(data)[start : start + count * tpl.record_len])
            queued.counts.append(count)
            queued.contexts.append(ctx)
            return count
        cols, count = variable_columns(tpl, data, start, end)
        if count:
            if tpl.options:
                self._options(ctx, cols, count)
            else:
                self._records += count
                owner = np.zeros(count, np.int64)
                if self.ntp_only and "frame" not in cols:
                    keep = self._ntp_rows(cols, count)
                    cols, owner = {k: v.take(keep) for k, v in cols.items()}, owner[keep]
                self._emit(tpl, cols, owner, [ctx])
        return count

    # -- options data: sampling and system init time ----------------------------
    def _options(self, ctx: Context, cols: dict[str, np.ndarray], count: int) -> None:
        health.count("source.netflow.options_records", count)
        if "sysinit_ms" in cols:
            self.sysinit.put(ctx.domain, float(cols["sysinit_ms"][-1]) / 1000.0)
        rate = _options_rate(cols)
        if rate is None:
            return
        keys = cols.get("sampler_id", cols.get("selector_id"))
        table = self.rates.get(ctx.domain) or self.rates.put(ctx.domain, {})
        for i in range(count):
            if rate[i] >= 1:
                table[int(keys[i]) if keys is not None else None] = float(rate[i])

    def _default_rate(self, ctx: Context) -> float:
        """Sampling rate of a set without per-record sampling fields: config, options data, v5 header."""
        if ctx.exporter in self.override:
            return self.override[ctx.exporter]
        table = self.rates.get(ctx.domain)
        if table:
            return table.get(None) or next(reversed(table.values()))
        return float(ctx.header_rate or 1)

    def _sampling(self, cols: dict[str, np.ndarray], contexts: list[Context], owner: np.ndarray) -> np.ndarray:
        """Per-record 1-in-N rate: config override, the record's own field, its sampler id, the domain.
        ``owner``: each record's index in ``contexts``."""
        cache: dict[tuple, float] = {}
        per_set = [cache.get((c.domain, c.header_rate)) or cache.setdefault((c.domain, c.header_rate), self._default_rate(c)) for c in contexts]
        rate = np.asarray(per_set, dtype=np.float64)[owner]
        keys = cols.get("sampler_id", cols.get("selector_id"))
        own = cols.get("sampling")
        if keys is None and own is None:
            return rate
        overridden = np.isin([c.exporter for c in contexts], list(self.override))[owner] if self.override \
            else np.zeros(len(rate), bool)
        if keys is not None:
            by_id = self._sampler_rates(keys, contexts, owner)
            rate = np.where((by_id >= 1) & ~overridden, by_id, rate)
        if own is not None:
            rate = np.where((own >= 1) & ~overridden, own.astype(np.float64), rate)
        return rate

    def _sampler_rates(self, keys: np.ndarray, contexts: list[Context], owner: np.ndarray) -> np.ndarray:
        """Rate of each record's sampler/selector id in its domain's options table (0 = unknown).

        Looked up once per distinct (domain, id) pair, not per record.
        """
        domains: dict[Domain, int] = {}
        per_set = np.array([domains.setdefault(c.domain, len(domains)) for c in contexts], dtype=np.uint64)
        pairs = (per_set[owner] << np.uint64(32)) | (keys.astype(np.uint64) & np.uint64(0xFFFF_FFFF))
        unique, inverse = np.unique(pairs, return_inverse=True)
        names = list(domains)
        found = [self.rates.get(names[int(p >> np.uint64(32))], {}).get(int(p & np.uint64(0xFFFF_FFFF)), 0.0) for p in unique]
        return np.asarray(found, dtype=np.float64)[inverse.ravel()]

    # -- flush: numpy decoding per template ------------------------------------
    def flush(self) -> Decoded:
        """Decode everything queued since the last flush."""
        for queued in self._queued.values():
            records = np.frombuffer(b"".join(queued.chunks), queued.template.dtype)
            owner = np.repeat(np.arange(len(queued.contexts)), queued.counts)
            self._records += len(records)
            if self.ntp_only and "frame" not in queued.template.roles:
                # only the fields the test reads are converted for records that are then dropped
                keep = self._ntp_rows(fixed_columns(records[[n for n in _NTP_TEST if n in records.dtype.names]]), len(records))
                records, owner = records[keep], owner[keep]
            self._emit(queued.template, fixed_columns(records), owner, queued.contexts)
        self._queued.clear()
        self._new_templates.clear()
        health.count("source.netflow.datagrams", self._datagrams)
        self._datagrams = 0
        flows = np.concatenate(self._rows) if self._rows else np.zeros(0, FLOW_DTYPE)
        header_flows = np.concatenate(self._header_rows) if self._header_rows else np.zeros(0, FLOW_DTYPE)
        frames = frames_from(self._frames) if self._frames else None
        observations = np.concatenate(self._observations) if self._observations else empty_observations()
        self._rows, self._header_rows, self._frames, self._observations = [], [], [], []
        health.count("source.netflow.records", self._records)
        health.count("source.netflow.other_records", self._other)
        self._records = self._other = 0
        return Decoded(flows, header_flows, frames, observations)

    def _ntp_rows(self, cols: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Indices of the UDP/123 records among ``n`` decoded ones; the others are counted (``other_records``)."""
        keep = np.flatnonzero(ntp_mask(cols, n))
        self._other += n - len(keep)
        return keep

    def _emit(self, tpl: Template, cols: dict[str, np.ndarray], owner: np.ndarray, contexts: list[Context]) -> None:
        """Rows (observations, flow rows or frames) of decoded records; ``owner``: each record's index in ``contexts``."""
        n = len(owner)
        sampling = self._sampling(cols, contexts, owner)
        halves = [self._halves.get(c.exporter) or self._halves.put(c.exporter, addr_halves(c.exporter)) for c in contexts]
        meta = {
            "export": np.array([c.export for c in contexts], np.float64)[owner],
            "uptime": np.array([c.uptime for c in contexts], np.int64)[owner],
            "sysinit": np.array([self.sysinit.get(c.domain, np.nan) for c in contexts], np.float64)[owner],
            "exporter_hi": np.array([h[0] for h in halves], np.uint64)[owner],
            "exporter_lo": np.array([h[1] for h in halves], np.uint64)[owner],
            "sampling": sampling,
            "version": np.array([c.domain[1] for c in contexts], np.int64)[owner],
            "owner": owner,
        }
        self.last_export = max(self.last_export, max(c.export for c in contexts))
        times = self._checked_times(cols, meta, contexts)
        if "frame" not in cols:
            columns = flow_columns(cols, meta, times)
            if self.ntp_only:  # records and flush kept only the UDP/123 records (_ntp_rows)
                self._observations.append(observations(columns))
            else:
                self._rows.append(pack(columns))
        else:
            rows = build(cols, meta, times)
            frames = [bytes(f) for f in cols["frame"]]
            size = cols.get("frame_size", np.array([len(f) for f in frames]))
            self._frames.append((frames, size, rows["end"][:n], sampling))
            header_rows = rows[:n].copy()
            fill_from_frames(header_rows, frames_from([(frames, size, 0.0, 1.0)]))
            self._header_rows.append(header_rows)

    def _checked_times(self, cols: dict[str, np.ndarray], meta: dict[str, np.ndarray],
                       contexts: list[Context]) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of each record; with ``max_time_skew`` set, a record ending more than that
        after its export, or ``MAX_RECORD_AGE`` before it, takes the export time (counted per exporter):
        kept, at a sane time, instead of moving event time years ahead."""
        start, end = flow_times(cols, meta)
        if self.max_time_skew is None:
            return start, end
        export = meta["export"]
        bad = ~((end <= export + self.max_time_skew) & (end >= export - MAX_RECORD_AGE))
        if not bad.any():
            return start, end
        end = np.where(bad, export, end)
        start = np.where(bad | ~(start <= end), end, start)
        health.count("source.netflow.records_time_clamped", int(np.count_nonzero(bad)))
        for i in np.unique(meta["owner"][bad]).tolist():
            self.exporter_counters.count(contexts[i].exporter, "records_time_clamped")
        return start, end


def _options_rate(cols: dict[str, np.ndarray]) -> np.ndarray | None:
    """1-in-N rates from options data (samplingInterval, random interval, n-in-N, size/population)."""
    if "sampling" in cols:
        return cols["sampling"].astype(np.float64)
    if "sampler_interval" in cols:
        return cols["sampler_interval"].astype(np.float64)
    if "sampling_population" in cols and "sampling_size" in cols:
        size = cols["sampling_size"].astype(np.float64)
        return np.where(size > 0, cols["sampling_population"] / np.maximum(size, 1), 0)
    if "packet_interval" in cols:
        interval = cols["packet_interval"].astype(np.float64)
        space = cols.get("packet_space", np.zeros_like(interval)).astype(np.float64)
        return np.where(interval > 0, (interval + space) / np.maximum(interval, 1), 0)
    return None
