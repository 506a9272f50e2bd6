"""Helpers shared by the admin conformance tests (test_conformance_{admin,features,logs}.py).

Statuses and offsets are the spec's literals (NVMe Base 2.0, NVM Command Set
1.0), not the device's own tables, so a wrong value in a builder is caught
instead of mirrored.
"""

from __future__ import annotations

import struct

import pytest

from nvmefast import HostTimeoutError
from nvmefast.testing import Completion, Host, build_sqe

MiB = 1 << 20

# Admin opcodes (NVMe Base 2.0 Figure 28).
GET_LOG_PAGE, IDENTIFY, ABORT, SET_FEATURES, GET_FEATURES = 0x02, 0x06, 0x08, 0x09, 0x0A
AER, KEEP_ALIVE, DOORBELL_BUFFER_CONFIG, FORMAT_NVM = 0x0C, 0x18, 0x7C, 0x80

# (SCT, SC) pairs.
SUCCESS = (0, 0x00)
INVALID_FIELD = (0, 0x02)
ABORT_REQUESTED = (0, 0x07)
INVALID_NSID = (0, 0x0B)
INVALID_LOG_PAGE = (1, 0x09)
INVALID_FORMAT = (1, 0x0A)
FID_NOT_SAVEABLE = (1, 0x0D)
FEATURE_NOT_NS_SPECIFIC = (1, 0x0F)

NSID_ALL = 0xFFFFFFFF


def assert_status(c: Completion, expected: tuple[int, int]) -> None:
    """``c`` has status ``expected``; every failure here is Do Not Retry."""
    assert (c.sct, c.sc) == expected, str(c)
    if expected != SUCCESS:
        assert c.dnr, str(c)


def ok(c: Completion) -> int:
    """Dword 0 of a successful completion."""
    assert_status(c, SUCCESS)
    return c.dw0


def cmd(host: Host, opcode: int, **fields: int) -> Completion:
    """Submit an admin command and wait for it."""
    return host.admin(build_sqe(opcode, **fields))


def read_cmd(host: Host, opcode: int, length: int = 4096, **fields: int) -> tuple[Completion, bytes]:
    """An admin command transferring ``length`` bytes to a fresh buffer; returns the data too."""
    buf = host.alloc(length)
    prps = host.build_prps(list(range(buf, buf + length, 4096)))
    try:
        c = cmd(host, opcode, prp1=prps.prp1, prp2=prps.prp2, **fields)
        return c, host.read_mem(buf, length)
    finally:
        host.free_prps(prps)
        host.free(buf)


def write_cmd(host: Host, opcode: int, data: bytes, **fields: int) -> Completion:
    """An admin command that transfers ``data`` from the host."""
    buf = host.alloc(max(len(data), 4096))
    host.write_mem(buf, data)
    try:
        return cmd(host, opcode, prp1=buf, **fields)
    finally:
        host.free(buf)


def identify(host: Host, cns: int, nsid: int = 0, csi: int = 0) -> tuple[Completion, bytes]:
    """Identify ``cns`` (CSI in CDW11 bits 31:24)."""
    return read_cmd(host, IDENTIFY, nsid=nsid, cdw10=cns, cdw11=csi << 24)


def get_log(host: Host, lid: int, length: int, *, offset: int = 0, rae: bool = False,
            nsid: int = NSID_ALL, csi: int = 0) -> tuple[Completion, bytes]:
    """Get Log Page ``lid``: ``length`` bytes from byte ``offset``."""
    numd = length // 4 - 1
    return read_cmd(
        host, GET_LOG_PAGE, max(length, 4096), nsid=nsid,
        cdw10=(numd & 0xFFFF) << 16 | int(rae) << 15 | lid, cdw11=numd >> 16,
        cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32, cdw14=csi << 24,
    )


def format_nvm(host: Host, nsid: int, lbaf: int, *, cdw10: int = 0) -> Completion:
    """Format NVM ``nsid`` to LBA format ``lbaf`` (other CDW10 bits in ``cdw10``)."""
    return cmd(host, FORMAT_NVM, nsid=nsid, cdw10=cdw10 | lbaf)


def no_completion(host: Host, cid: int) -> None:
    """Admin command ``cid`` stays outstanding for a while."""
    with pytest.raises(HostTimeoutError):
        host.wait(0, cid, timeout=0.2)


def u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])
