"""Controller and namespace configuration.

Both classes are frozen dataclasses validated on construction: a bad value
raises :class:`~nvmefast.errors.ConfigError` whose message names the field,
the value and what to change it to. ``ControllerConfig()`` alone describes a
working controller with one 64 MiB RAM namespace.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence

from nvmefast.errors import ConfigError
from nvmefast.storage import Storage

__all__ = ["ControllerConfig", "MIB", "NamespaceConfig", "ZoneConfig"]

MIB = 1 << 20
"""One mebibyte, for writing sizes."""

LBA_SIZES = (512, 4096)
METADATA_SIZES: dict[int, tuple[int, ...]] = {512: (0, 8, 16), 4096: (0, 8, 16, 64)}
"""Metadata sizes of the LBA formats, by LBA data size."""
GUARDS = ("crc16", "crc64")
"""Protection information guards: CRC-16 T10-DIF (16b) and CRC-64/NVME (64b)."""
"""LBA data sizes a namespace may use."""
BACKENDS = ("ram", "null", "file")
"""Namespace backends the core implements."""
CACHE_MODES = ("auto", "direct", "buffered")
"""``NamespaceConfig.cache`` values: O_DIRECT, the page cache, or whichever the file allows."""
IO_PATHS = ("auto", "io_uring", "threads", "inline")
"""``NamespaceConfig.io`` values: io_uring, a preadv2/pwritev2 thread pool, those calls on the
worker itself, or auto: inline for files with no asynchronous path (tmpfs), else io_uring when the
kernel allows it, else threads."""
DEFAULT_SIZE = 64 * MIB
"""The size of a ``ram`` or ``null`` namespace given no ``size_bytes``."""
MAX_NAMESPACES = 256
"""The most namespaces one controller exposes (NN)."""
MAX_MSIX_VECTORS = 2048
"""MSI-X allows at most 2048 table entries (PCI Local Bus spec, Table Size)."""


class CpuListError(ConfigError):
    """A CPU list that does not parse, or names a CPU this process may not run on."""


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"1"``, ``"0-1"``, ``"0,2-3"`` -> the CPUs in order, without repeats."""
    cpus: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo, 10)
            b = int(hi, 10) if dash else a
        except ValueError:
            raise CpuListError(f"CPU list {text!r}: {part!r} is not N or N-M") from None
        if a < 0 or b < a:
            raise CpuListError(f"CPU list {text!r}: {part!r} is not an increasing range of CPU numbers")
        cpus.extend(c for c in range(a, b + 1) if c not in cpus)
    return tuple(cpus)


def _check_cpus(name: str, cpus: object) -> tuple[int, ...]:
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence) or not cpus:
        raise CpuListError(f"{name} must be a non-empty sequence of CPU numbers or None, got {cpus!r}")
    allowed = os.sched_getaffinity(0)
    for c in cpus:
        if isinstance(c, bool) or not isinstance(c, int):
            raise CpuListError(f"{name} must hold ints, got {type(c).__name__} {c!r}")
        if c not in allowed:
            raise CpuListError(f"{name}: CPU {c} is not in this process's affinity mask {sorted(allowed)}")
    return tuple(cpus)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    # bool is an int subclass; ``max_io_queue_pairs=True`` is a mistake,
    # not a request for one queue pair.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f"..{high}"
        where = f"in {low}{upper}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {where}, got {value}")


def _check_ascii(name: str, value: object, max_len: int) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    # Identify Controller pads SN/MN/FR with spaces and the spec allows only
    # printable ASCII there (20h..7Eh).
    if not all(0x20 <= ord(c) <= 0x7E for c in value):
        raise ConfigError(f"{name} must be printable ASCII, got {value!r}")
    if len(value) > max_len:
        raise ConfigError(f"{name} must be at most {max_len} characters, got {len(value)}: {value!r}")


NO_LIMIT = 0xFFFFFFFF
"""MAR/MOR value meaning no limit (they are 0's based)."""
ZDE_MAX = 255 * 64
"""The largest Zone Descriptor Extension (ZDES is a byte of 64-byte units)."""


def size_text(n: int) -> str:
    """``n`` bytes as the command line writes sizes: ``64M``, ``1G``, or plain bytes."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


@dataclasses.dataclass(frozen=True)
class ZoneConfig:
    """The zones of a zoned namespace (NVMe Zoned Namespace Command Set).

    - ``size_bytes``: the zone size (ZSZE), a power of two of LBAs that
      divides the namespace size.
    - ``capacity_bytes``: writable bytes of each zone (ZCAP), at most the
      zone size; ``None`` means the zone size.
    - ``max_open`` / ``max_active``: most zones open / active at once (MOR + 1,
      MAR + 1); 0 means no limit. ``max_open`` may not exceed ``max_active``.
    - ``append_size_limit``: the largest Zone Append in bytes (ZASL), a
      power-of-two multiple of 4 KiB; ``None`` means MDTS.
    - ``descriptor_extension_bytes``: Zone Descriptor Extension size (ZDES
      * 64), a multiple of 64 up to 16320; 0 for none.
    - ``cross_read``: Read Across Zone Boundaries (OZCS.RAZB).

    Any backend can be zoned; a file namespace keeps its zones in
    ``PATH.zones`` beside the image.
    """

    size_bytes: int = 64 * MIB
    capacity_bytes: int | None = None
    max_open: int = 0
    max_active: int = 0
    append_size_limit: int | None = None
    descriptor_extension_bytes: int = 0
    cross_read: bool = False

    def __post_init__(self) -> None:
        _check_int("ZoneConfig.size_bytes", self.size_bytes, 1, None)
        if self.capacity_bytes is not None:
            _check_int("ZoneConfig.capacity_bytes", self.capacity_bytes, 1, None)
            if self.capacity_bytes > self.size_bytes:
                raise ConfigError(
                    f"ZoneConfig.capacity_bytes {self.capacity_bytes} is above the zone size {self.size_bytes}; "
                    "give at most size_bytes, or None for the whole zone"
                )
        _check_int("ZoneConfig.max_open", self.max_open, 0, NO_LIMIT - 1)
        _check_int("ZoneConfig.max_active", self.max_active, 0, NO_LIMIT - 1)
        if self.max_open and self.max_active and self.max_open > self.max_active:
            raise ConfigError(
                f"ZoneConfig.max_open {self.max_open} is above max_active {self.max_active} (MOR may not exceed "
                "MAR); lower max_open or raise max_active"
            )
        if self.append_size_limit is not None:
            _check_int("ZoneConfig.append_size_limit", self.append_size_limit, 1, None)
            zasl = self.append_size_limit
            if zasl < 8192 or zasl & (zasl - 1):
                raise ConfigError(
                    f"ZoneConfig.append_size_limit {zasl} must be a power-of-two multiple of 4096 of at least "
                    "8192 (8K, 16K, ... 128K): ZASL 0 means MDTS, so 4K cannot be reported; use None for MDTS"
                )
        _check_int("ZoneConfig.descriptor_extension_bytes", self.descriptor_extension_bytes, 0, ZDE_MAX)
        if self.descriptor_extension_bytes % 64:
            raise ConfigError(
                f"ZoneConfig.descriptor_extension_bytes {self.descriptor_extension_bytes} must be a multiple of "
                "64 (ZDES counts 64-byte units)"
            )
        if not isinstance(self.cross_read, bool):
            raise ConfigError(f"ZoneConfig.cross_read must be a bool, got {type(self.cross_read).__name__}")

    @property
    def capacity(self) -> int:
        """``capacity_bytes`` with ``None`` resolved to the zone size."""
        return self.size_bytes if self.capacity_bytes is None else self.capacity_bytes

    def check(self, lba_size: int, namespace_bytes: int | None) -> None:
        """Raise :class:`ConfigError` unless the zones fit a namespace of
        ``namespace_bytes`` (None: not known yet) in ``lba_size`` blocks."""
        if self.size_bytes % lba_size:
            raise ConfigError(
                f"ZoneConfig.size_bytes {self.size_bytes} is not a multiple of the {lba_size}-byte LBA size"
            )
        lbas = self.size_bytes // lba_size
        if lbas & (lbas - 1):
            lower = 1 << (lbas.bit_length() - 1)
            raise ConfigError(
                f"ZoneConfig.size_bytes {self.size_bytes} is {lbas} LBAs, not a power of two (Linux needs one); "
                f"use {size_text(lower * lba_size)} or {size_text(2 * lower * lba_size)}"
            )
        if self.capacity % lba_size:
            raise ConfigError(
                f"ZoneConfig.capacity_bytes {self.capacity} is not a multiple of the {lba_size}-byte LBA size"
            )
        if namespace_bytes is None:
            return
        if namespace_bytes % self.size_bytes:
            whole = max(namespace_bytes // self.size_bytes, 1) * self.size_bytes
            raise ConfigError(
                f"ZoneConfig.size_bytes {size_text(self.size_bytes)} does not divide the namespace size "
                f"{size_text(namespace_bytes)}; make the namespace a multiple of the zone size (e.g. "
                f"{size_text(whole)}) or pick a zone size that divides it"
            )
        zones = namespace_bytes // self.size_bytes
        for name, value in (("max_open", self.max_open), ("max_active", self.max_active)):
            if value > zones:
                raise ConfigError(
                    f"ZoneConfig.{name} {value} is above the zone count {zones}; use 0 (no limit) or at most {zones}"
                )

    def zone_lbas(self, lba_size: int) -> int:
        """ZSZE: the zone size in logical blocks."""
        return self.size_bytes // lba_size

    def capacity_lbas(self, lba_size: int) -> int:
        """ZCAP: writable logical blocks of each zone."""
        return self.capacity // lba_size

    @property
    def zdes(self) -> int:
        """ZDES: the Zone Descriptor Extension size in 64-byte units."""
        return self.descriptor_extension_bytes // 64

    @property
    def mor(self) -> int:
        """MOR, 0's based (FFFFFFFFh: no limit)."""
        return self.max_open - 1 if self.max_open else NO_LIMIT

    @property
    def mar(self) -> int:
        """MAR, 0's based (FFFFFFFFh: no limit)."""
        return self.max_active - 1 if self.max_active else NO_LIMIT

    def zasl(self, mpsmin: int = 4096) -> int:
        """ZASL: the Zone Append size limit as a power of two of ``mpsmin``; 0 means MDTS."""
        if self.append_size_limit is None:
            return 0
        return (self.append_size_limit // mpsmin).bit_length() - 1

    def engine_dict(self) -> dict[str, int | bool]:
        """The core's ``zones`` namespace entry."""
        return {
            "size_bytes": self.size_bytes,
            "capacity_bytes": self.capacity_bytes or 0,
            "max_open": self.max_open,
            "max_active": self.max_active,
            "append_size_limit": self.append_size_limit or 0,
            "descriptor_extension_bytes": self.descriptor_extension_bytes,
            "cross_read": self.cross_read,
        }


@dataclasses.dataclass(frozen=True)
class NamespaceConfig:
    """One namespace: its size, LBA data size and backend.

    ``backend`` is ``"ram"`` (data kept in memory, the default), ``"null"``
    (like SPDK's null bdev: writes are discarded and reads transfer no data,
    leaving the host's buffer as it was; for measuring the controller's own
    cost per command), ``"file"`` (a raw image file or a block device at
    ``path``, whose data outlives the process) or an object with
    ``read(lba, nlb)`` and ``write(lba, data)`` methods (see
    :class:`nvmefast.Storage`), called on the worker for each command. ``lba_size`` is 512 or 4096.

    ``size_bytes`` is a positive multiple of ``lba_size``. For ``ram`` and
    ``null`` it defaults to 64 MiB. For ``file``, ``None`` (the default)
    means the size of the file or block device, which must then exist; a
    size creates a missing regular file or extends a shorter one (sparse,
    as ``qemu-img create -f raw`` does), and a file longer than it is an
    error. :attr:`nvmefast.Controller.config` holds the resolved size.

    File namespaces only:

    - ``path``: the image file or block device (``str`` or path-like).
    - ``readonly``: open it read-only (shared lock, so several read-only
      controllers may share it); Identify reports the namespace write
      protected and writes fail with Namespace Is Write Protected.
    - ``cache``: ``"direct"`` (O_DIRECT: no page cache), ``"buffered"``
      (through the page cache) or ``"auto"`` (direct when the file system
      accepts it and ``lba_size`` is at least the device's logical block
      size, else buffered).
    - ``io``: ``"io_uring"``, ``"threads"`` (a ``preadv2``/``pwritev2``
      thread pool) or ``"auto"`` (io_uring unless the kernel or a seccomp
      filter refuses it; the environment variable
      ``NVMEFAST_FILE_IO=threads|io_uring`` overrides ``auto``).

    Metadata and end-to-end protection (any backend; see docs/protection.md):

    - ``metadata_size``: metadata bytes per block, 0 (none, the default),
      8 or 16 (with 512-byte LBAs), 8, 16 or 64 (with 4096-byte LBAs).
    - ``extended_lba``: the metadata is interleaved with the data (an
      extended LBA) rather than a separate buffer (MPTR).
    - ``pi_type``: protection information type 0 (none), 1, 2 or 3.
    - ``pi_first``: the PI is the first bytes of the metadata (else the last).
    - ``guard``: ``"crc16"`` (8-byte tuple, CRC-16 T10-DIF) or ``"crc64"``
      (16-byte tuple, CRC-64/NVME; needs metadata_size 16 or more and
      4096-byte LBAs).

    A file namespace keeps its metadata in a companion file, ``PATH.md``; a
    storage object needs ``read_metadata(lba, nlb)`` and
    ``write_metadata(lba, data)`` for it.

    ``zones``: a :class:`ZoneConfig` makes the namespace zoned (any
    backend; see docs/zoned.md); its zone size must divide the namespace
    size. A zoned namespace has no metadata.

    What can be checked without opening the file is checked here (a path
    that is a directory, a missing file without a size, a regular file
    whose length is not a multiple of ``lba_size`` or exceeds
    ``size_bytes``); the core checks again, and the rest (permission,
    another process holding the file), when a Controller opens it.
    """

    size_bytes: int | None = None
    lba_size: int = 512
    backend: str | Storage = "ram"
    path: str | os.PathLike[str] | None = None
    readonly: bool = False
    cache: str = "auto"
    io: str = "auto"
    metadata_size: int = 0
    extended_lba: bool = False
    pi_type: int = 0
    pi_first: bool = False
    guard: str = "crc16"
    zones: ZoneConfig | None = None

    def __post_init__(self) -> None:
        _check_int("NamespaceConfig.lba_size", self.lba_size, 1, None)
        if self.lba_size not in LBA_SIZES:
            raise ConfigError(
                f"NamespaceConfig.lba_size must be one of {LBA_SIZES}, got {self.lba_size}"
            )
        self._check_metadata()
        self._check_fields()
        if self.zones is not None:
            if not isinstance(self.zones, ZoneConfig):
                raise ConfigError(f"NamespaceConfig.zones must be a ZoneConfig or None, got {type(self.zones).__name__}")
            if self.metadata_size:
                raise ConfigError(
                    "NamespaceConfig.zones and metadata_size: a zoned namespace cannot have metadata or protection "
                    "information (yet); drop the zones or set metadata_size=0"
                )
            self.zones.check(self.lba_size, self.size_bytes)

    def _check_fields(self) -> None:
        if not isinstance(self.backend, str):
            self._check_storage()
            return
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"NamespaceConfig.backend must be one of {BACKENDS}, got {self.backend!r}"
            )
        if self.size_bytes is None and self.backend != "file":
            # frozen: object.__setattr__ is the documented way to normalise
            # in __post_init__.
            object.__setattr__(self, "size_bytes", DEFAULT_SIZE)
        if self.size_bytes is not None:
            hint = " (or None for the size of the file)" if self.backend == "file" else ""
            if not isinstance(self.size_bytes, int) or isinstance(self.size_bytes, bool) or self.size_bytes < 1:
                raise ConfigError(
                    f"NamespaceConfig.size_bytes must be a positive int{hint}, "
                    f"got {type(self.size_bytes).__name__} {self.size_bytes!r}"
                )
            if self.size_bytes % self.lba_size:
                raise ConfigError(
                    f"NamespaceConfig.size_bytes must be a multiple of lba_size {self.lba_size}, "
                    f"got {self.size_bytes} (try {self.size_bytes - self.size_bytes % self.lba_size or self.lba_size})"
                )
        if not isinstance(self.readonly, bool):
            raise ConfigError(f"NamespaceConfig.readonly must be a bool, got {type(self.readonly).__name__}")
        for name, value, choices in (("cache", self.cache, CACHE_MODES), ("io", self.io, IO_PATHS)):
            if value not in choices:
                raise ConfigError(f"NamespaceConfig.{name} must be one of {choices}, got {value!r}")
        if self.backend == "file":
            self._check_file()
            return
        if self.path is not None:
            raise ConfigError(
                f"NamespaceConfig.path is for backend 'file'; a {self.backend!r} namespace has no file "
                f"(drop path={self.path!r}, or set backend='file')"
            )
        given = [name for name, value in (("readonly", self.readonly), ("cache", self.cache != "auto"),
                                          ("io", self.io != "auto")) if value]
        if given:
            raise ConfigError(
                f"NamespaceConfig.{given[0]} applies to backend 'file' only; drop it for a {self.backend!r} namespace"
            )

    def _check_metadata(self) -> None:
        _check_int("NamespaceConfig.metadata_size", self.metadata_size, 0, None)
        _check_int("NamespaceConfig.pi_type", self.pi_type, 0, None)
        for name in ("extended_lba", "pi_first"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"NamespaceConfig.{name} must be a bool, got {getattr(self, name)!r}")
        sizes = METADATA_SIZES[self.lba_size]
        if self.metadata_size not in sizes:
            raise ConfigError(
                f"NamespaceConfig.metadata_size {self.metadata_size} is not an LBA format with lba_size "
                f"{self.lba_size}; use one of {sizes}"
            )
        if self.pi_type not in (0, 1, 2, 3):
            raise ConfigError(f"NamespaceConfig.pi_type must be 0 (none), 1, 2 or 3, got {self.pi_type}")
        if self.guard not in GUARDS:
            raise ConfigError(f"NamespaceConfig.guard must be one of {GUARDS}, got {self.guard!r}")
        if self.extended_lba and not self.metadata_size:
            raise ConfigError("NamespaceConfig.extended_lba needs metadata: set metadata_size, or drop extended_lba")
        if not self.pi_type:
            if self.pi_first:
                raise ConfigError("NamespaceConfig.pi_first needs protection information: set pi_type, or drop pi_first")
            if self.guard != "crc16":
                raise ConfigError("NamespaceConfig.guard='crc64' needs protection information: set pi_type 1, 2 or 3")
            return
        if self.guard == "crc64":
            if self.lba_size != 4096:
                raise ConfigError(
                    f"NamespaceConfig.guard='crc64' needs lba_size 4096 (64-bit guard formats are for 4 KiB "
                    f"LBAs and larger), got {self.lba_size}"
                )
            if self.metadata_size < 16:
                raise ConfigError(
                    f"NamespaceConfig.guard='crc64' needs metadata_size 16 or more for its 16-byte tuple, "
                    f"got {self.metadata_size}"
                )
        elif self.metadata_size < 8:
            raise ConfigError(
                f"NamespaceConfig.pi_type {self.pi_type} needs metadata_size 8 or more for its 8-byte tuple "
                f"(set metadata_size=8), got {self.metadata_size}"
            )

    def _check_storage(self) -> None:
        missing = [m for m in ("read", "write") if not callable(getattr(self.backend, m, None))]
        if missing:
            raise ConfigError(
                f"NamespaceConfig.backend must be 'ram', 'null', 'file' or a storage object with read(lba, nlb) "
                f"and write(lba, data) (see nvmefast.Storage); {type(self.backend).__name__} has no "
                f"{' or '.join(m + '()' for m in missing)}"
            )
        if self.metadata_size:
            lacking = [m for m in ("read_metadata", "write_metadata") if not callable(getattr(self.backend, m, None))]
            if lacking:
                raise ConfigError(
                    f"NamespaceConfig.metadata_size needs a storage object with read_metadata(lba, nlb) and "
                    f"write_metadata(lba, data) (see nvmefast.Storage); {type(self.backend).__name__} has no "
                    f"{' or '.join(m + '()' for m in lacking)}: add them, or drop metadata_size"
                )
        if self.size_bytes is None:
            object.__setattr__(self, "size_bytes", DEFAULT_SIZE)
        _check_int("NamespaceConfig.size_bytes", self.size_bytes, 1, None)
        assert self.size_bytes is not None
        if self.size_bytes % self.lba_size:
            raise ConfigError(
                f"NamespaceConfig.size_bytes must be a multiple of lba_size {self.lba_size}, got {self.size_bytes}"
            )
        if self.path is not None or self.readonly or self.cache != "auto" or self.io != "auto":
            raise ConfigError("NamespaceConfig.path, readonly, cache and io apply to backend 'file' only; "
                              "drop them for a storage object")

    def _check_file(self) -> None:
        if self.path is None:
            raise ConfigError(
                "NamespaceConfig.path is required for backend 'file': "
                "give the image file or block device, e.g. path='disk.img'"
            )
        if not isinstance(self.path, (str, os.PathLike)) or isinstance(self.path, bytes):
            raise ConfigError(
                f"NamespaceConfig.path must be a str or os.PathLike, got {type(self.path).__name__} {self.path!r}"
            )
        path = os.fspath(self.path)
        if not isinstance(path, str) or not path:
            raise ConfigError(f"NamespaceConfig.path must name a file, got {self.path!r}")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self.size_bytes is None:
                raise ConfigError(
                    f"{path}: no such file; create it (truncate -s 1G {path}, or qemu-img create -f raw "
                    f"{path} 1G) or give NamespaceConfig.size_bytes to have it created, sparse"
                ) from None
            if self.readonly:
                raise ConfigError(
                    f"{path}: no such file, and a read-only namespace cannot create it; create it first "
                    "or drop readonly=True"
                ) from None
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigError(f"{path}: directory {parent} does not exist; create it or choose another path")
            return
        except OSError as e:
            # Permission on a parent, a loop of links, ...: the core says
            # more when it opens the file; say what stat said.
            raise ConfigError(f"{path}: cannot stat it ({e.strerror}); fix the path or its permissions") from None
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"{path} is a directory; give an image file or a block device, "
                f"e.g. path={os.path.join(path, 'disk.img')!r}"
            )
        if not stat.S_ISREG(st.st_mode):
            return  # a block device (or /dev/full): its size is the core's to find
        if st.st_size == 0 and self.size_bytes is None:
            raise ConfigError(
                f"{path} is empty; give size_bytes to extend it (sparse), or extend it yourself "
                f"(truncate -s 1G {path})"
            )
        if st.st_size % self.lba_size:
            fixed = st.st_size - st.st_size % self.lba_size + self.lba_size
            other = " or use lba_size=512" if st.st_size % 512 == 0 else ""
            raise ConfigError(
                f"{path}: size {st.st_size} is not a multiple of the {self.lba_size}-byte LBA size; "
                f"extend it to {fixed} bytes (truncate -s {fixed} {path}){other}"
            )
        if self.size_bytes is not None and st.st_size > self.size_bytes:
            raise ConfigError(
                f"{path}: the file holds {st.st_size} bytes, more than size_bytes {self.size_bytes}; "
                "nvmefast never truncates an image: give size_bytes >= the file's size, or None for its size"
            )
        if self.size_bytes is not None and self.readonly and st.st_size < self.size_bytes:
            raise ConfigError(
                f"{path}: the file holds {st.st_size} bytes, less than size_bytes {self.size_bytes}, and a "
                "read-only namespace cannot extend it; drop size_bytes or readonly=True"
            )

    @property
    def lbas(self) -> int:
        """The namespace size in logical blocks (NSZE).

        Raises :class:`ConfigError` for a file namespace whose size comes
        from the file and is not known yet: read it from
        :attr:`nvmefast.Controller.config`, where it is resolved.
        """
        return self.size // self.lba_size

    @property
    def size(self) -> int:
        """``size_bytes`` as an int; see :attr:`lbas` for when it is not known."""
        if self.size_bytes is None:
            raise ConfigError(
                f"the size of file namespace {os.fspath(self.path or '')!r} is that of the file, known once a "
                "Controller opened it: use Controller.config.namespaces[i].size_bytes"
            )
        return self.size_bytes


def _check_shared_files(namespaces: Sequence[NamespaceConfig]) -> None:
    # Two writable namespaces on one file would each lock it and the second
    # would fail in the core with a message about "another process"; say
    # what is really wrong. Read-only ones share the file as they may.
    seen: dict[str, int] = {}
    for i, ns in enumerate(namespaces):
        if ns.backend != "file" or ns.path is None:
            continue
        key = os.path.realpath(os.fspath(ns.path))
        if key in seen:
            j = seen[key]
            if not (ns.readonly and namespaces[j].readonly):
                raise ConfigError(
                    f"ControllerConfig.namespaces[{j}] and [{i}] both use {key}; give each namespace a "
                    "file of its own, or make both read-only (readonly=True)"
                )
        else:
            seen[key] = i


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """A controller: its namespaces, identity strings, queue and interrupt limits.

    - ``namespaces``: 1..256 :class:`NamespaceConfig`, NSIDs 1.. in order
      (a list is accepted and stored as a tuple). A file may back two
      namespaces only when both are read-only.
    - ``serial`` (<= 20), ``model`` (<= 40), ``firmware`` (<= 8): printable
      ASCII for Identify Controller SN, MN and FR.
    - ``max_io_queue_pairs``: I/O SQ/CQ pairs the host may create (1..65535).
    - ``msix_vectors``: MSI-X table size (1..2048); ``None`` means one per
      I/O queue pair plus the admin vector, capped at 2048.
    - ``max_queue_entries``: the largest queue (CAP.MQES + 1), 2..65536.
    - ``mdts``: Maximum Data Transfer Size as a power of two of 4 KiB pages
      (0..15); 0 means unlimited.
    - ``doorbell_stride``: CAP.DSTRD (0..15); doorbells are ``4 << stride``
      bytes apart.
    - ``poll_us``: how long the worker polls for more work before sleeping.
    - ``aerl``: Asynchronous Event Request Limit, 0-based (0..255).
    - ``volatile_write_cache``: report a volatile write cache (VWC) and
      start with it enabled: writes to a file namespace complete once the
      kernel has them and a Flush (or FUA) makes them durable. ``False``,
      or the host turning the Volatile Write Cache feature off, makes every
      write durable before its completion (RWF_DSYNC).
    - ``msix_bar``: where the device emulates the MSI-X table and PBA.
      ``None`` (default): the embedder owns the MSI-X capability and table
      (a vfio-user client such as QEMU, or a test): vectors start enabled
      and unmasked and ``Controller.mask_vector`` masks them. ``0``: table
      and PBA live in BAR0 above the doorbells. ``1``..``5``: they live in
      a BAR of their own, reached through ``Controller.msix_bar_read`` /
      ``msix_bar_write``. With a device table, MSI-X starts in the PCI
      reset state (disabled, every entry masked) until the host enables it.
    - ``iothreads``: I/O worker threads (1..64). The admin queue has a
      worker of its own that only wakes for admin doorbells.
    - ``iothread_affinity``: explicit CQ-to-iothread mapping, a sequence
      whose item ``i`` is the iothread (0-based) of CQ ``i + 1``; CQs past
      its end are assigned round robin. SQs go with their CQ.
    - ``cpus``: CPUs for the I/O worker threads, round robin (a sequence of
      CPU numbers, each in the process's affinity mask); ``None`` (default):
      no pinning. See :func:`parse_cpu_list` for ``"0-1,3"`` strings.
    - ``polling``: ``"adaptive"`` (poll ``poll_us`` after the last work, or
      while work keeps arriving a few times the recent gap between
      arrivals, up to 400 us, 1 ms with a scanned doorbell page; then sleep
      until a doorbell; a worker preempted while it polls naps 30 us
      between looks instead of spinning), ``"interrupt"`` (never poll) or
      ``"poll"`` (never sleep: for benchmarks and doorbell pages written
      without an ioeventfd).
    - ``capacity_bytes``: the NVM capacity of the subsystem (Identify
      TNVMCAP), which the configured namespaces and those created by
      Namespace Management or added by ``Controller.add_namespace`` draw on
      (each its size in bytes); what is left is UNVMCAP. ``None`` (default):
      what the configured namespaces take, so a host can create namespaces
      only after deleting some, while the embedder's added namespaces raise
      it. With a capacity ``namespaces`` may be empty.
    - ``namespace_dir``: a directory (created if missing; its parent must
      exist) where namespaces the host creates live as image files, and a
      manifest with their NSIDs and attachment that a controller started
      later with the same directory finds again (docs/namespaces.md).
      ``None`` (default): created namespaces live in RAM, allocated as
      written, and go with the controller. With a directory ``namespaces``
      may be empty.
    - ``multi_controller``: claim, in Identify, that the NVM subsystem may
      have more controllers (CMIC bit 1) and that every namespace may be
      attached to more than one (NMIC bit 0). Off by default: Linux answers
      the claim by stacking a multipath block device on top, which costs a
      TCG guest about half its throughput at QD 4-64 for nothing when there
      is one controller. SPDK's target always claims it.
    """

    namespaces: Sequence[NamespaceConfig] = (NamespaceConfig(),)
    serial: str = "NVMEFAST0001"
    model: str = "nvmefast emulated NVMe"
    firmware: str = "0.1.0"
    max_io_queue_pairs: int = 8
    msix_vectors: int | None = None
    max_queue_entries: int = 1024
    mdts: int = 5
    doorbell_stride: int = 0
    poll_us: int = 50
    aerl: int = 3
    volatile_write_cache: bool = True
    msix_bar: int | None = None
    iothreads: int = 1
    iothread_affinity: Sequence[int] = ()
    polling: str = "adaptive"
    multi_controller: bool = False
    cpus: Sequence[int] | None = None
    capacity_bytes: int | None = None
    namespace_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        namespaces = self.namespaces
        if isinstance(namespaces, NamespaceConfig) or not isinstance(namespaces, Sequence):
            raise ConfigError(
                "ControllerConfig.namespaces must be a list or tuple of NamespaceConfig, "
                f"got {type(namespaces).__name__}"
            )
        # frozen: object.__setattr__ is the documented way to normalise in
        # __post_init__; a tuple keeps the config hashable and immutable.
        object.__setattr__(self, "namespaces", tuple(namespaces))
        self._check_capacity()
        fewest = 0 if self.capacity_bytes is not None or self.namespace_dir is not None else 1
        if not fewest <= len(self.namespaces) <= MAX_NAMESPACES:
            raise ConfigError(
                f"ControllerConfig.namespaces must hold {fewest}..{MAX_NAMESPACES} namespaces, "
                f"got {len(self.namespaces)}"
                + ("" if fewest == 0 else "; give capacity_bytes (or namespace_dir) to start with none")
            )
        for i, ns in enumerate(self.namespaces):
            if not isinstance(ns, NamespaceConfig):
                raise ConfigError(
                    f"ControllerConfig.namespaces[{i}] must be a NamespaceConfig, "
                    f"got {type(ns).__name__}"
                )
        _check_shared_files(self.namespaces)
        _check_ascii("ControllerConfig.serial", self.serial, 20)
        _check_ascii("ControllerConfig.model", self.model, 40)
        _check_ascii("ControllerConfig.firmware", self.firmware, 8)
        _check_int("ControllerConfig.max_io_queue_pairs", self.max_io_queue_pairs, 1, 65535)
        # None stays None (resolved by ``vectors``) so that
        # dataclasses.replace(config, max_io_queue_pairs=...) still follows it.
        if self.msix_vectors is not None:
            _check_int("ControllerConfig.msix_vectors", self.msix_vectors, 1, MAX_MSIX_VECTORS)
        _check_int("ControllerConfig.max_queue_entries", self.max_queue_entries, 2, 65536)
        _check_int("ControllerConfig.mdts", self.mdts, 0, 15)
        _check_int("ControllerConfig.doorbell_stride", self.doorbell_stride, 0, 15)
        _check_int("ControllerConfig.poll_us", self.poll_us, 0, None)
        _check_int("ControllerConfig.aerl", self.aerl, 0, 255)
        if self.msix_bar is not None:
            _check_int("ControllerConfig.msix_bar", self.msix_bar, 0, 5)
        _check_int("ControllerConfig.iothreads", self.iothreads, 1, 64)
        if isinstance(self.iothread_affinity, (str, bytes)) or not isinstance(self.iothread_affinity, Sequence):
            raise ConfigError("ControllerConfig.iothread_affinity must be a sequence of iothread indexes")
        object.__setattr__(self, "iothread_affinity", tuple(self.iothread_affinity))
        if len(self.iothread_affinity) > self.max_io_queue_pairs:
            raise ConfigError(
                f"ControllerConfig.iothread_affinity maps {len(self.iothread_affinity)} CQs, "
                f"more than max_io_queue_pairs ({self.max_io_queue_pairs})"
            )
        for i, t in enumerate(self.iothread_affinity):
            _check_int(f"ControllerConfig.iothread_affinity[{i}]", t, 0, self.iothreads - 1)
        if self.cpus is not None:
            object.__setattr__(self, "cpus", _check_cpus("ControllerConfig.cpus", self.cpus))
        if not isinstance(self.multi_controller, bool):
            raise ConfigError(f"ControllerConfig.multi_controller must be a bool, got {self.multi_controller!r}")
        if self.polling not in ("adaptive", "interrupt", "poll"):
            raise ConfigError(
                f"ControllerConfig.polling must be 'adaptive', 'interrupt' or 'poll', got {self.polling!r}"
            )
        if not isinstance(self.volatile_write_cache, bool):
            raise ConfigError(
                "ControllerConfig.volatile_write_cache must be a bool, "
                f"got {type(self.volatile_write_cache).__name__}"
            )

    def _check_capacity(self) -> None:
        if self.capacity_bytes is not None:
            _check_int("ControllerConfig.capacity_bytes", self.capacity_bytes, 1, None)
            # File namespaces of their file's size are checked once opened (the Controller does).
            known = sum(ns.size_bytes or 0 for ns in self.namespaces if isinstance(ns, NamespaceConfig))
            if known > self.capacity_bytes:
                raise ConfigError(
                    f"ControllerConfig.capacity_bytes {size_text(self.capacity_bytes)} is less than the "
                    f"configured namespaces take ({size_text(known)}); raise it to at least that"
                )
        if self.namespace_dir is not None:
            if not isinstance(self.namespace_dir, (str, os.PathLike)) or isinstance(self.namespace_dir, bytes):
                raise ConfigError(
                    f"ControllerConfig.namespace_dir must be a str or os.PathLike, got "
                    f"{type(self.namespace_dir).__name__} {self.namespace_dir!r}"
                )
            path = os.fspath(self.namespace_dir)
            if not path:
                raise ConfigError("ControllerConfig.namespace_dir must name a directory, got ''")
            if os.path.exists(path) and not os.path.isdir(path):
                raise ConfigError(f"ControllerConfig.namespace_dir {path!r} is not a directory; give a directory")

    @property
    def vectors(self) -> int:
        """The MSI-X table size, with the ``None`` default resolved."""
        if self.msix_vectors is None:
            return min(self.max_io_queue_pairs + 1, MAX_MSIX_VECTORS)
        return self.msix_vectors

    @property
    def mdts_bytes(self) -> int:
        """The largest data transfer in bytes, 0 when unlimited."""
        return (4096 << self.mdts) if self.mdts else 0
