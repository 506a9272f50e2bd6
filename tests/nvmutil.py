"""Helpers shared by the NVM command conformance tests (test_conformance_*.py).

Statuses are the spec's literals (NVMe Base 2.0 Figures 100-103, NVM Command
Set 2.0 Figure 20), not the device's own table, so a wrong code in the core
is caught instead of mirrored. Every error the conformance tests expect is a
"do not retry" one: the same command would fail again.
"""

from __future__ import annotations

import os

import pytest

from nvmefast import NamespaceConfig
from nvmefast.testing import Completion, Host

MiB = 1 << 20

# Status Code Types
GENERIC, COMMAND_SPECIFIC, MEDIA = 0x0, 0x1, 0x2
# Generic Command Status (SCT 0h)
SUCCESS = 0x00
INVALID_OPCODE = 0x01
INVALID_FIELD = 0x02
DATA_TRANSFER_ERROR = 0x04
INVALID_NSID = 0x0B
INVALID_SGL_SEGMENT_DESCRIPTOR = 0x0D
INVALID_NUMBER_OF_SGL_DESCRIPTORS = 0x0E
DATA_SGL_LENGTH_INVALID = 0x0F
SGL_DESCRIPTOR_TYPE_INVALID = 0x11
LBA_OUT_OF_RANGE = 0x80
# Command Specific Status (SCT 1h)
COMMAND_SIZE_LIMIT_EXCEEDED = 0x83
# Media and Data Integrity Errors (SCT 2h)
COMPARE_FAILURE = 0x85

UNMAPPED = 0x5_0000_0000
"""Nothing is mapped here (the host maps its RAM at 4 GiB)."""

# Two namespaces, one per LBA data size. NSID 1: 65536 blocks of 512 bytes,
# so Write Zeroes can use its largest NLB; NSID 2: 16384 blocks of 4 KiB, room
# for a Copy of MCL (4096) blocks and its destination.
NSZE = {1: 32 * MiB // 512, 2: 64 * MiB // 4096}
LBA = {1: 512, 2: 4096}
TWO_NAMESPACES = pytest.mark.nvme_config(
    namespaces=[
        NamespaceConfig(size_bytes=32 * MiB, lba_size=512),
        NamespaceConfig(size_bytes=64 * MiB, lba_size=4096),
    ]
)
NSIDS = [pytest.param(1, id="lba512"), pytest.param(2, id="lba4096")]
TWO_NULL_NAMESPACES = pytest.mark.nvme_config(
    namespaces=[
        NamespaceConfig(size_bytes=4 * MiB, lba_size=512, backend="null"),
        NamespaceConfig(size_bytes=4 * MiB, lba_size=4096, backend="null"),
    ]
)


def assert_status(completion: Completion, sct: int, sc: int) -> None:
    """``completion`` has this SCT/SC, and DNR set for every error."""
    assert (completion.sct, completion.sc) == (sct, sc), str(completion)
    if (sct, sc) != (GENERIC, SUCCESS):
        assert completion.dnr, f"DNR clear on an error that would recur: {completion}"


def assert_ok(completion: Completion) -> None:
    """Successful Completion."""
    assert_status(completion, GENERIC, SUCCESS)


def fill(host: Host, nsid: int, slba: int, nlb: int) -> bytes:
    """Write random data over ``nlb`` blocks from ``slba`` (in MDTS-sized commands); returns it."""
    lba = host.lba_size(nsid)
    data = os.urandom(nlb * lba)
    chunk = 128 * 1024 // lba  # the default MDTS: 128 KiB
    for first in range(0, nlb, chunk):
        n = min(chunk, nlb - first)
        host.write(nsid, slba + first, data[first * lba : (first + n) * lba])
    return data


def read(host: Host, nsid: int, slba: int, nlb: int) -> bytes:
    """Read ``nlb`` blocks from ``slba`` in MDTS-sized commands."""
    lba = host.lba_size(nsid)
    chunk = 128 * 1024 // lba
    out = bytearray()
    for first in range(0, nlb, chunk):
        out += host.read(nsid, slba + first, min(chunk, nlb - first))
    return bytes(out)


def assert_still_works(host: Host, nsid: int = 1) -> None:
    """The controller still does I/O on queue 1 and is not in Controller Fatal Status."""
    data = os.urandom(4096)
    host.write(nsid, 16 * 4096 // host.lba_size(nsid), data)
    assert host.read(nsid, 16 * 4096 // host.lba_size(nsid), 4096 // host.lba_size(nsid)) == data
    assert host.csts() & 0b10 == 0, "CSTS.CFS set"
