"""Bad input from the guest: each gets the status or asynchronous event the spec names.

Status values are written as the NVMe Base Specification 2.0 / NVM Command
Set 1.0 give them (SCT, SC); after each case the controller must keep working.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from nvmefast import Controller
from nvmefast.testing import PAGE_SIZE, Completion, Host, build_sqe, data_pointers

MiB = 1 << 20
READ, WRITE, FLUSH = 0x02, 0x01, 0x00
NSZE = 16 * MiB // 512  # the default fixture namespace: 16 MiB of 512-byte blocks
UNMAPPED = 0x5_0000_0000  # nothing is mapped here

GENERIC = 0x0
SUCCESS = 0x00
INVALID_OPCODE = 0x01
INVALID_FIELD = 0x02
DATA_TRANSFER_ERROR = 0x04
INVALID_NSID = 0x0B
INVALID_PRP_OFFSET = 0x13
LBA_OUT_OF_RANGE = 0x80


def rw(opcode: int, slba: int, nlb: int, prp1: int, prp2: int = 0, nsid: int = 1) -> bytes:
    return build_sqe(opcode, nsid=nsid, prp1=prp1, prp2=prp2, cdw10=slba & 0xFFFF_FFFF,
                     cdw11=slba >> 32, cdw12=(nlb - 1) & 0xFFFF)


def assert_status(completion: Completion, sct: int, sc: int) -> None:
    assert (completion.sct, completion.sc) == (sct, sc), str(completion)


def assert_still_works(host: Host, qid: int = 1) -> None:
    data = os.urandom(4096)
    host.write(1, 16, data, qid=qid)
    assert host.read(1, 16, 8, qid=qid) == data
    assert host.csts() & 0b10 == 0, "CSTS.CFS set"


@pytest.mark.parametrize("opcode", [READ, WRITE])
@pytest.mark.parametrize(("slba", "nlb"), [(NSZE, 1), (NSZE - 1, 2), (NSZE - 4, 8), (2**64 - 1, 2), (2**63, 1)])
def test_lba_out_of_range(host: Host, opcode: int, slba: int, nlb: int) -> None:
    buf = host.alloc(nlb * 512)
    prps = host.build_prps(data_pointers(buf, nlb * 512))
    completion = host.io(rw(opcode, slba, nlb, prps.prp1, prps.prp2), 1)
    assert_status(completion, GENERIC, LBA_OUT_OF_RANGE)
    assert_still_works(host)


def test_transfer_larger_than_mdts(host: Host) -> None:
    # default MDTS 5: 2**5 * 4 KiB = 128 KiB = 256 blocks of 512 bytes
    buf = host.alloc(257 * 512)
    for nlb, sc in ((256, SUCCESS), (257, INVALID_FIELD)):
        prps = host.build_prps(data_pointers(buf, nlb * 512))
        for opcode in (WRITE, READ):
            assert_status(host.io(rw(opcode, 0, nlb, prps.prp1, prps.prp2), 1), GENERIC, sc)
        host.free_prps(prps)
    assert_still_works(host)


@pytest.mark.parametrize("opcode", [READ, WRITE])
@pytest.mark.parametrize("where", ["prp1", "prp2", "list_pointer", "list_entry", "straddle"])
def test_prp_outside_guest_memory(host: Host, opcode: int, where: str) -> None:
    buf = host.alloc(8 * PAGE_SIZE)
    if where == "prp1":
        sqe = rw(opcode, 0, 8, UNMAPPED)
    elif where == "prp2":
        sqe = rw(opcode, 0, 16, buf, UNMAPPED)
    elif where == "list_pointer":
        sqe = rw(opcode, 0, 24, buf, UNMAPPED)
    elif where == "list_entry":
        prps = host.build_prps([buf, buf + PAGE_SIZE, UNMAPPED, buf + 3 * PAGE_SIZE])
        sqe = rw(opcode, 0, 32, prps.prp1, prps.prp2)
    else:
        # the last page of guest memory followed by an unmapped page
        region = host.mem.regions[0]
        last = region.iova + region.size - PAGE_SIZE
        sqe = rw(opcode, 0, 16, last, last + PAGE_SIZE)
    assert_status(host.io(sqe, 1), GENERIC, DATA_TRANSFER_ERROR)
    assert_still_works(host)


def test_prp_offset_invalid(host: Host) -> None:
    buf = host.alloc(8 * PAGE_SIZE)
    # an entry after the first with a non-zero offset, in a PRP list
    prps = host.build_prps([buf, buf + PAGE_SIZE + 0x10, buf + 2 * PAGE_SIZE])
    assert_status(host.io(rw(READ, 0, 24, prps.prp1, prps.prp2), 1), GENERIC, INVALID_PRP_OFFSET)
    # the same in a list entry other than the first one of the list
    prps = host.build_prps([buf, buf + PAGE_SIZE, buf + 2 * PAGE_SIZE + 0x200, buf + 3 * PAGE_SIZE])
    assert_status(host.io(rw(WRITE, 0, 32, prps.prp1, prps.prp2), 1), GENERIC, INVALID_PRP_OFFSET)
    # PRP2 used as the second data page must be page aligned
    assert_status(host.io(rw(READ, 0, 16, buf, buf + PAGE_SIZE + 0x800), 1), GENERIC, INVALID_PRP_OFFSET)
    # PRP1's offset must be dword aligned (bits 1:0 clear)
    assert_status(host.io(rw(READ, 0, 1, buf + 2), 1), GENERIC, INVALID_PRP_OFFSET)
    assert_still_works(host)


@pytest.mark.parametrize("opcode", [0x03, 0x06, 0x7B])
def test_unknown_io_opcode(host: Host, opcode: int) -> None:
    assert_status(host.io(build_sqe(opcode, nsid=1), 1), GENERIC, INVALID_OPCODE)
    assert_still_works(host)


def test_unknown_admin_opcode(host: Host) -> None:
    assert_status(host.admin(build_sqe(0x03)), GENERIC, INVALID_OPCODE)
    assert_still_works(host)


# NN is 256: NSID 0 and those above NN are invalid (Invalid Namespace or
# Format); a valid NSID with no namespace is inactive (Invalid Field in
# Command, NVMe Base 2.0 3.2.1.5).
@pytest.mark.parametrize("nsid", [0, 257, 0xFFFF_FFFE, 0xFFFF_FFFF])
@pytest.mark.parametrize("opcode", [READ, WRITE])
def test_invalid_nsid(host: Host, nsid: int, opcode: int) -> None:
    buf = host.alloc(PAGE_SIZE)
    assert_status(host.io(rw(opcode, 0, 1, buf, nsid=nsid), 1), GENERIC, INVALID_NSID)
    assert_still_works(host)


@pytest.mark.parametrize("nsid", [2, 256])
@pytest.mark.parametrize("opcode", [READ, WRITE, FLUSH])
def test_inactive_nsid(host: Host, nsid: int, opcode: int) -> None:
    buf = host.alloc(PAGE_SIZE)
    assert_status(host.io(rw(opcode, 0, 1, buf, nsid=nsid), 1), GENERIC, INVALID_FIELD)
    assert_still_works(host)


def test_flush_invalid_nsid(host: Host) -> None:
    assert_status(host.io(build_sqe(FLUSH, nsid=257), 1), GENERIC, INVALID_NSID)


def _expect_error_event(host: Host, aer_cid: int, info: int) -> None:
    completion = host.wait(0, aer_cid)
    assert completion.ok, str(completion)
    # DW0: Asynchronous Event Type 2:0 (0 = Error status), Information 15:8, Log Page 23:16
    assert completion.dw0 & 0x7 == 0
    assert (completion.dw0 >> 8) & 0xFF == info, f"dw0={completion.dw0:#x}"
    assert (completion.dw0 >> 16) & 0xFF == 0x01  # Error Information log
    # reading the log page (RAE=0) clears the event so the next one is reported
    host.get_log_page(0x01, 64)


def test_invalid_doorbells_raise_async_events(host: Host, controller: Controller) -> None:
    entries = host.sq(1).entries
    # SQ tail beyond the queue: Invalid Doorbell Write Value (01h)
    cid = host.submit_aer()
    controller.bar0_write(host.sq_doorbell(1), entries, 4)
    _expect_error_event(host, cid, 0x01)
    assert_still_works(host)
    # CQ head beyond the queue: Invalid Doorbell Write Value (01h)
    cid = host.submit_aer()
    controller.bar0_write(host.cq_doorbell(1), entries + 3, 4)
    _expect_error_event(host, cid, 0x01)
    assert_still_works(host)
    # a doorbell of a queue that does not exist: Invalid Doorbell Register (00h)
    cid = host.submit_aer()
    controller.bar0_write(host.sq_doorbell(5), 1, 4)
    _expect_error_event(host, cid, 0x00)
    cid = host.submit_aer()
    controller.bar0_write(host.cq_doorbell(6), 1, 4)
    _expect_error_event(host, cid, 0x00)
    assert_still_works(host)


def test_error_events_masked_until_log_read(host: Host, controller: Controller) -> None:
    first = host.submit_aer()
    controller.bar0_write(host.sq_doorbell(4), 1, 4)
    assert host.wait(0, first).ok
    second = host.submit_aer()
    controller.bar0_write(host.sq_doorbell(4), 1, 4)
    # "subsequent events of that event type are automatically masked by the
    # controller until the host clears that event" (Base 2.0 §5.2)
    time.sleep(0.2)
    host.reap(0)
    assert (0, second) not in host.cq(0).done, "an Error event was reported before the log page was read"
    host.get_log_page(0x01, 64)
    assert_still_works(host)


def test_failed_io_is_logged(host: Host) -> None:
    completion = host.io(rw(READ, 0, 1, UNMAPPED), 1)
    assert_status(completion, GENERIC, DATA_TRANSFER_ERROR)
    entry = host.get_log_page(0x01, 64)
    error_count, sqid, cid, status = struct.unpack_from("<QHHH", entry, 0)
    assert error_count >= 1
    assert (sqid, cid) == (1, completion.cid)
    # Status Field: bits 15:1 are the CQE status, bit 0 the phase tag
    assert status >> 1 == completion.status
    assert struct.unpack_from("<I", entry, 24)[0] == 1  # Namespace


def test_unmap_while_io_runs(host: Host, controller: Controller) -> None:
    second = 0x9_0000_0000
    size = 4 * MiB
    host.add_region(second, size)
    buf = host.alloc(64 * 1024, region=second)
    host.write_mem(buf, os.urandom(64 * 1024))
    prps = host.build_prps(data_pointers(buf, 64 * 1024))  # list page in region 1
    unmapped = threading.Event()
    after_unmap: list[Completion] = []
    before_unmap: list[Completion] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            deadline = time.monotonic() + 20
            i = 0
            while len(after_unmap) < 20 and time.monotonic() < deadline:
                late = unmapped.is_set()
                completion = host.io(rw(WRITE if i % 2 else READ, 0, 128, prps.prp1, prps.prp2), 1)
                (after_unmap if late else before_unmap).append(completion)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    # unmap while commands are in flight, after some have gone through
    deadline = time.monotonic() + 10
    while len(before_unmap) < 50 and time.monotonic() < deadline:
        time.sleep(0.001)
    controller.unmap_dma(second, size)
    unmapped.set()
    thread.join(30)
    assert not thread.is_alive(), "I/O hung after unmap_dma"
    assert not errors, errors
    assert len(before_unmap) >= 50
    assert all(c.ok for c in before_unmap[:50]), "I/O failed before unmap_dma"
    for completion in before_unmap:
        assert (completion.sct, completion.sc) in {(GENERIC, SUCCESS), (GENERIC, DATA_TRANSFER_ERROR)}
    # commands submitted after unmap_dma returned must not reach the old memory
    assert after_unmap and all((c.sct, c.sc) == (GENERIC, DATA_TRANSFER_ERROR) for c in after_unmap)
    host.mem.remove_region(second)
    assert_still_works(host)
