"""A template turned into a numpy layout, and records turned into named columns.

A fixed-length template becomes one structured dtype (big-endian fields at their
offsets, ``itemsize`` = record length) holding only the fields netmon reads, so
``np.frombuffer`` decodes every record of a data set in one call. Templates with
variable-length fields (RFC 7011 section 7) are read record by record, the only
per-record Python left, and rare in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netmon import health
from netmon.sources.netflow.fields import ADDRESS6_ROLES, BYTES_ROLES, ROLES

VARIABLE = 0xFFFF

#: One template field: (IE id, enterprise number, length in bytes; 65535 = variable).
FieldSpec = tuple[int, int, int]


@dataclass
class Template:
    """A data or options template as announced by one exporter.

    ``record_len`` is None when a field has variable length. ``dtype`` is the
    structured layout of one record for fixed-length templates. ``scope_count``
    is the number of leading scope fields of an options template (0 for data).
    ``announced`` is the export time (UNIX s) of its latest announcement.
    """

    template_id: int
    fields: tuple[FieldSpec, ...]
    scope_count: int = 0
    options: bool = False
    record_len: int | None = None
    dtype: np.dtype | None = None
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)
    role_names: frozenset[str] = frozenset()
    announced: float = 0.0


def compile_template(template_id: int, fields: tuple[FieldSpec, ...], scope_count: int = 0, options: bool = False) -> Template:
    """The numpy layout of a template; the first field of each role wins."""
    roles = frozenset(ROLES[(pen, ie)] for ie, pen, _ in fields if (pen, ie) in ROLES)
    tpl = Template(template_id, fields, scope_count, options, role_names=roles)
    if any(length == VARIABLE for _, _, length in fields):
        return tpl
    names, formats, offsets = [], [], []
    offset = 0
    for ie, pen, length in fields:
        role = ROLES.get((pen, ie))
        if role and role not in tpl.roles and length > 0:
            tpl.roles[role] = (offset, length)
            if role in ADDRESS6_ROLES and length == 16:
                names += [role + "_hi", role + "_lo"]
                formats += [">u8", ">u8"]
                offsets += [offset, offset + 8]
            else:
                names.append(role)
                formats.append(_format(role, length))
                offsets.append(offset)
        offset += length
    tpl.record_len = offset
    tpl.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(offset, 1)})
    return tpl


def _format(role: str, length: int) -> str:
    if role in BYTES_ROLES:
        return f"V{length}"
    if length in (1, 2, 4, 8):
        return f">u{length}"
    return f"({length},)u1"


def _as_uint(values: np.ndarray) -> np.ndarray:
    """Big-endian integers of any width up to 8 bytes (reduced-size encoding) as native unsigned ints."""
    if values.ndim == 1:
        return values.astype(values.dtype.newbyteorder("="))
    width = min(values.shape[1], 8)
    tail = values[:, -width:].astype(np.uint64)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
    return (tail << shifts).sum(axis=1, dtype=np.uint64)


def fixed_columns(records: np.ndarray) -> dict[str, np.ndarray]:
    """Role -> column (uint64, or raw bytes for frames) of records in a template's dtype."""
    cols: dict[str, np.ndarray] = {}
    for name in records.dtype.names or ():
        values = records[name]
        cols[name] = values if values.dtype.kind == "V" else _as_uint(values)
    return cols


def _read_record(tpl: Template, data: bytes, pos: int, end: int) -> tuple[dict[str, object], int] | None:
    """The role values of one record with variable-length fields and where it ends; None if cut short."""
    values: dict[str, object] = {}
    for ie, pen, length in tpl.fields:
        if length == VARIABLE:
            if pos >= end:
                return None
            length, pos = data[pos], pos + 1
            if length == 255:
                if pos + 2 > end:
                    return None
                length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        if pos + length > end:
            return None
        role = ROLES.get((pen, ie))
        if role and role not in values and length > 0:
            raw = data[pos : pos + length]
            if role in BYTES_ROLES:
                values[role] = bytes(raw)
            elif role in ADDRESS6_ROLES and length == 16:
                values[role + "_hi"] = int.from_bytes(raw[:8], "big")
                values[role + "_lo"] = int.from_bytes(raw[8:], "big")
            else:
                values[role] = int.from_bytes(raw[-8:], "big")
        pos += length
    return values, pos


def variable_columns(tpl: Template, data: bytes, start: int, end: int) -> tuple[dict[str, np.ndarray], int]:
    """Columns of the records of a set with variable-length fields, and how many records.

    A record cut short by the set end stops the walk: zero bytes there are padding,
    anything else is counted as ``decode.skip.truncated``.
    """
    records: list[dict[str, object]] = []
    pos = start
    while pos < end:
        found = _read_record(tpl, data, pos, end)
        if found is None or found[1] == pos:
            if any(data[pos:end]):
                health.count("decode.skip.truncated")
            break
        records.append(found[0])
        pos = found[1]
    roles = {role for values in records for role in values}
    cols: dict[str, np.ndarray] = {}
    for role in roles:
        if role in BYTES_ROLES:
            cols[role] = np.array([values.get(role, b"") for values in records], dtype=object)
        else:
            cols[role] = np.array([values.get(role, 0) for values in records], dtype=np.uint64)
    return cols, len(records)
