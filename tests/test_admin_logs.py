"""Get Log Page, Asynchronous Event Request and Abort, driven through the admin queue.

NVMe 1.4 sections 5.14 (Get Log Page), 5.2 (Asynchronous Event Request) and
5.1 (Abort); log layouts are read at the spec's byte offsets.
"""

from __future__ import annotations

import math
import struct

import pytest

from nvmefast import CommandError, HostTimeoutError
from nvmefast.testing import Completion, Host, build_sqe

GET_LOG_PAGE, CREATE_CQ, ABORT, AER = 0x02, 0x05, 0x08, 0x0C
ERROR_LOG, SMART_LOG, FIRMWARE_LOG = 0x01, 0x02, 0x03

SUCCESS = (0, 0x00)
INVALID_FIELD = (0, 0x02)
ABORT_REQUESTED = (0, 0x07)
LBA_RANGE = (0, 0x80)
INVALID_QID = (1, 0x01)
AERL_EXCEEDED = (1, 0x05)
INVALID_LOG_PAGE = (1, 0x09)


def assert_status(c: Completion, expected: tuple[int, int], dnr: bool = True) -> None:
    assert (c.sct, c.sc) == expected, str(c)
    if expected != SUCCESS:
        assert c.dnr == dnr, str(c)


def get_log(host: Host, lid: int, length: int, *, offset: int = 0, rae: bool = False,
            nsid: int = 0xFFFFFFFF) -> tuple[Completion, bytes]:
    buf = host.alloc(max(length, 4096))
    prps = host.build_prps(list(range(buf, buf + length, 4096)))
    numd = length // 4 - 1
    c = host.admin(build_sqe(
        GET_LOG_PAGE, nsid=nsid, prp1=prps.prp1, prp2=prps.prp2,
        cdw10=(numd & 0xFFFF) << 16 | int(rae) << 15 | lid, cdw11=numd >> 16,
        cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32,
    ))
    return c, host.read_mem(buf, length)


def log_ok(host: Host, lid: int, length: int, *, offset: int = 0, rae: bool = False) -> bytes:
    c, data = get_log(host, lid, length, offset=offset, rae=rae)
    assert_status(c, SUCCESS)
    return data


def u128(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 16], "little")


# -- Get Log Page ------------------------------------------------------------------------


@pytest.mark.parametrize("lid", [0x00, 0x07, 0x0D, 0x70, 0x80, 0x82, 0xC0, 0xFF])
def test_unsupported_log_page(host: Host, lid: int) -> None:
    assert_status(get_log(host, lid, 512)[0], INVALID_LOG_PAGE)


def test_smart_log_is_controller_wide(host: Host) -> None:
    # LPA bit 0 is clear: no per-namespace SMART, so only NSID 0h/FFFFFFFFh.
    assert host.identify_controller().lpa & 1 == 0
    assert_status(get_log(host, SMART_LOG, 512, nsid=0)[0], SUCCESS)
    assert_status(get_log(host, SMART_LOG, 512, nsid=1)[0], INVALID_FIELD)


def test_smart_log_static_fields(host: Host) -> None:
    smart = log_ok(host, SMART_LOG, 512)
    assert smart[0] == 0  # no critical warning
    assert 273 < struct.unpack_from("<H", smart, 1)[0] < 373  # composite temperature, Kelvin
    assert smart[3] == 100 and smart[4] == 10  # available spare, threshold
    assert smart[5] <= 100  # percentage used
    assert u128(smart, 112) >= 1  # power cycles
    assert u128(smart, 128) == 0  # power-on hours of a fresh controller


@pytest.mark.nvme_config(mdts=5)
def test_smart_log_counts_io(host: Host) -> None:
    before = log_ok(host, SMART_LOG, 512)
    for i in range(8):  # 8 x 256 blocks of 512 bytes = 2048 units of 512 bytes
        host.write(1, i * 256, bytes([i]) * (256 * 512))
    for i in range(4):  # 1024 units
        host.read(1, i * 256, 256)
    after = log_ok(host, SMART_LOG, 512)
    # Data units are thousands of 512-byte units, rounded up (5.14.1.2).
    assert u128(before, 32) == 0 and u128(before, 48) == 0
    assert u128(after, 48) == math.ceil(2048 / 1000) == 3
    assert u128(after, 32) == math.ceil(1024 / 1000) == 2
    assert u128(after, 80) - u128(before, 80) == 8  # host write commands
    assert u128(after, 64) - u128(before, 64) == 4  # host read commands


def test_firmware_slot_log(host: Host) -> None:
    fw = log_ok(host, FIRMWARE_LOG, 512)
    assert fw[0] & 0x7 == 1  # AFI: running from slot 1
    assert (fw[0] >> 4) & 0x7 == 0  # nothing pending
    assert fw[8:16] == host.controller.config.firmware.encode().ljust(8, b" ")
    assert fw[16:64] == bytes(48)


def test_log_offset_and_length(host: Host) -> None:
    full = log_ok(host, FIRMWARE_LOG, 512)
    assert log_ok(host, FIRMWARE_LOG, 8, offset=8) == full[8:16]
    # Past the end of the log reads zero.
    long = log_ok(host, FIRMWARE_LOG, 1024)
    assert long[:512] == full and long[512:] == bytes(512)
    assert log_ok(host, FIRMWARE_LOG, 4, offset=512) == bytes(4)
    assert_status(get_log(host, FIRMWARE_LOG, 8, offset=2)[0], INVALID_FIELD)  # not dword aligned
    assert_status(get_log(host, FIRMWARE_LOG, 8, offset=516)[0], INVALID_FIELD)  # past the end
    assert_status(get_log(host, FIRMWARE_LOG, 8, offset=1 << 32)[0], INVALID_FIELD)


@pytest.mark.nvme_config(mdts=1)
def test_log_longer_than_mdts(host: Host) -> None:
    assert log_ok(host, ERROR_LOG, 8192)  # exactly MDTS (2 x 4 KiB)
    assert_status(get_log(host, ERROR_LOG, 8192 + 4096)[0], INVALID_FIELD)


def _entries(log: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    out = []
    for i in range(0, len(log), 64):
        count, sqid, cid, sf, loc, lba, nsid = struct.unpack_from("<QHHHHQI", log, i)
        if count:
            out.append((count, sqid, cid, sf >> 1, loc, lba, nsid))
    return out


def test_error_log_records_failed_commands(host: Host) -> None:
    assert _entries(log_ok(host, ERROR_LOG, 4096)) == []
    bad_cq = host.admin(build_sqe(CREATE_CQ, cid=0, prp1=host.alloc(4096), cdw10=15 << 16, cdw11=1))
    assert_status(bad_cq, INVALID_QID)
    bad_log = get_log(host, 0x7F, 64)[0]
    with pytest.raises(CommandError):
        host.read(1, 1 << 40, 1)  # LBA out of range on I/O queue 1
    entries = _entries(log_ok(host, ERROR_LOG, 4096))
    assert len(entries) == 3
    counts = [e[0] for e in entries]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 3  # newest first
    newest, middle, oldest = entries
    assert oldest[1:4] == (0, bad_cq.cid, bad_cq.status)
    assert middle[1:4] == (0, bad_log.cid, bad_log.status)
    assert newest[1] == 1 and (newest[3] >> 8 & 7, newest[3] & 0xFF) == LBA_RANGE
    assert newest[5] == 1 << 40 and newest[6] == 1
    # SMART counts the entries too.
    smart = log_ok(host, SMART_LOG, 512)
    assert u128(smart, 176) == 3


def test_error_log_keeps_the_newest_64(host: Host) -> None:
    for _ in range(70):
        host.admin(build_sqe(0xC1))
    entries = _entries(log_ok(host, ERROR_LOG, 64 * 64))
    assert len(entries) == 64
    assert [e[0] for e in entries] == list(range(70, 6, -1))


# -- Asynchronous Event Request ------------------------------------------------------------


def invalid_doorbell(host: Host) -> None:
    """Ring the SQ tail doorbell of a queue that does not exist (Error event, info 00h)."""
    host.controller.bar0_write(host.sq_doorbell(7), 1, 4)


def error_event_dw0(info: int) -> int:
    return 0 | info << 8 | ERROR_LOG << 16  # type 0 (Error), log page 01h


def no_completion(host: Host, cid: int) -> None:
    with pytest.raises(HostTimeoutError):
        host.wait(0, cid, timeout=0.2)


def test_aer_waits_for_an_event(host: Host) -> None:
    cid = host.submit_aer()
    no_completion(host, cid)
    invalid_doorbell(host)
    c = host.wait(0, cid)
    assert_status(c, SUCCESS)
    assert c.dw0 == error_event_dw0(0x00)


def test_aer_invalid_doorbell_value(host: Host) -> None:
    cid = host.submit_aer()
    entries = host.cq(1).entries
    host.controller.bar0_write(host.cq_doorbell(1), entries + 5, 4)  # head beyond the queue
    c = host.wait(0, cid)
    assert c.dw0 == error_event_dw0(0x01)


def test_event_before_aer_is_queued(host: Host) -> None:
    invalid_doorbell(host)
    c = host.wait(0, host.submit_aer())
    assert c.dw0 == error_event_dw0(0x00)


def test_event_type_masked_until_log_read_without_rae(host: Host) -> None:
    first = host.submit_aer()
    invalid_doorbell(host)
    assert host.wait(0, first).dw0 == error_event_dw0(0x00)
    second = host.submit_aer()
    host.controller.bar0_write(host.cq_doorbell(1), host.cq(1).entries + 5, 4)
    no_completion(host, second)  # Error events are masked
    log_ok(host, ERROR_LOG, 64, rae=True)
    no_completion(host, second)  # RAE=1 keeps them masked
    log_ok(host, ERROR_LOG, 64)
    assert host.wait(0, second).dw0 == error_event_dw0(0x01)


def test_events_racing_aer_submission(host: Host) -> None:
    # The event fires from this thread while the worker may still be running
    # the AER handler: every AER must still complete exactly once.
    for _ in range(100):
        cid = host.submit_aer()
        invalid_doorbell(host)
        assert host.wait(0, cid).dw0 == error_event_dw0(0x00)
        log_ok(host, ERROR_LOG, 64)  # unmask Error events for the next round
    assert host.admin(build_sqe(0x06, cdw10=1, prp1=host.alloc(4096))).ok


@pytest.mark.nvme_config(aerl=3)
def test_aer_limit(host: Host) -> None:
    cids = [host.submit_aer() for _ in range(4)]  # AERL + 1
    over = host.admin(build_sqe(AER))
    assert_status(over, AERL_EXCEEDED)
    for cid in cids:
        no_completion(host, cid)


@pytest.mark.nvme_config(aerl=0)
def test_aer_limit_zero_allows_one(host: Host) -> None:
    host.submit_aer()
    assert_status(host.admin(build_sqe(AER)), AERL_EXCEEDED)


@pytest.mark.nvme_config(aerl=1)
def test_reset_drops_outstanding_aers(host: Host) -> None:
    host.submit_aer()
    host.submit_aer()
    host.disable()
    host.enable()
    cids = [host.submit_aer(), host.submit_aer()]
    assert_status(host.admin(build_sqe(AER)), AERL_EXCEEDED)
    invalid_doorbell(host)
    done = host.wait(0, cids[0])
    assert done.dw0 == error_event_dw0(0x00)


# -- Abort ------------------------------------------------------------------------------------


def test_abort_outstanding_aer(host: Host) -> None:
    aer = host.submit_aer()
    abort = host.admin(build_sqe(ABORT, cdw10=aer << 16 | 0))
    assert_status(abort, SUCCESS)
    assert abort.dw0 & 1 == 0  # aborted
    aborted = host.wait(0, aer)
    assert (aborted.sct, aborted.sc) == ABORT_REQUESTED
    # The AER slot is free again.
    again = host.submit_aer()
    invalid_doorbell(host)
    assert host.wait(0, again).dw0 == error_event_dw0(0x00)


def test_abort_of_nothing_is_not_aborted(host: Host) -> None:
    for cdw10 in (0x1234 << 16 | 0, 5 << 16 | 1, 0):
        c = host.admin(build_sqe(ABORT, cdw10=cdw10))
        assert_status(c, SUCCESS)
        assert c.dw0 & 1 == 1
