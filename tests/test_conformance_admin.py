"""Identify, Format NVM, Keep Alive and Abort against NVMe Base 2.0 / NVM Command Set 1.0.

Each success path reads the data back at the spec's byte offsets; each error
path checks its status (with DNR).
"""

from __future__ import annotations

import time

import pytest

from adminutil import (
    ABORT, ABORT_REQUESTED, INVALID_FIELD, INVALID_FORMAT, INVALID_NSID, KEEP_ALIVE, MiB, NSID_ALL,
    SUCCESS, assert_status, cmd, format_nvm, identify, ok, u16, u32, u64,
)
from nvmefast import ControllerConfig, NamespaceConfig
from nvmefast.testing import Host, build_sqe

TWO_NAMESPACES = [NamespaceConfig(size_bytes=4 * MiB, lba_size=512),
                  NamespaceConfig(size_bytes=8 * MiB, lba_size=4096)]


# -- Identify Controller (CNS 01h, Figure 275) ---------------------------------------------


def test_identify_controller_2_0_fields(host: Host, config: ControllerConfig) -> None:
    c, raw = identify(host, 0x01)
    assert_status(c, SUCCESS)
    assert u32(raw, 80) == 0x00020000  # VER 2.0.0
    assert u32(raw, 80) == host.controller.bar0_read(0x08, 4)  # = VS
    assert u32(raw, 92) == 1 << 8 | 1 << 27  # OAES: Namespace Attribute and Zone Descriptor Changed Notices
    assert raw[111] == 1  # CNTRLTYPE: I/O controller
    # OACS: Format NVM, Namespace Management, Device Self-test, Doorbell Buffer Config
    assert u16(raw, 256) == 1 << 1 | 1 << 3 | 1 << 4 | 1 << 8
    assert raw[261] == 1 << 1 | 1 << 2  # LPA: Commands Supported and Effects, extended data
    assert u16(raw, 320) == 1  # KAS: 100 ms granularity
    assert raw[77] == config.mdts  # MDTS
    assert u32(raw, 516) == 256  # NN: every NSID Namespace Management may use
    assert u32(raw, 540) == 256  # MNAN
    # ONCS: Compare, Write Uncorrectable, DSM, Write Zeroes, Save/Select, Timestamp, Verify, Copy.
    assert u16(raw, 520) == 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 8
    assert raw[524] == 0  # FNA: Format NVM per namespace, no secure erase
    assert raw[525] == 0x05  # VWC present; no broadcast flush
    assert u16(raw, 534) == 0b11  # OCFS: Copy source range formats 0 and 1 (the 64-bit guard's)
    assert u32(raw, 536) == 0x000B0001  # SGLS: no alignment requirement, bit bucket, MPTR bits 17 and 19
    assert u16(raw, 514) == 0  # MAXCMD: not reported


# -- Identify Namespace (CNS 00h, NVM Command Set Figure 97) ----------------------------------


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_identify_namespace_nvm_fields(host: Host) -> None:
    for nsid, lbas, flbas in ((1, 8192, 0), (2, 2048, 1)):
        c, raw = identify(host, 0x00, nsid)
        assert_status(c, SUCCESS)
        assert (u64(raw, 0), u64(raw, 8), u64(raw, 16)) == (lbas, lbas, lbas)  # NSZE NCAP NUSE
        assert raw[24] == 0  # NSFEAT
        assert raw[25] == 6  # NLBAF: seven formats, 0's based
        assert raw[26] == flbas  # FLBAS: the current format, no metadata
        assert (raw[27], raw[28], raw[29]) == (0x03, 0x1F, 0)  # MC, DPC: all; DPS: no PI
        assert raw[33] == 0x09  # DLFEAT: WZ deallocate; deallocated reads 00h; PI of them FFh
        assert u16(raw, 74) == 256  # MSSRL
        assert u32(raw, 76) == 4096  # MCL
        assert raw[80] == 127  # MSRC, 0's based
        assert u32(raw, 128) == 9 << 16  # LBAF0: 512 B, no metadata, best performance
        assert u32(raw, 132) == 12 << 16  # LBAF1: 4096 B
        # LBAF2-6: MS bits 15:0 with 512 or 4096 B
        assert [u32(raw, 136 + 4 * i) for i in range(5)] == [9 << 16 | 8, 9 << 16 | 16, 12 << 16 | 8,
                                                             12 << 16 | 16, 12 << 16 | 64]
        assert raw[156:192] == bytes(36)  # no more formats


# -- I/O Command Set specific and independent structures -------------------------------------------


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_identify_csi_namespace(host: Host) -> None:
    for nsid in (1, 2):
        c, raw = identify(host, 0x05, nsid, csi=0)
        assert_status(c, SUCCESS)
        assert raw == bytes(4096)  # LBSTM 0, PIC 0, every ELBAF 0: no PI, no storage tags
    for nsid in (0, 257, NSID_ALL):
        assert_status(identify(host, 0x05, nsid)[0], INVALID_NSID)
    c, raw = identify(host, 0x05, 3)  # valid, unallocated: inactive
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)
    for csi in (0x01, 0x02, 0xFF):
        assert_status(identify(host, 0x05, 1, csi=csi)[0], INVALID_FIELD)


def test_identify_csi_controller(host: Host) -> None:
    c, raw = identify(host, 0x06, csi=0)
    assert_status(c, SUCCESS)
    assert raw[0] == 0  # VSL: no Verify size limit
    assert raw[1] == 0  # WZSL: no Write Zeroes size limit
    assert raw[3] == 0  # DMRL: no limit below the 256 ranges of NR
    assert u32(raw, 4) == 0 and u64(raw, 8) == 0  # DMRSL, DMSL
    assert raw[16:] == bytes(4096 - 16)
    for csi in (0x01, 0x03, 0xFF):  # 02h (Zoned Namespace) is tests/test_zns_admin.py's
        assert_status(identify(host, 0x06, csi=csi)[0], INVALID_FIELD)


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=MiB)] * 3)
def test_identify_active_namespaces_of_command_set(host: Host) -> None:
    c, raw = identify(host, 0x07, 1, csi=0)
    assert_status(c, SUCCESS)
    assert (u32(raw, 0), u32(raw, 4), u32(raw, 8)) == (2, 3, 0)
    c, raw = identify(host, 0x07, 0, csi=2)  # the Zoned Namespace Command Set: none of those here
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)
    assert_status(identify(host, 0x07, 0, csi=1)[0], INVALID_FIELD)
    assert_status(identify(host, 0x07, NSID_ALL, csi=0)[0], INVALID_NSID)


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_identify_independent_namespace(host: Host) -> None:
    for nsid in (1, 2):
        c, raw = identify(host, 0x08, nsid)
        assert_status(c, SUCCESS)
        assert raw[0] == 0  # NSFEAT
        assert raw[14] & 1  # NSTAT: namespace ready
    for nsid in (0, 257, NSID_ALL):
        assert_status(identify(host, 0x08, nsid)[0], INVALID_NSID)
    c, raw = identify(host, 0x08, 3)  # valid, unallocated: inactive
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)


def test_identify_io_command_set_combinations(host: Host) -> None:
    c, raw = identify(host, 0x1C)
    assert_status(c, SUCCESS)
    assert u64(raw, 0) == 1 << 0 | 1 << 2  # combination 0: the NVM and Zoned Namespace Command Sets
    assert raw[8:] == bytes(4088)


def test_namespace_descriptors_report_csi(host: Host) -> None:
    c, raw = identify(host, 0x03, 1)
    assert_status(c, SUCCESS)
    descriptors = {}
    offset = 0
    while raw[offset]:
        nidt, nidl = raw[offset], raw[offset + 1]
        descriptors[nidt] = raw[offset + 4 : offset + 4 + nidl]
        offset += 4 + nidl
    assert descriptors[0x04] == b"\x00"  # CSI: NVM Command Set
    assert set(descriptors) == {0x01, 0x02, 0x03, 0x04}


# -- Format NVM (80h) ------------------------------------------------------------------------------


def _flbas_and_size(host: Host, nsid: int) -> tuple[int, int]:
    raw = identify(host, 0x00, nsid)[1]
    return raw[26] & 0xF, u64(raw, 0)


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_format_changes_the_lba_format(host: Host) -> None:
    assert_status(format_nvm(host, 1, 1), SUCCESS)
    assert _flbas_and_size(host, 1) == (1, 4 * MiB // 4096)
    assert _flbas_and_size(host, 2) == (1, 8 * MiB // 4096)  # untouched
    assert_status(format_nvm(host, 2, 0), SUCCESS)
    assert _flbas_and_size(host, 2) == (0, 8 * MiB // 512)
    assert host.controller.engine.namespace_lba_size(2) == 512


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_format_all_namespaces(host: Host) -> None:
    assert_status(format_nvm(host, NSID_ALL, 1), SUCCESS)
    assert _flbas_and_size(host, 1)[0] == 1 and _flbas_and_size(host, 2)[0] == 1
    assert_status(format_nvm(host, NSID_ALL, 0), SUCCESS)
    assert _flbas_and_size(host, 1)[0] == 0 and _flbas_and_size(host, 2)[0] == 0


@pytest.mark.parametrize("lbaf", [0, 1])
def test_format_zeroes_data_and_io_uses_the_new_size(host: Host, lbaf: int) -> None:
    host.write(1, 0, b"\xA5" * 4096)
    assert_status(format_nvm(host, 1, lbaf), SUCCESS)
    ns = host.identify_namespace(1)  # refreshes the host's LBA size
    size = 512 << (3 * lbaf)
    assert ns.lba_size == size
    assert host.read(1, 0, 4096 // size) == bytes(4096)
    data = bytes(range(256)) * (size // 256)
    host.write(1, 3, data)
    assert host.read(1, 3, 1) == data


@pytest.mark.parametrize("nsid", [0, 0x101, 0xFFFFFFFE])
def test_format_invalid_nsid(host: Host, nsid: int) -> None:
    assert_status(format_nvm(host, nsid, 0), INVALID_NSID)


@pytest.mark.parametrize("nsid", [2, 0x100])
def test_format_unallocated_nsid(host: Host, nsid: int) -> None:
    # Valid (NN 256) but no namespace there: inactive, Invalid Field (as QEMU's nvme_format).
    assert_status(format_nvm(host, nsid, 0), INVALID_FIELD)


@pytest.mark.parametrize(
    ("cdw10", "status"),
    [
        (7, INVALID_FORMAT),  # LBAF 7: NLBAF is 6
        (0xF, INVALID_FORMAT),
        (1 << 5, INVALID_FORMAT),  # PI type 1 without metadata
        (3 << 5, INVALID_FORMAT),
        (1 << 5 | 1 << 8, INVALID_FORMAT),  # PI first, still no metadata
        (4 << 5, INVALID_FIELD),  # PI 100b: reserved
        (7 << 5 | 2, INVALID_FIELD),  # PI 111b, even with metadata
        (2 << 9, INVALID_FIELD),  # SES: cryptographic erase (FNA bit 2 clear)
        (7 << 9, INVALID_FIELD),  # SES reserved
    ],
)
def test_format_invalid_fields(host: Host, cdw10: int, status: tuple[int, int]) -> None:
    assert_status(cmd(host, 0x80, nsid=1, cdw10=cdw10), status)
    assert _flbas_and_size(host, 1)[0] == 0  # nothing changed


def test_format_user_data_erase_and_pil_alone_are_accepted(host: Host) -> None:
    assert_status(format_nvm(host, 1, 1, cdw10=1 << 9), SUCCESS)  # SES 001b
    assert_status(format_nvm(host, 1, 0, cdw10=1 << 8), SUCCESS)  # PIL without PI
    assert_status(format_nvm(host, 1, 0, cdw10=1 << 4), SUCCESS)  # MSET without metadata: not applicable
    assert identify(host, 0x00, 1)[1][26] == 0  # FLBAS bit 4 stays clear: there is no metadata
    # LBAFU is ignored while Host Behavior Support LBAFEE is clear: format 16 is format 0.
    assert_status(format_nvm(host, 1, 1, cdw10=1 << 12), SUCCESS)
    assert identify(host, 0x00, 1)[1][26] == 1


# -- Keep Alive (18h) ----------------------------------------------------------------------------


def test_keep_alive(host: Host) -> None:
    assert_status(cmd(host, KEEP_ALIVE), SUCCESS)
    assert_status(cmd(host, 0x09, cdw10=0x0F, cdw11=5000), SUCCESS)  # KATO 5 s
    assert ok(cmd(host, 0x0A, cdw10=0x0F)) == 5000
    assert_status(cmd(host, KEEP_ALIVE), SUCCESS)


# -- Abort (08h) -----------------------------------------------------------------------------------


def test_abort_of_a_queue_that_does_not_exist(host: Host) -> None:
    for sqid in (2, 9, 0xFFFF):
        c = cmd(host, ABORT, cdw10=7 << 16 | sqid)
        assert ok(c) & 1 == 1  # not aborted


def test_abort_of_a_command_already_done(host: Host) -> None:
    c = host.io(build_sqe(0x00, nsid=1))  # Flush: completes at once
    assert c.ok
    assert ok(cmd(host, ABORT, cdw10=c.cid << 16 | 1)) & 1 == 1


def test_abort_a_queued_io_command(host: Host) -> None:
    # A 2-entry CQ holds one completion: with it unconsumed the core stops
    # fetching (CQ flow control), so the second command waits in the SQ.
    host.create_io_cq(2, 2, vector=0, irq=False)
    host.create_io_sq(2, 16, cqid=2)
    first = host.submit(build_sqe(0x00, nsid=1), 2)
    time.sleep(0.1)
    second = host.submit(build_sqe(0x00, nsid=1), 2)
    time.sleep(0.05)
    assert ok(cmd(host, ABORT, cdw10=second << 16 | 2)) & 1 == 0  # aborted
    assert host.wait(2, first).ok
    aborted = host.wait(2, second)
    assert (aborted.sct, aborted.sc) == ABORT_REQUESTED
    # Aborting it again finds nothing.
    assert ok(cmd(host, ABORT, cdw10=second << 16 | 2)) & 1 == 1
