"""The ``--namespace`` argument of ``nvmefast serve``: its grammar, from one table.

::

    ram:SIZE[:LBA][:OPT...]     null:SIZE[:LBA][:OPT...]     file:PATH[:LBA][:OPT...]

SIZE is ``4096``, ``64M``, ``1G`` (binary units); LBA is ``512`` or
``4096``; each OPT is a flag (``ro``) or ``key=value`` (``size=1G``), in any
order. The options come from :data:`OPTIONS`, one row each: the key, the
:class:`~nvmefast.NamespaceConfig` field it sets (``zones.X``: field X of
its :class:`~nvmefast.ZoneConfig`), how its value converts, which namespace
kinds take it and its help. A new namespace capability is a new row (zoned
namespaces: ``zone=16M``, ``zone-cap=``, ``max-open=``, ``max-active=``,
``zasl=``, ``zde=``, ``cross-read``; protection information: ``md=8``,
``pi=1``, ``pi-first``, ``extended``, ``guard=crc16|crc64``), and both the
parser and the command line's error messages (:mod:`nvmefast.cli_terms`)
pick it up. The other zone options need ``zone=``.

A path may hold ':'. An existing file is the path, whatever it looks like;
otherwise the fields after the path are read from the right, and reading
stops at the first that is neither an option nor an LBA size. That field
stays part of the path, unless it looks like a mistyped option (``r0``,
``sise=1G``) and the path so far names no existing file: then it is
reported, naming the options there are.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from nvmefast.config import LBA_SIZES, NamespaceConfig, ZoneConfig

__all__ = [
    "OPTIONS",
    "ZONE_PREFIX",
    "NamespaceOption",
    "NamespaceSpec",
    "options_help",
    "parse_count",
    "parse_namespace",
    "parse_size",
]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZED = ("ram", "null")
"""Namespace kinds whose size is the second field."""
USAGE = "ram:SIZE[:LBA][:OPT...], null:SIZE[:LBA][:OPT...] or file:PATH[:LBA][:OPT...]"
"""The grammar in one line, for messages."""


def parse_size(text: str) -> int:
    """Parse ``64M``, ``1G``, ``4096`` or ``512K`` (binary units) into bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 4096, 64M or 1G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _number(allowed: tuple[int, ...]) -> Callable[[str], int]:
    """A converter to an int of ``allowed``."""

    def convert(text: str) -> int:
        if not text.isdigit() or int(text) not in allowed:
            raise argparse.ArgumentTypeError(f"use one of {', '.join(map(str, allowed))}")
        return int(text)

    return convert


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A converter to one of the words ``allowed``."""

    def convert(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"use {' or '.join(allowed)}")
        return text

    return convert
def parse_count(text: str) -> int:
    """Parse a zone count: ``0`` (no limit) or more."""
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of zones; use e.g. 0 (no limit) or 4")
    return int(text)


ZONE_PREFIX = "zones."
"""A row's field ``zones.X`` is field X of the namespace's ZoneConfig."""


@dataclasses.dataclass(frozen=True)
class NamespaceOption:
    """One row of :data:`OPTIONS`: an option of ``--namespace``."""

    key: str
    """What the user types: ``ro``, or ``size`` of ``size=1G``."""
    field: str
    """The :class:`~nvmefast.NamespaceConfig` field it sets."""
    help: str
    value: str | None = None
    """The value's name in help (``SIZE``); None for a flag, which sets its field to True."""
    convert: Callable[[str], object] | None = None
    """Text to field value (raises ``argparse.ArgumentTypeError``); for options with a value."""
    example: str = ""
    """A complete example, ``size=1G``."""
    kinds: tuple[str, ...] = ("ram", "null", "file")
    """The namespace kinds that take it."""

    @property
    def form(self) -> str:
        """``ro`` or ``size=SIZE``: how help and messages write it."""
        return self.key if self.value is None else f"{self.key}={self.value}"


OPTIONS: Mapping[str, NamespaceOption] = {
    o.key: o
    for o in (
        NamespaceOption(
            "ro", "readonly", "read-only: the file is opened for reading (a shared lock: several servers "
            "may serve it), Identify reports the namespace write protected and writes fail",
            example="ro", kinds=("file",),
        ),
        NamespaceOption(
            "size", "size_bytes", "the namespace size: a missing image is created at it and a shorter one "
            "extended, both sparse (as truncate -s does); a longer one is refused, never truncated",
            value="SIZE", convert=parse_size, example="size=1G", kinds=("file",),
        ),
        # Metadata and protection information (docs/protection.md).
        NamespaceOption(
            "md", "metadata_size", "metadata bytes per block, in a separate buffer unless :extended "
            "(8 or 16; 64 with 4096-byte blocks); a file namespace keeps it in PATH.md",
            value="BYTES", convert=_number((8, 16, 64)), example="md=8",
        ),
        NamespaceOption(
            "pi", "pi_type", "protection information type 1, 2 or 3 in the metadata (0: none)",
            value="TYPE", convert=_number((0, 1, 2, 3)), example="pi=1",
        ),
        NamespaceOption(
            "pi-first", "pi_first", "protection information in the first bytes of the metadata, not the last",
            example="pi-first",
        ),
        NamespaceOption(
            "extended", "extended_lba", "metadata at the end of each block's data (an extended LBA), not "
            "in a separate buffer", example="extended",
        ),
        NamespaceOption(
            "guard", "guard", "the PI guard: crc16 (CRC-16 T10-DIF, 8-byte PI) or crc64 (CRC-64/NVME, "
            "16-byte PI: needs md=16 or more and 4096-byte blocks)",
            value="CRC", convert=_choice(("crc16", "crc64")), example="guard=crc64",
        ),
        # Zoned namespaces (docs/zoned.md).
        NamespaceOption(
            "zone", "zones.size_bytes", "zoned (the Zoned Namespace Command Set): the zone size, a power of "
            "two in LBAs dividing the namespace; Linux sees a host-managed zoned disk",
            value="SIZE", convert=parse_size, example="zone=16M",
        ),
        NamespaceOption(
            "zone-cap", "zones.capacity_bytes", "the writable part of each zone (ZCAP), at most the zone size "
            "(the default)", value="SIZE", convert=parse_size, example="zone=16M:zone-cap=12M",
        ),
        NamespaceOption(
            "max-open", "zones.max_open", "at most N zones open at once (MOR; 0, the default: no limit)",
            value="N", convert=parse_count, example="zone=16M:max-open=4",
        ),
        NamespaceOption(
            "max-active", "zones.max_active", "at most N zones open or closed at once (MAR; 0, the default: "
            "no limit), at least max-open", value="N", convert=parse_count, example="zone=16M:max-active=6",
        ),
        NamespaceOption(
            "zasl", "zones.append_size_limit", "the largest Zone Append, a power-of-two multiple of 4K of at "
            "least 8K (ZASL; default: the largest transfer, MDTS)", value="SIZE", convert=parse_size,
            example="zone=16M:zasl=128K",
        ),
        NamespaceOption(
            "zde", "zones.descriptor_extension_bytes", "bytes of host data kept with each zone (Set Zone "
            "Descriptor Extension, Extended Report Zones), a multiple of 64 (default 0: none)",
            value="BYTES", convert=parse_size, example="zone=16M:zde=64",
        ),
        NamespaceOption(
            "cross-read", "zones.cross_read", "reads may cross zone boundaries (OZCS.RAZB; default: a Zone "
            "Boundary Error)", example="zone=16M:cross-read",
        ),
    )
}
"""Every ``--namespace`` option by key; add a row for a new one."""


def options_help() -> str:
    """The options, for ``--help``."""
    return "; ".join(
        f"{o.form} ({', '.join(o.kinds)}): {o.help}" for o in OPTIONS.values()
    )


@dataclasses.dataclass(frozen=True)
class NamespaceSpec:
    """One ``--namespace`` argument, parsed into :class:`~nvmefast.NamespaceConfig` fields."""

    text: str
    """What the user typed."""
    fields: Mapping[str, Any]
    """Keyword arguments of NamespaceConfig: backend, lba_size, size_bytes or path, and the options'."""

    @property
    def backend(self) -> str:
        """``ram``, ``null`` or ``file``."""
        return str(self.fields["backend"])

    @property
    def size_bytes(self) -> int | None:
        """The size given (ram:SIZE, file's size=), or None for a file's own size."""
        size = self.fields.get("size_bytes")
        return None if size is None else int(size)

    @property
    def lba_size(self) -> int:
        """The LBA data size."""
        return int(self.fields.get("lba_size", 512))

    @property
    def path(self) -> str | None:
        """A file namespace's image file or block device."""
        path = self.fields.get("path")
        return None if path is None else str(path)

    @property
    def readonly(self) -> bool:
        """Whether ``:ro`` was given."""
        return bool(self.fields.get("readonly", False))

    def config(self, **file_fields: Any) -> NamespaceConfig:
        """The NamespaceConfig; ``file_fields`` (cache=, io=) apply to a file namespace only."""
        extra = file_fields if self.backend == "file" else {}
        fields = {k: v for k, v in self.fields.items() if not k.startswith(ZONE_PREFIX)}
        zone = {k.removeprefix(ZONE_PREFIX): v for k, v in self.fields.items() if k.startswith(ZONE_PREFIX)}
        if zone:
            fields["zones"] = ZoneConfig(**zone)
        return NamespaceConfig(**{**fields, **extra})


def _fail(text: str, why: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{text!r}: {why}")


def parse_namespace(text: str) -> NamespaceSpec:
    """Parse one ``--namespace`` argument (raises ``argparse.ArgumentTypeError`` saying what to change)."""
    kind, sep, rest = text.partition(":")
    if kind == "file":
        return _file(text, rest)
    if kind in _SIZED and sep:
        return _sized(text, kind, rest)
    raise _fail(text, f"use {USAGE}; e.g. ram:64M, null:1G:4096, file:disk.img:ro or file:new.img:size=1G")


def _sized(text: str, kind: str, rest: str) -> NamespaceSpec:
    size_text, *tail = rest.split(":")
    try:
        size = parse_size(size_text)
    except argparse.ArgumentTypeError as e:
        raise _fail(text, f"{e} (the size of a {kind} namespace comes first: {kind}:64M)") from None
    fields = _tail_fields(text, kind, tail)
    lba = int(fields.get("lba_size", 512))
    if size < lba or size % lba:
        raise _fail(text, f"the size must be a positive multiple of the {lba}-byte LBA")
    return NamespaceSpec(text, {"backend": kind, "size_bytes": size, **fields})


def _file(text: str, rest: str) -> NamespaceSpec:
    # An existing file is the path, whatever it looks like; otherwise fields
    # come off the right while they are options (a path may hold ':').
    parts = [rest] if os.path.exists(rest) else rest.split(":")
    tail: list[str] = []
    while len(parts) > 1 and (parts[-1].isdigit() or parts[-1].partition("=")[0] in OPTIONS):
        tail.insert(0, parts.pop())
    path = ":".join(parts)
    if not path:
        raise _fail(text, "name the image file or block device, e.g. file:disk.img, file:disk.img:4096, "
                          "file:/dev/sdb:ro or file:new.img:size=1G")
    if len(parts) > 1 and _looks_like_option(parts[-1]) and not os.path.exists(path):
        # 'file:disk.img:r0' meant ':ro', not a file named 'disk.img:r0'.
        raise _unknown(text, "file", parts[-1], path_note=path)
    fields = _tail_fields(text, "file", tail)
    size = fields.get("size_bytes")
    lba = int(fields.get("lba_size", 512))
    if size is not None and (size < lba or size % lba):
        raise _fail(text, f"size={size} must be a positive multiple of the {lba}-byte LBA")
    return NamespaceSpec(text, {"backend": "file", "path": path, **fields})


def _tail_fields(text: str, kind: str, tail: list[str]) -> dict[str, Any]:
    """The LBA size and options after SIZE or PATH, as NamespaceConfig fields."""
    fields: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in tail:
        if item.isdigit():
            if "lba_size" in fields:
                raise _fail(text, f"two LBA sizes ({fields['lba_size']} and {item}); give one")
            if int(item) not in LBA_SIZES:
                raise _fail(text, f"the LBA size must be 512 or 4096, got {item}")
            fields["lba_size"] = int(item)
            continue
        key, eq, value = item.partition("=")
        opt = OPTIONS.get(key)
        if opt is None:
            raise _unknown(text, kind, item)
        if key in given:
            raise _fail(text, f"{opt.form} is given twice ({given[key]!r} and {item!r}); give it once")
        given[key] = item
        if kind not in opt.kinds:
            raise _fail(text, f"{opt.form} applies to {' and '.join(opt.kinds)} namespaces, not {kind}")
        if opt.value is None:
            if eq:
                raise _fail(text, f"{key} is a flag: write :{key}, not :{item}")
            fields[opt.field] = True
            continue
        if not eq or not value:
            raise _fail(text, f"{key} takes a value: {opt.form}, e.g. :{opt.example}")
        assert opt.convert is not None
        try:
            fields[opt.field] = opt.convert(value)
        except argparse.ArgumentTypeError as e:
            raise _fail(text, f"{key}={value}: {e}") from None
    zone_options = [OPTIONS[k].form for k in given if OPTIONS[k].field.startswith(ZONE_PREFIX)]
    if zone_options and "zones.size_bytes" not in fields:
        raise _fail(text, f"{', '.join(zone_options)} describe zones: give the zone size too, e.g. :zone=16M")
    return fields


def _looks_like_option(field: str) -> bool:
    """A word or ``word=value`` (no '/' or '.') that is a key=value or close to a known option."""
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_-]*)(=.*)?", field)
    if m is None:
        return False
    return m.group(2) is not None or bool(_close(m.group(1)))


def _close(key: str) -> list[str]:
    # 'r0' and 'RO' are both a mistyped 'ro'.
    return difflib.get_close_matches(key.lower(), OPTIONS, n=1, cutoff=0.5)


def _unknown(text: str, kind: str, item: str, path_note: str = "") -> argparse.ArgumentTypeError:
    key = item.partition("=")[0]
    close = _close(key)
    hint = f" (did you mean {OPTIONS[close[0]].form}?)" if close else ""
    known = ", ".join(o.form + ("" if kind in o.kinds else f" ({' and '.join(o.kinds)} only)")
                      for o in OPTIONS.values())
    why = f"unknown option {item!r}{hint}; the options are {known}"
    if path_note:
        why += (f". If {path_note!r} is the file's name, create it first "
                f"(truncate -s 1G {path_note!r}): an existing file is always read as the path")
    return _fail(text, why)
