"""Controller bring-up the way the Linux nvme driver does it, and Identify contents.

Expected values come from the NVMe Base Specification 2.0 and from the test's
own ControllerConfig, never from the device's tables.
"""

from __future__ import annotations

import os

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.errors import CommandError, HostTimeoutError
from nvmefast.testing import Host
from nvmefast.testing.identify import parse_ns_descriptors, parse_nsid_list

MiB = 1 << 20

CAP, VS, CC, CSTS, AQA, ASQ, ACQ = 0x00, 0x08, 0x14, 0x1C, 0x24, 0x28, 0x30


def test_cap_reports_config(controller: Controller, config: ControllerConfig) -> None:
    cap = controller.bar0_read(CAP, 8)
    assert cap & 0xFFFF == config.max_queue_entries - 1  # MQES is 0's based
    assert (cap >> 32) & 0xF == config.doorbell_stride  # DSTRD
    assert (cap >> 37) & 1 == 1  # CSS bit 0: NVM command set supported
    assert (cap >> 48) & 0xF == 0  # MPSMIN: 4 KiB pages must be allowed
    assert (cap >> 24) & 0xFF >= 1  # TO: a ready timeout of at least 500 ms
    vs = controller.bar0_read(VS, 4)
    assert vs >> 16 >= 1  # major version
    assert controller.bar0_read(CSTS, 4) & 1 == 0  # not ready before CC.EN


def test_enable_programs_registers_like_linux(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    # EN | CSS 110b (CAP.CSS bit 6: every I/O command set) | MPS 0 | AMS 000b | SHN 00b | IOSQES 6 | IOCQES 4
    assert controller.bar0_read(CC, 4) == 0x0046_0061
    csts = controller.bar0_read(CSTS, 4)
    assert csts & 0b11 == 0b01, f"CSTS={csts:#x}: RDY must be 1 and CFS 0"
    assert controller.bar0_read(AQA, 4) == (31 << 16 | 31)
    admin = bare_host.sq(0)
    assert controller.bar0_read(ASQ, 8) == admin.iova
    assert controller.bar0_read(ACQ, 8) == bare_host.cq(0).iova
    # the admin queue works and raises an interrupt on vector 0
    bare_host.identify_controller()
    assert bare_host.interrupts[0] >= 1


def test_disable_then_reenable(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    bare_host.set_num_queues(2, 2)
    bare_host.create_io_queue_pair(1)
    bare_host.write(1, 0, b"\xa5" * 512)
    bare_host.disable()
    assert controller.bar0_read(CSTS, 4) & 1 == 0
    bare_host.enable()
    bare_host.set_num_queues(2, 2)
    bare_host.create_io_queue_pair(1)
    # the reset deleted the queues, not the namespace contents
    assert bare_host.read(1, 0, 1) == b"\xa5" * 512


def test_shutdown_reports_complete(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    bare_host.shutdown()
    assert (controller.bar0_read(CSTS, 4) >> 2) & 0b11 == 0b10  # SHST: shutdown complete


@pytest.mark.nvme_config(
    serial="SN-1234567890ABCDEF",
    model="Model With Spaces",
    firmware="FW9.8",
    mdts=3,
    aerl=2,
    namespaces=[
        NamespaceConfig(size_bytes=8 * MiB, lba_size=512),
        NamespaceConfig(size_bytes=12 * MiB, lba_size=4096, backend="null"),
    ],
)
def test_identify_controller_matches_config(bare_host: Host) -> None:
    bare_host.enable()
    ident = bare_host.identify_controller()
    raw = ident.raw
    assert len(raw) == 4096
    # SN, MN and FR are ASCII, space padded to their full width
    assert raw[4:24] == b"SN-1234567890ABCDEF".ljust(20)
    assert raw[24:64] == b"Model With Spaces".ljust(40)
    assert raw[64:72] == b"FW9.8".ljust(8)
    assert ident.nn == 256  # the NSIDs namespace management may use, whatever is configured
    assert ident.mdts == 3
    assert ident.aerl == 2
    # SQES/CQES: required (3:0) and maximum (7:4) entry sizes, 64 and 16 bytes
    assert ident.sqes & 0xF == 6 and ident.sqes >> 4 >= 6
    assert ident.cqes & 0xF == 4 and ident.cqes >> 4 >= 4
    # VER reports the same version as the VS register
    assert ident.ver == bare_host.controller.bar0_read(VS, 4)


@pytest.mark.nvme_config(
    namespaces=[
        NamespaceConfig(size_bytes=8 * MiB, lba_size=512),
        NamespaceConfig(size_bytes=12 * MiB, lba_size=4096, backend="null"),
    ],
)
def test_identify_namespaces_match_config(bare_host: Host) -> None:
    bare_host.enable()
    ns1 = bare_host.identify_namespace(1)
    assert (ns1.nsze, ns1.ncap, ns1.lba_size) == (8 * MiB // 512, 8 * MiB // 512, 512)
    ns2 = bare_host.identify_namespace(2)
    assert (ns2.nsze, ns2.ncap, ns2.lba_size) == (12 * MiB // 4096, 12 * MiB // 4096, 4096)
    assert ns1.lbaf[ns1.format_index].ms == 0  # no metadata
    # CNS 02h: active NSIDs greater than the given NSID, ascending
    assert parse_nsid_list(bare_host.identify(0x02, nsid=0)) == [1, 2]
    assert parse_nsid_list(bare_host.identify(0x02, nsid=1)) == [2]
    assert parse_nsid_list(bare_host.identify(0x02, nsid=2)) == []
    # CNS 03h: at least one descriptor; EUI64 8, NGUID 16, UUID 16, CSI 1 bytes
    lengths = {1: 8, 2: 16, 3: 16, 4: 1}
    ids = []
    for nsid in (1, 2):
        descriptors = parse_ns_descriptors(bare_host.identify(0x03, nsid=nsid))
        assert descriptors, f"namespace {nsid} has no identification descriptor"
        for nidt, nid in descriptors:
            assert nidt in lengths and len(nid) == lengths[nidt], (nidt, nid)
        ids.append(descriptors)
    assert ids[0] != ids[1], "two namespaces share their identifiers"


def test_identify_unknown_namespace_fails(bare_host: Host) -> None:
    bare_host.enable()
    with pytest.raises(CommandError) as info:
        bare_host.identify_namespace(0x101)
    assert (info.value.sct, info.value.sc) == (0x0, 0x0B)  # Invalid Namespace or Format: above NN


def test_number_of_queues_is_capped(bare_host: Host) -> None:
    bare_host.enable()
    # Asking for more than the controller has returns what it allocated (<= 8 pairs here).
    nsqa, ncqa = bare_host.set_num_queues(64, 64)
    assert (nsqa, ncqa) == (8, 8)


@pytest.mark.nvme_config(max_io_queue_pairs=4)
def test_several_queue_pairs(bare_host: Host) -> None:
    bare_host.enable()
    assert bare_host.set_num_queues(4, 4) == (4, 4)
    pairs = [bare_host.create_io_queue_pair(qid, entries=16) for qid in (1, 2, 3, 4)]
    assert [p.vector for p in pairs] == [1, 2, 3, 4]
    for qid in (1, 2, 3, 4):
        bare_host.write(1, qid * 8, bytes([qid]) * 4096, qid=qid)
    for qid in (1, 2, 3, 4):
        # read back through another queue than the one that wrote
        other = qid % 4 + 1
        assert bare_host.read(1, qid * 8, 8, qid=other) == bytes([qid]) * 4096
    for vector in (1, 2, 3, 4):
        assert bare_host.interrupts[vector] >= 1, f"no interrupt on vector {vector}"
    # A fifth pair exceeds what Set Features Number of Queues allocated.
    with pytest.raises(CommandError) as info:
        bare_host.create_io_queue_pair(5, entries=16, vector=1)
    assert (info.value.sct, info.value.sc) == (0x1, 0x01)  # Invalid Queue Identifier
    for qid in (4, 3, 2, 1):
        bare_host.delete_io_queue_pair(qid)


@pytest.mark.nvme_config(doorbell_stride=2)
def test_doorbell_stride(host: Host, controller: Controller) -> None:
    # With DSTRD 2, doorbells are 16 bytes apart; the host computes them from CAP.
    assert host.sq_doorbell(1) == 0x1000 + 2 * 16
    host.write(1, 3, os.urandom(512))
    host.read(1, 3, 1)


def test_shared_vector_and_shared_cq(bare_host: Host) -> None:
    bare_host.enable()
    bare_host.set_num_queues(4, 4)
    # Two CQs on vector 1, and two SQs on the second CQ.
    bare_host.create_io_queue_pair(1, entries=8, vector=1)
    bare_host.create_io_cq(2, entries=8, vector=1)
    bare_host.create_io_sq(2, entries=8, cqid=2)
    bare_host.create_io_sq(3, entries=8, cqid=2)
    data = os.urandom(1024)
    bare_host.write(1, 10, data, qid=2)
    assert bare_host.read(1, 10, 2, qid=3) == data
    assert bare_host.read(1, 10, 2, qid=1) == data
    assert bare_host.interrupts[1] >= 3
    assert bare_host.interrupts[2] == 0


def test_polled_host(controller: Controller) -> None:
    # irq=False: no eventfd anywhere, every CQ found by its phase tag alone.
    with Host(controller, irq=False, memory_bytes=8 * MiB) as host:
        host.enable()
        assert host.set_num_queues(1, 1) == (1, 1)
        pair = host.create_io_queue_pair(1, entries=8)
        assert not pair.irq
        data = os.urandom(8192)
        host.write(1, 0, data)
        assert host.read(1, 0, 16) == data
        assert sum(host.interrupts.values()) == 0


@pytest.mark.nvme_config(max_queue_entries=16)
def test_enable_timeout_names_csts(controller: Controller) -> None:
    # An admin queue larger than CAP.MQES + 1 must not become ready; the host says so.
    with Host(controller, admin_entries=32, memory_bytes=4 * MiB) as host:
        with pytest.raises(HostTimeoutError, match="CSTS"):
            host.enable(timeout=0.3)
