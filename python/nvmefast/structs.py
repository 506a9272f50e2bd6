"""Identify data structures and log pages: builders and parsers.

Builders produce the exact bytes the controller transfers to the host; the
offsets are those of NVMe Base Specification 2.0 (Figure 275 Identify
Controller, Figure 206 Error Information, Figure 207 SMART / Health
Information, Figure 209 Firmware Slot Information) and NVM Command Set
Specification 1.0 (Figure 97 Identify Namespace). The I/O Command Set
structures (CNS 05h/06h/08h/1Ch, the Changed Namespace List and the Commands
Supported and Effects log) are in :mod:`nvmefast.iocs`. Parsers turn those bytes back into dataclasses for the host
driver in ``nvmefast.testing`` and for tests; they read the spec's offsets,
not the builders' internals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import uuid
from collections.abc import Sequence

from nvmefast.config import ControllerConfig, NamespaceConfig
from nvmefast.lba_format import CTRATT_ELBAS, DPC, MC, NamespaceFormat, lbaf, metadata_available
from nvmefast.lba_format import LBA_FORMATS as _FORMATS
from nvmefast.namespaces import MNAN, NN

__all__ = [
    "CSI_NVM",
    "DLFEAT",
    "ERROR_LOG_ENTRY_SIZE",
    "IDENTIFY_SIZE",
    "LBA_FORMATS",
    "MCL",
    "MSRC",
    "MSSRL",
    "NSATTR_WRITE_PROTECTED",
    "NVME_VERSION",
    "ONCS",
    "SGLS",
    "ErrorLogEntry",
    "FirmwareSlotLog",
    "NamespaceIds",
    "SmartLog",
    "build_active_ns_list",
    "build_error_log",
    "build_firmware_slot_log",
    "build_identify_controller",
    "build_identify_namespace",
    "build_ns_id_descriptors",
    "build_smart_log",
    "lba_format_index",
    "namespace_ids",
]

IDENTIFY_SIZE = 4096
"""Every Identify data structure is 4 KiB."""
ERROR_LOG_ENTRY_SIZE = 64
"""One Error Information log entry."""
SMART_LOG_SIZE = 512
"""The SMART / Health Information log page."""
FIRMWARE_SLOT_LOG_SIZE = 512
"""The Firmware Slot Information log page."""

NVME_VERSION = 0x00020000
"""NVMe 2.0.0, as reported in VS and Identify Controller VER."""

PCI_VENDOR_ID = 0x4E58
"""Identify VID. The PCI face (vfio-user config space) must report the same."""
PCI_SUBSYSTEM_VENDOR_ID = 0x4E58
"""Identify SSVID. The PCI face must report the same."""
IEEE_OUI = 0x525400
"""The OUI in Identify IEEE and the top of every EUI-64 (locally administered)."""
SUBNQN_PREFIX = "nqn.2025-01.dev.nvmefast:"
"""Identify SUBNQN is this followed by the serial number."""

ELPE = 63
"""Error Log Page Entries, 0-based: the Error Information log holds 64 entries."""
ACL = 3
"""Abort Command Limit, 0-based."""
WCTEMP = 343
"""Warning Composite Temperature Threshold, Kelvin (70 C)."""
CCTEMP = 373
"""Critical Composite Temperature Threshold, Kelvin (100 C)."""
COMPOSITE_TEMPERATURE = 310
"""The composite temperature the SMART log reports, Kelvin (37 C)."""

LBA_FORMATS = tuple(f.lba_size for f in _FORMATS)
"""The LBA data size of each LBA Format, by index (0: 512, 1: 4096, neither
with metadata; the formats with metadata, and which, are
:data:`nvmefast.lba_format.LBA_FORMATS`)."""

# Copy limits (Identify Namespace), in logical blocks of the current format.
# The core enforces exactly these: change them together with rust/cmd.
MSSRL = 256
"""Maximum Single Source Range Length of a Copy, in logical blocks."""
MCL = 4096
"""Maximum Copy Length (all source ranges together), in logical blocks."""
MSRC = 127
"""Maximum Source Range Count of a Copy, 0's based (128 ranges)."""

DLFEAT = 0x09
"""Deallocate Logical Block Features: bit 3 Write Zeroes may deallocate
(DEAC), bits 2:0 = 001b deallocated blocks read as all 00h (their metadata
too, but for protection information); bit 4 clear: the PI of a deallocated
block is all FFh (guard FFFFh: the escape, so checks pass)."""

ONCS_COMPARE = 1 << 0
"""ONCS bit 0: Compare."""
ONCS_WRITE_UNCORRECTABLE = 1 << 1
"""ONCS bit 1: Write Uncorrectable."""
ONCS_DSM = 1 << 2
"""ONCS bit 2: Dataset Management."""
ONCS_WRITE_ZEROES = 1 << 3
"""ONCS bit 3: Write Zeroes."""
ONCS_SAVE_SELECT = 1 << 4
"""ONCS bit 4: Set Features Save and Get Features Select are honoured."""
ONCS_TIMESTAMP = 1 << 6
"""ONCS bit 6: the Timestamp feature."""
ONCS_VERIFY = 1 << 7
"""ONCS bit 7: Verify."""
ONCS_COPY = 1 << 8
"""ONCS bit 8: Copy."""
ONCS = (
    ONCS_COMPARE | ONCS_WRITE_UNCORRECTABLE | ONCS_DSM | ONCS_WRITE_ZEROES | ONCS_SAVE_SELECT | ONCS_TIMESTAMP | ONCS_VERIFY | ONCS_COPY
)
"""Optional NVM Command Support: what the core and the admin layer implement."""

OACS_FORMAT_NVM = 1 << 1
"""OACS bit 1: Format NVM."""
OACS_NS_MANAGEMENT = 1 << 3
"""OACS bit 3: Namespace Management and Namespace Attachment."""
OACS_SELF_TEST = 1 << 4
"""OACS bit 4: Device Self-test."""
OACS_DBBUF = 1 << 8
"""OACS bit 8: Doorbell Buffer Config."""
OAES_NS_ATTRIBUTE = 1 << 8
"""OAES bit 8: Namespace Attribute Notices (Changed Namespace List)."""
OAES_ZONE_DESCRIPTOR_CHANGED = 1 << 27
"""OAES bit 27: Zone Descriptor Changed Notices (Changed Zone List, ZNS 1.1)."""
SGLS = 0x000B0001
"""SGL Support: bits 1:0 = 01b SGLs without alignment requirement (Data
Block, Segment, Last Segment), bit 16 SGL Bit Bucket, bit 17 a byte-aligned
contiguous metadata buffer with SGL data (PSDT 01b), bit 19 MPTR pointing at
an SGL descriptor (PSDT 10b). Keyed SGLs: none."""
OCFS_FORMAT_0 = 1 << 0
"""Optional Copy Formats Supported: source range entry format 0."""
OCFS_FORMAT_1 = 1 << 1
"""Optional Copy Formats Supported: format 1 (the 64-bit guard's 40-byte entries)."""
KAS = 1
"""Keep Alive Support: timer granularity in 100 ms units (nonzero: Keep Alive supported)."""
SANICAP_BES = 1 << 1
"""SANICAP bit 1: Block Erase sanitize."""
SANICAP_OWS = 1 << 2
"""SANICAP bit 2: Overwrite sanitize."""
SANICAP = SANICAP_BES | SANICAP_OWS
"""Sanitize Capabilities: block erase and overwrite, no crypto erase (bit 0);
No-Deallocate After Sanitize honoured (NDI, bit 29, clear); whether a
no-deallocate sanitize modifies media not reported (NODMMAS 00b)."""
EDSTT = 1
"""Extended Device Self-test Time, minutes: what an extended self-test of
this emulation takes at most (it reads every namespace once)."""
DSTO_ONE_AT_A_TIME = 1 << 0
"""Device Self-test Options bit 0: one device self-test at a time in the NVM subsystem."""
LPA_CSE = 1 << 1
"""LPA bit 1: the Commands Supported and Effects log page."""
LPA_EXTENDED = 1 << 2
"""LPA bit 2: extended data (NUMDU, LPOL/LPOU) in Get Log Page."""

# Identify Controller field values the spec fixes for what we implement.
_CNTRLTYPE_IO = 1
_FRMW = 0x03  # bit 0: slot 1 read-only; bits 3:1: one slot
_SQES = 0x66  # required and maximum SQ entry size: 2**6 = 64 bytes
_CQES = 0x44  # 2**4 = 16 bytes
_FNA = 0x00  # Format NVM per namespace; no secure or cryptographic erase
_VWC_PRESENT = 0x01
_VWC_NO_BROADCAST_FLUSH = 0x02 << 1  # bits 2:1 = 10b: NSID FFFFFFFFh flush unsupported


@dataclasses.dataclass(frozen=True)
class NamespaceIds:
    """The globally unique identifiers of one namespace."""

    eui64: bytes
    nguid: bytes
    uuid: bytes


def namespace_ids(serial: str, nsid: int, generation: int = 0) -> NamespaceIds:
    """Stable EUI-64, NGUID and UUID for namespace ``nsid`` of controller ``serial``.

    Derived by hashing, so the same config always yields the same IDs (a
    host keys its device names on them) and two serials never collide.
    ``generation`` tells apart namespaces that held the same NSID at
    different times (0: a configured one).
    """
    key = f"nvmefast/{serial}/{nsid}" + (f"/{generation}" if generation else "")
    digest = hashlib.sha256(key.encode()).digest()
    # EUI-64: the OUI in the three most significant bytes, then an
    # extension identifier; stored big-endian as the spec shows it.
    eui64 = IEEE_OUI.to_bytes(3, "big") + digest[:5]
    nguid = digest[8:24]
    ns_uuid = uuid.uuid5(uuid.NAMESPACE_OID, key).bytes
    return NamespaceIds(eui64=eui64, nguid=nguid, uuid=ns_uuid)


NSATTR_WRITE_PROTECTED = 1 << 0
"""Identify Namespace NSATTR bit 0: the namespace is currently write protected."""
CMIC_MULTI_CONTROLLER = 1 << 1
"""Identify Controller CMIC bit 1: the NVM subsystem may contain two or more controllers."""
NMIC_SHARED = 1 << 0
"""Identify Namespace NMIC bit 0: the namespace may be attached to two or more controllers."""


def _ascii(value: str, width: int) -> bytes:
    return value.encode("ascii").ljust(width, b" ")


def build_identify_controller(config: ControllerConfig, tnvmcap: int = 0, unvmcap: int = 0) -> bytes:
    """The Identify Controller data structure (CNS 01h) of a controller whose
    NVM subsystem has ``tnvmcap`` bytes of NVM, ``unvmcap`` of them unallocated."""
    buf = bytearray(IDENTIFY_SIZE)
    struct.pack_into("<HH", buf, 0, PCI_VENDOR_ID, PCI_SUBSYSTEM_VENDOR_ID)
    buf[4:24] = _ascii(config.serial, 20)
    buf[24:64] = _ascii(config.model, 40)
    buf[64:72] = _ascii(config.firmware, 8)
    buf[72] = 6  # RAB: 2**6 commands per arbitration burst, as QEMU
    buf[73:76] = IEEE_OUI.to_bytes(3, "little")
    # CMIC bit 1 only when configured: one port, one controller otherwise.
    buf[76] = CMIC_MULTI_CONTROLLER if config.multi_controller else 0
    buf[77] = config.mdts
    struct.pack_into("<H", buf, 78, 0)  # CNTLID
    struct.pack_into("<I", buf, 80, NVME_VERSION)
    struct.pack_into("<I", buf, 92, OAES_NS_ATTRIBUTE | OAES_ZONE_DESCRIPTOR_CHANGED)
    struct.pack_into("<I", buf, 96, CTRATT_ELBAS)  # CTRATT: the 64-bit guard formats (lba_format.py)
    buf[111] = _CNTRLTYPE_IO
    struct.pack_into("<H", buf, 256, OACS_FORMAT_NVM | OACS_NS_MANAGEMENT | OACS_SELF_TEST | OACS_DBBUF)
    buf[258] = ACL
    buf[259] = config.aerl
    buf[260] = _FRMW
    buf[261] = LPA_CSE | LPA_EXTENDED
    buf[262] = ELPE
    buf[263] = 0  # NPSS: one power state
    struct.pack_into("<HH", buf, 266, WCTEMP, CCTEMP)
    buf[280:296] = tnvmcap.to_bytes(16, "little")  # TNVMCAP
    buf[296:312] = unvmcap.to_bytes(16, "little")  # UNVMCAP
    struct.pack_into("<HB", buf, 316, EDSTT, DSTO_ONE_AT_A_TIME)
    struct.pack_into("<H", buf, 320, KAS)
    struct.pack_into("<I", buf, 328, SANICAP)
    buf[512] = _SQES
    buf[513] = _CQES
    struct.pack_into("<I", buf, 516, NN)
    struct.pack_into("<I", buf, 540, MNAN)
    struct.pack_into("<H", buf, 520, ONCS)
    buf[524] = _FNA
    buf[525] = (_VWC_PRESENT | _VWC_NO_BROADCAST_FLUSH) if config.volatile_write_cache else 0
    struct.pack_into("<H", buf, 534, OCFS_FORMAT_0 | OCFS_FORMAT_1)
    struct.pack_into("<I", buf, 536, SGLS)
    subnqn = (SUBNQN_PREFIX + config.serial).encode("ascii")
    buf[768 : 768 + len(subnqn)] = subnqn
    # PSD0: 25 W max power, entry/exit latency as QEMU reports.
    struct.pack_into("<HxxII", buf, 2048, 2500, 0x10, 0x4)
    return bytes(buf)


def lba_format_index(lba_size: int) -> int:
    """The LBA Format index (FLBAS bits 3:0) of ``lba_size`` without metadata."""
    return LBA_FORMATS.index(lba_size)


def build_identify_namespace(
    ns: NamespaceConfig | None, ids: NamespaceIds | None, fmt: int | NamespaceFormat, *, shared: bool = False
) -> bytes:
    """The Identify Namespace data structure (CNS 00h) of a namespace formatted
    as ``fmt`` (it changes with Format NVM; an int is an LBA data size without
    metadata).

    ``ns`` None gives the fields common to all namespaces (NSID FFFFFFFFh):
    sizes and identifiers zero, FLBAS the format of ``fmt``.
    """
    if isinstance(fmt, int):
        fmt = NamespaceFormat(fmt)
    lba_size = fmt.lba_size
    buf = bytearray(IDENTIFY_SIZE)
    # A namespace keeps its bytes across Format NVM; a 4 KiB format of a size
    # that is no multiple of 4 KiB loses the tail.
    lbas = ns.size // lba_size if ns is not None else 0
    struct.pack_into("<QQQ", buf, 0, lbas, lbas, lbas)  # NSZE, NCAP, NUSE
    # NSFEAT 0: NUSE is NCAP (no thin provisioning reporting), no DULBE
    # (Error Recovery rejects it), no namespace atomicity or I/O hints.
    buf[24] = 0
    buf[25] = len(_FORMATS) - 1  # NLBAF, 0's based
    buf[26] = fmt.flbas
    # Metadata and PI capabilities, when the storage can keep metadata.
    with_metadata = ns is None or metadata_available(ns)
    buf[27] = MC if with_metadata else 0
    buf[28] = DPC if with_metadata else 0
    buf[29] = fmt.dps
    buf[30] = NMIC_SHARED if shared else 0  # NMIC
    buf[33] = DLFEAT
    # NSATTR (byte 99) bit 0: write protected. The core fails writes to a
    # read-only namespace with Namespace Is Write Protected (20h).
    buf[99] = NSATTR_WRITE_PROTECTED if ns is not None and ns.readonly else 0
    struct.pack_into("<HIB", buf, 74, MSSRL, MCL, MSRC)
    if ns is not None:
        buf[48:64] = ns.size.to_bytes(16, "little")  # NVMCAP: the capacity it draws on
    if ids is not None:
        buf[104:120] = ids.nguid
        buf[120:128] = ids.eui64
    for i, f in enumerate(_FORMATS):
        struct.pack_into("<I", buf, 128 + 4 * i, lbaf(f, available=with_metadata or not f.metadata_size))
    return bytes(buf)


def build_active_ns_list(nsids: Sequence[int], after: int) -> bytes:
    """Active Namespace ID list (CNS 02h): active NSIDs greater than ``after``."""
    buf = bytearray(IDENTIFY_SIZE)
    chosen = [n for n in sorted(nsids) if n > after][: IDENTIFY_SIZE // 4]
    struct.pack_into(f"<{len(chosen)}I", buf, 0, *chosen)
    return bytes(buf)


NIDT_EUI64 = 0x01
"""Namespace Identifier Type: IEEE Extended Unique Identifier."""
NIDT_NGUID = 0x02
"""Namespace Identifier Type: Namespace Globally Unique Identifier."""
NIDT_UUID = 0x03
"""Namespace Identifier Type: Universally Unique Identifier."""
NIDT_CSI = 0x04
"""Namespace Identifier Type: Command Set Identifier."""
CSI_NVM = 0x00
"""Command Set Identifier of the NVM Command Set (the Zoned Namespace
Command Set's is :data:`nvmefast.zns.CSI_ZNS`)."""


def build_ns_id_descriptors(ids: NamespaceIds, csi: int = CSI_NVM) -> bytes:
    """Namespace Identification Descriptor list (CNS 03h), ending in the
    Command Set Identifier descriptor of the namespace's command set ``csi``
    (Linux ignores a namespace without one once it selected CC.CSS 110b)."""
    buf = bytearray(IDENTIFY_SIZE)
    offset = 0
    descriptors = (
        (NIDT_EUI64, ids.eui64),
        (NIDT_NGUID, ids.nguid),
        (NIDT_UUID, ids.uuid),
        (NIDT_CSI, bytes([csi])),
    )
    for nidt, nid in descriptors:
        struct.pack_into("<BBxx", buf, offset, nidt, len(nid))
        buf[offset + 4 : offset + 4 + len(nid)] = nid
        offset += 4 + len(nid)
    return bytes(buf)


@dataclasses.dataclass(frozen=True)
class ErrorLogEntry:
    """One Error Information log entry (Figure 198)."""

    error_count: int
    sqid: int
    cid: int
    status: int
    """The 15-bit status field (the entry stores it shifted past the phase bit)."""
    param_error_location: int
    lba: int
    nsid: int

    def to_bytes(self) -> bytes:
        """The 64-byte entry."""
        buf = bytearray(ERROR_LOG_ENTRY_SIZE)
        struct.pack_into(
            "<QHHHHQI",
            buf,
            0,
            self.error_count,
            self.sqid,
            self.cid,
            (self.status & 0x7FFF) << 1,
            self.param_error_location,
            self.lba,
            self.nsid,
        )
        return bytes(buf)

    @classmethod
    def parse(cls, data: bytes) -> ErrorLogEntry:
        """Read one 64-byte entry."""
        count, sqid, cid, sf, loc, lba, nsid = struct.unpack_from("<QHHHHQI", data, 0)
        return cls(count, sqid, cid, sf >> 1, loc, lba, nsid)

    @classmethod
    def parse_log(cls, data: bytes) -> list[ErrorLogEntry]:
        """Read a whole Error Information log page, dropping empty entries (count 0)."""
        entries = (
            cls.parse(data[i : i + ERROR_LOG_ENTRY_SIZE])
            for i in range(0, len(data) - ERROR_LOG_ENTRY_SIZE + 1, ERROR_LOG_ENTRY_SIZE)
        )
        return [e for e in entries if e.error_count]


def build_error_log(entries: Sequence[ErrorLogEntry]) -> bytes:
    """The Error Information log page: ``entries`` newest first, ELPE+1 slots."""
    buf = bytearray(ERROR_LOG_ENTRY_SIZE * (ELPE + 1))
    for i, entry in enumerate(entries[: ELPE + 1]):
        buf[i * ERROR_LOG_ENTRY_SIZE : (i + 1) * ERROR_LOG_ENTRY_SIZE] = entry.to_bytes()
    return bytes(buf)


@dataclasses.dataclass(frozen=True)
class SmartLog:
    """The SMART / Health Information log page (Figure 207)."""

    critical_warning: int
    composite_temperature: int
    available_spare: int
    available_spare_threshold: int
    percentage_used: int
    data_units_read: int
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_time: int
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int
    num_err_log_entries: int

    _LAYOUT = (
        # name, offset, width in bytes
        ("data_units_read", 32, 16),
        ("data_units_written", 48, 16),
        ("host_read_commands", 64, 16),
        ("host_write_commands", 80, 16),
        ("controller_busy_time", 96, 16),
        ("power_cycles", 112, 16),
        ("power_on_hours", 128, 16),
        ("unsafe_shutdowns", 144, 16),
        ("media_errors", 160, 16),
        ("num_err_log_entries", 176, 16),
    )

    def to_bytes(self) -> bytes:
        """The 512-byte page."""
        buf = bytearray(SMART_LOG_SIZE)
        buf[0] = self.critical_warning
        struct.pack_into("<H", buf, 1, self.composite_temperature)
        buf[3] = self.available_spare
        buf[4] = self.available_spare_threshold
        buf[5] = self.percentage_used
        for name, offset, width in self._LAYOUT:
            value: int = getattr(self, name)
            # 128-bit counters saturate rather than wrap.
            value = min(value, (1 << (8 * width)) - 1)
            buf[offset : offset + width] = value.to_bytes(width, "little")
        return bytes(buf)

    @classmethod
    def parse(cls, data: bytes) -> SmartLog:
        """Read the 512-byte page."""
        counters = {
            name: int.from_bytes(data[offset : offset + width], "little")
            for name, offset, width in cls._LAYOUT
        }
        return cls(
            critical_warning=data[0],
            composite_temperature=struct.unpack_from("<H", data, 1)[0],
            available_spare=data[3],
            available_spare_threshold=data[4],
            percentage_used=data[5],
            **counters,
        )


def build_smart_log(log: SmartLog) -> bytes:
    """The SMART / Health Information log page."""
    return log.to_bytes()


@dataclasses.dataclass(frozen=True)
class FirmwareSlotLog:
    """The Firmware Slot Information log page (Figure 208)."""

    active_slot: int
    """AFI bits 2:0: the slot the running firmware came from."""
    next_slot: int
    """AFI bits 6:4: the slot activated at the next reset, 0 if none."""
    revisions: tuple[str, ...]
    """FRS1..FRS7, empty strings for empty slots."""

    @classmethod
    def parse(cls, data: bytes) -> FirmwareSlotLog:
        """Read the 512-byte page."""
        afi = data[0]
        revisions = tuple(
            data[8 + 8 * i : 16 + 8 * i].rstrip(b"\0 ").decode("ascii", "replace")
            for i in range(7)
        )
        return cls(afi & 0x7, (afi >> 4) & 0x7, revisions)


def build_firmware_slot_log(firmware: str) -> bytes:
    """Firmware Slot log: slot 1 active, holding ``firmware``."""
    buf = bytearray(FIRMWARE_SLOT_LOG_SIZE)
    buf[0] = 1  # AFI: running from slot 1, no pending activation
    buf[8:16] = _ascii(firmware, 8)
    return bytes(buf)
