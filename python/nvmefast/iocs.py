"""I/O Command Set structures: Identify CNS 05h/06h/08h/1Ch and the logs
that describe commands and namespaces rather than health.

Offsets are those of NVMe Base Specification 2.0 (Figure 280 I/O Command Set
Independent Identify Namespace, Figure 290 Identify I/O Command Set data
structure, Figure 210 Changed Namespace List, Figure 211 Commands Supported
and Effects) and NVM Command Set Specification 1.0 (Figure 99 NVM Command
Set Identify Controller, Figure 100 NVM Command Set Identify Namespace).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from nvmefast.lba_format import LBA_FORMATS, elbaf
from nvmefast.structs import IDENTIFY_SIZE

__all__ = [
    "CHANGED_NS_LIST_MAX",
    "EFFECTS_CCC",
    "EFFECTS_CSE_ANY_NAMESPACE",
    "EFFECTS_CSUPP",
    "EFFECTS_LBCC",
    "EFFECTS_NCC",
    "EFFECTS_NIC",
    "IOCS_NVM",
    "IOCS_ZNS",
    "IO_OPCODE_EFFECTS",
    "VSL",
    "WZSL",
    "build_changed_ns_list",
    "build_command_effects_log",
    "build_identify_ctrl_nvm",
    "build_identify_ns_independent",
    "build_identify_ns_nvm",
    "build_iocs_combinations",
]

IOCS_NVM = 1 << 0
"""I/O Command Set Vector bit 0: the NVM Command Set."""
IOCS_ZNS = 1 << 2
"""I/O Command Set Vector bit 2: the Zoned Namespace Command Set."""

# NVM Command Set Identify Controller (CNS 06h, CSI 00h) limits. 0 means
# "no limit reported": the commands' own fields (NLB, NR) bound them and
# the core enforces nothing tighter.
VSL = 0
"""Verify Size Limit, a power of two of CAP.MPSMIN pages; 0: none."""
WZSL = 0
"""Write Zeroes Size Limit, as VSL; 0: none."""
WUSL = 0
"""Write Uncorrectable Size Limit; 0: none beyond NLB (ONCS bit 1 says the
command is supported, so a limit would only be a recommendation)."""
DMRL = 0
"""Dataset Management Ranges Limit; 0: none beyond the 256 ranges NR allows."""
DMRSL = 0
"""Dataset Management Range Size Limit, logical blocks; 0: none."""
DMSL = 0
"""Dataset Management Size Limit, logical blocks; 0: none."""

EFFECTS_CSUPP = 1 << 0
"""Commands Supported and Effects: the command is supported."""
EFFECTS_LBCC = 1 << 1
"""Logical Block Content Change: the command may change user data."""
EFFECTS_NCC = 1 << 2
"""Namespace Capability Change: the command may change Identify Namespace."""
EFFECTS_NIC = 1 << 3
"""Namespace Inventory Change: the command may add, remove or change which
namespaces are attached (Linux rescans after it)."""
EFFECTS_CCC = 1 << 4
"""Controller Capability Change: the command may change Identify Controller."""
EFFECTS_CSE_ANY_NAMESPACE = 0b010 << 16
"""Command Submission and Execution: submit it when no other command to any
namespace is outstanding (and no other until it completes)."""

IO_OPCODE_EFFECTS: Mapping[int, int] = {
    0x00: EFFECTS_CSUPP,  # Flush
    0x01: EFFECTS_CSUPP | EFFECTS_LBCC,  # Write
    0x02: EFFECTS_CSUPP,  # Read
    0x04: EFFECTS_CSUPP | EFFECTS_LBCC,  # Write Uncorrectable
    0x05: EFFECTS_CSUPP,  # Compare
    0x08: EFFECTS_CSUPP | EFFECTS_LBCC,  # Write Zeroes
    0x09: EFFECTS_CSUPP | EFFECTS_LBCC,  # Dataset Management
    0x0C: EFFECTS_CSUPP,  # Verify
    0x19: EFFECTS_CSUPP | EFFECTS_LBCC,  # Copy
}
"""NVM Command Set I/O opcodes the core executes, and their effects."""

CHANGED_NS_LIST_MAX = 1024
"""Entries of the Changed Namespace List; more changes report FFFFFFFFh."""
COMMAND_EFFECTS_LOG_SIZE = 4096
"""The Commands Supported and Effects log page."""


def build_identify_ns_nvm(guard: str = "crc16") -> bytes:
    """NVM Command Set Identify Namespace (CNS 05h, CSI 00h) of a namespace
    configured with ``guard``.

    LBSTM 0 and PIC 0 (no storage tags), then an Extended LBA Format per LBA
    Format: STS 0, PIF the guard of that format's PI
    (:func:`nvmefast.lba_format.pif`).
    """
    buf = bytearray(IDENTIFY_SIZE)
    for i, fmt in enumerate(LBA_FORMATS):
        struct.pack_into("<I", buf, 12 + 4 * i, elbaf(guard, fmt))
    return bytes(buf)


def build_identify_ctrl_nvm() -> bytes:
    """NVM Command Set Identify Controller (CNS 06h, CSI 00h)."""
    buf = bytearray(IDENTIFY_SIZE)
    struct.pack_into("<BBBBIQ", buf, 0, VSL, WZSL, WUSL, DMRL, DMRSL, DMSL)
    return bytes(buf)


def build_identify_ns_independent(*, shared: bool = False, write_protected: bool = False) -> bytes:
    """I/O Command Set Independent Identify Namespace (CNS 08h) of an active namespace."""
    buf = bytearray(IDENTIFY_SIZE)
    # NSFEAT, RESCAP, FPI, ANAGRPID, NVMSETID, ENDGID all 0.
    buf[1] = 1 if shared else 0  # NMIC bit 0: shared namespace
    buf[8] = 1 if write_protected else 0  # NSATTR bit 0: write protected
    buf[14] = 0x01  # NSTAT bit 0: the namespace is ready
    return bytes(buf)


def build_iocs_combinations() -> bytes:
    """Identify I/O Command Set data structure (CNS 1Ch): one combination,
    index 0, of the NVM and Zoned Namespace Command Sets (as QEMU's)."""
    buf = bytearray(IDENTIFY_SIZE)
    struct.pack_into("<Q", buf, 0, IOCS_NVM | IOCS_ZNS)
    return bytes(buf)


def build_changed_ns_list(nsids: Iterable[int]) -> bytes:
    """Changed Namespace List log (04h): NSIDs ascending, or FFFFFFFFh first
    when more than :data:`CHANGED_NS_LIST_MAX` changed."""
    chosen = sorted(set(nsids))
    if len(chosen) > CHANGED_NS_LIST_MAX:
        chosen = [0xFFFFFFFF]
    buf = bytearray(4 * CHANGED_NS_LIST_MAX)
    struct.pack_into(f"<{len(chosen)}I", buf, 0, *chosen)
    return bytes(buf)


def build_command_effects_log(admin: Mapping[int, int], io: Mapping[int, int]) -> bytes:
    """Commands Supported and Effects log (05h): a dword per admin opcode at
    byte 0, per I/O opcode at byte 1024."""
    buf = bytearray(COMMAND_EFFECTS_LOG_SIZE)
    for base, effects in ((0, admin), (1024, io)):
        for opcode, value in effects.items():
            struct.pack_into("<I", buf, base + 4 * opcode, value)
    return bytes(buf)
