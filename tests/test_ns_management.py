"""Namespace Management (0Dh), Namespace Attachment (15h), the Identify data
they change, and the Namespace Attribute Changed notice around them.

Expected values are the spec's literals (NVMe Base 2.0 5.19, 5.20, 5.17.2,
Figures 134/275/276/385; NVM Command Set 1.0 Figure 97), not the
controller's own tables.
"""

from __future__ import annotations

import struct

import pytest

from adminutil import (
    IDENTIFY, INVALID_FIELD, INVALID_FORMAT, INVALID_NSID, MiB, NSID_ALL, SET_FEATURES, SUCCESS, assert_status,
    cmd, get_log, identify, no_completion, read_cmd, u16, u32, u64,
)  # fmt: skip
from nvmefast import Controller, NamespaceConfig
from nvmefast.testing import Host, build_sqe
from nvmefast.testing.namespaces import (
    attach_namespace, build_controller_list, build_create_structure, create_namespace, delete_namespace,
    detach_namespace, parse_controller_list,
)  # fmt: skip

# Command specific statuses (SCT 1h), NVMe Base 2.0 Figure 100 (values as Linux and libnvme name them).
INSUFFICIENT_CAPACITY = (1, 0x15)
ID_UNAVAILABLE = (1, 0x16)
ALREADY_ATTACHED = (1, 0x18)
NOT_ATTACHED = (1, 0x1A)
THIN_PROVISIONING = (1, 0x1B)
CONTROLLER_LIST_INVALID = (1, 0x1C)
IOCS_NOT_SUPPORTED = (1, 0x29)
IOCS_NOT_ENABLED = (1, 0x2A)
NOTICE_NS_CHANGED = 0x2 | 0x00 << 8 | 0x04 << 16  # type Notice, info 00h, log 04h

CAPACITY = 64 * MiB
MANAGED = pytest.mark.nvme_config(capacity_bytes=CAPACITY)  # one 16 MiB namespace configured (conftest)


def create(host: Host, nsze: int, **kw: int) -> int:
    c = create_namespace(host, build_create_structure(nsze, **kw))
    assert_status(c, SUCCESS)
    return c.dw0


def capacities(host: Host) -> tuple[int, int]:
    """(TNVMCAP, UNVMCAP) from Identify Controller bytes 295:280 and 311:296."""
    data = host.identify(0x01)
    return int.from_bytes(data[280:296], "little"), int.from_bytes(data[296:312], "little")


def nsid_list(data: bytes) -> list[int]:
    out = []
    for i in range(0, 4096, 4):
        nsid = u32(data, i)
        if not nsid:
            break
        out.append(nsid)
    return out


def changed(host: Host, rae: bool = False) -> list[int]:
    c, data = get_log(host, 0x04, 4096, rae=rae)
    assert_status(c, SUCCESS)
    return nsid_list(data)


def enable_notices(host: Host) -> None:
    assert_status(cmd(host, SET_FEATURES, cdw10=0x0B, cdw11=1 << 8), SUCCESS)


# -- Identify Controller ---------------------------------------------------------------------------


@MANAGED
def test_identify_controller_fields(host: Host) -> None:
    data = host.identify(0x01)
    assert u16(data, 256) & (1 << 3)  # OACS bit 3: Namespace Management and Attachment
    assert u32(data, 92) & (1 << 8)  # OAES bit 8: Namespace Attribute Notices
    assert u32(data, 516) == 256  # NN
    assert u32(data, 540) == 256  # MNAN
    assert capacities(host) == (CAPACITY, CAPACITY - 16 * MiB)
    assert u16(data, 78) == 0  # CNTLID: the one a Controller List may name


def test_default_capacity_is_what_the_namespaces_take(host: Host) -> None:
    assert capacities(host) == (16 * MiB, 0)
    assert_status(create_namespace(host, build_create_structure(8)), INSUFFICIENT_CAPACITY)


# -- Create ---------------------------------------------------------------------------------------------


@MANAGED
def test_create_attach_use_detach_delete(host: Host) -> None:
    nsid = create(host, 2048, flbas=0)  # 2048 blocks of LBA format 0 (512 bytes): 1 MiB
    assert nsid == 2  # the lowest free NSID
    assert capacities(host) == (CAPACITY, CAPACITY - 17 * MiB)
    # Allocated, not attached: no Identify Namespace (zeros), but the allocated forms describe it.
    assert identify(host, 0x00, nsid)[1] == bytes(4096)
    c, data = identify(host, 0x11, nsid)
    assert_status(c, SUCCESS)
    assert (u64(data, 0), u64(data, 8)) == (2048, 2048)  # NSZE, NCAP
    assert int.from_bytes(data[48:64], "little") == MiB  # NVMCAP
    assert nsid_list(identify(host, 0x02)[1]) == [1]
    assert nsid_list(identify(host, 0x10)[1]) == [1, 2]
    assert parse_controller_list(identify(host, 0x12, nsid)[1]) == []
    buf = host.alloc(4096)
    io = host.io(build_sqe(0x02, nsid=nsid, prp1=buf, cdw12=0))
    assert (io.sct, io.sc) == INVALID_FIELD  # inactive NSID
    assert_status(attach_namespace(host, nsid, [0]), SUCCESS)
    assert nsid_list(identify(host, 0x02)[1]) == [1, 2]
    assert parse_controller_list(identify(host, 0x12, nsid)[1]) == [0]
    assert host.identify_namespace(nsid).nsze == 2048
    host.write(nsid, 2047, b"\xa5" * 512)
    assert host.read(nsid, 2047, 1) == b"\xa5" * 512
    assert_status(detach_namespace(host, nsid, [0]), SUCCESS)
    io = host.io(build_sqe(0x02, nsid=nsid, prp1=buf, cdw12=0))
    assert (io.sct, io.sc) == INVALID_FIELD
    assert_status(delete_namespace(host, nsid), SUCCESS)
    assert capacities(host) == (CAPACITY, CAPACITY - 16 * MiB)
    assert nsid_list(identify(host, 0x10)[1]) == [1]
    assert identify(host, 0x11, nsid)[1] == bytes(4096)  # unallocated: zeros


@MANAGED
def test_create_with_metadata_and_protection(host: Host) -> None:
    # The format 512+8 from the common capabilities (NLBAF at byte 25, LBAF n at 128 + 4n), as
    # nvme-cli create-ns -b does; DPS type 1, extended LBA (FLBAS bit 4).
    lbaf = host.identify(0x00, NSID_ALL)
    formats = [struct.unpack_from("<HB", lbaf, 128 + 4 * i) for i in range(lbaf[25] + 1)]
    index = formats.index((8, 9))
    nsid = create(host, 1024, flbas=index | 0x10, dps=1)
    assert_status(attach_namespace(host, nsid), SUCCESS)
    data = host.identify(0x00, nsid)
    assert (data[26], data[29]) == (index | 0x10, 1)  # FLBAS, DPS as created
    assert int.from_bytes(data[48:64], "little") == 1024 * 512  # NVMCAP: the data it holds


def test_identify_namespace_broadcast_gives_the_formats(host: Host) -> None:
    c, data = identify(host, 0x00, NSID_ALL)
    assert_status(c, SUCCESS)
    assert u64(data, 0) == 0 and data[25] >= 1  # no size; NLBAF
    assert data[128 + 2] == 9  # LBA format 0: LBADS 9 (512 bytes)


@MANAGED
@pytest.mark.parametrize(
    ("fields", "csi", "expected"),
    [
        ({"nsze": 0}, 0, INVALID_FIELD),
        ({"nsze": 16, "ncap": 8}, 0, THIN_PROVISIONING),
        ({"nsze": 16, "ncap": 32}, 0, INVALID_FIELD),
        ({"nsze": 16, "flbas": 0xF}, 0, INVALID_FORMAT),  # past NLBAF
        ({"nsze": 16, "dps": 1}, 0, INVALID_FORMAT),  # PI without metadata (format 0)
        ({"nsze": 16, "flbas": 1, "dps": 5}, 0, INVALID_FIELD),  # PI type 5: reserved
        ({"nsze": 16, "nmic": 0x2}, 0, INVALID_FIELD),  # reserved NMIC bit
        ({"nsze": 16, "anagrpid": 1}, 0, INVALID_FIELD),
        ({"nsze": 16, "nvmsetid": 1}, 0, INVALID_FIELD),
        ({"nsze": 16, "endgid": 1}, 0, INVALID_FIELD),
        ({"nsze": 16}, 1, IOCS_NOT_SUPPORTED),  # CSI 01h: Key Value, not supported
        ({"nsze": 16}, 0x30, IOCS_NOT_SUPPORTED),
        ({"nsze": 1 << 40}, 0, INSUFFICIENT_CAPACITY),
        ({"nsze": 48 * 2048 + 1}, 0, INSUFFICIENT_CAPACITY),  # one block past the 48 MiB free
        ({"nsze": 100}, 2, INVALID_FIELD),  # zoned: no whole number of 16 MiB zones
    ],
)
def test_create_rejects(host: Host, fields: dict[str, int], csi: int, expected: tuple[int, int]) -> None:
    nsze = fields.pop("nsze")
    assert_status(create_namespace(host, build_create_structure(nsze, **fields), csi), expected)
    assert capacities(host) == (CAPACITY, CAPACITY - 16 * MiB)  # nothing allocated
    assert nsid_list(identify(host, 0x10)[1]) == [1]


@MANAGED
def test_create_fills_capacity_exactly_then_refuses(host: Host) -> None:
    nsid = create(host, 48 * 2048)  # all 48 MiB
    assert capacities(host) == (CAPACITY, 0)
    assert_status(create_namespace(host, build_create_structure(1)), INSUFFICIENT_CAPACITY)
    assert_status(delete_namespace(host, nsid), SUCCESS)
    assert capacities(host)[1] == 48 * MiB


@pytest.mark.nvme_config(capacity_bytes=1 << 40, namespaces=[])
def test_create_until_no_nsid_is_free(host: Host) -> None:
    for expected in range(1, 257):
        assert create(host, 1) == expected
    assert_status(create_namespace(host, build_create_structure(1)), ID_UNAVAILABLE)
    assert_status(delete_namespace(host, 77), SUCCESS)
    assert create(host, 1) == 77  # the lowest free NSID again
    assert_status(delete_namespace(host, NSID_ALL), SUCCESS)
    assert nsid_list(identify(host, 0x10)[1]) == []


@MANAGED
def test_create_zoned(host: Host) -> None:
    nsid = create_namespace(host, build_create_structure(2 * 16 * 2048), csi=2)
    assert_status(nsid, SUCCESS)
    # Allocated lists by CSI (1Ah): the zoned one only under CSI 02h.
    assert nsid_list(identify(host, 0x1A, 0, csi=2)[1]) == [nsid.dw0]
    assert nsid_list(identify(host, 0x1A, 0, csi=0)[1]) == [1]
    c, data = identify(host, 0x1B, nsid.dw0, csi=2)  # CSI specific, allocated: the zone size
    assert_status(c, SUCCESS)
    assert u64(data, 2816) == 16 * 2048  # ZSZE of LBA format 0 (ZNS 1.1 Figure 48: LBA Format Extension)
    assert_status(attach_namespace(host, nsid.dw0), SUCCESS)  # the host enabled every command set
    assert nsid_list(identify(host, 0x07, 0, csi=2)[1]) == [nsid.dw0]


@MANAGED
def test_zoned_namespace_cannot_attach_under_nvm_only(bare_host: Host) -> None:
    bare_host.enable(css=0b000)  # CC.CSS: the NVM Command Set only
    nsid = create_namespace(bare_host, build_create_structure(16 * 2048), csi=2)
    assert_status(nsid, SUCCESS)
    assert_status(attach_namespace(bare_host, nsid.dw0), IOCS_NOT_ENABLED)


def test_create_bad_data_pointer(host: Host) -> None:
    c = cmd(host, 0x0D, cdw10=0, prp1=0x123)  # PRP1 not dword aligned
    assert (c.sct, c.sc) != (0, 0) and c.dnr


# -- Delete ---------------------------------------------------------------------------------------------


@MANAGED
@pytest.mark.parametrize(("nsid", "expected"), [(0, INVALID_NSID), (257, INVALID_NSID), (0xFFFFFFFE, INVALID_NSID),
                                                (5, INVALID_FIELD), (256, INVALID_FIELD)])  # fmt: skip
def test_delete_rejects(host: Host, nsid: int, expected: tuple[int, int]) -> None:
    assert_status(delete_namespace(host, nsid), expected)


@MANAGED
@pytest.mark.parametrize("sel", [2, 0xF])
def test_management_reserved_select(host: Host, sel: int) -> None:
    assert_status(cmd(host, 0x0D, nsid=1, cdw10=sel), INVALID_FIELD)


@MANAGED
def test_delete_configured_namespace_and_all(host: Host) -> None:
    create(host, 2048)
    assert_status(delete_namespace(host, 1), SUCCESS)  # a configured one too
    assert nsid_list(identify(host, 0x10)[1]) == [2]
    assert_status(delete_namespace(host, NSID_ALL), SUCCESS)
    assert_status(delete_namespace(host, NSID_ALL), SUCCESS)  # none left: still success
    assert capacities(host) == (CAPACITY, CAPACITY)


# -- Attachment ------------------------------------------------------------------------------------------


@MANAGED
def test_attachment_statuses(host: Host) -> None:
    nsid = create(host, 2048)
    assert_status(detach_namespace(host, nsid), NOT_ATTACHED)
    assert_status(attach_namespace(host, nsid), SUCCESS)
    assert_status(attach_namespace(host, nsid), ALREADY_ATTACHED)
    assert_status(attach_namespace(host, 1), ALREADY_ATTACHED)  # a configured namespace starts attached
    for cntlids in ([1], [0, 1], [0xFFFF]):  # controllers that are not in this NVM subsystem
        assert_status(detach_namespace(host, nsid, cntlids), CONTROLLER_LIST_INVALID)
    assert_status(detach_namespace(host, nsid, []), CONTROLLER_LIST_INVALID)  # nvme-cli 2.3 without -c
    assert_status(detach_namespace(host, nsid, [0, 0]), CONTROLLER_LIST_INVALID)  # one twice
    assert nsid_list(identify(host, 0x02)[1]) == [1, 2]  # nothing changed by the failures
    for nsid_bad, expected in ((0, INVALID_NSID), (257, INVALID_NSID), (NSID_ALL, INVALID_FIELD), (9, INVALID_FIELD)):
        assert_status(attach_namespace(host, nsid_bad), expected)
    c = host.admin(build_sqe(0x15, nsid=nsid, cdw10=2))  # SEL 2h: reserved
    assert_status(c, INVALID_FIELD)


def test_controller_list_count_past_2047(host: Host) -> None:
    data = bytearray(build_controller_list([0]))
    struct.pack_into("<H", data, 0, 2048)
    buf = host.alloc(4096)
    host.write_mem(buf, bytes(data))
    assert_status(host.admin(build_sqe(0x15, nsid=1, cdw10=1, prp1=buf)), CONTROLLER_LIST_INVALID)


def test_identify_controller_lists(host: Host) -> None:
    c, data = read_cmd(host, IDENTIFY, cdw10=0x13)
    assert_status(c, SUCCESS)
    assert parse_controller_list(data) == [0]
    _, data = read_cmd(host, IDENTIFY, cdw10=0x13 | 1 << 16)  # CNTID 1: from 1 up, none
    assert parse_controller_list(data) == []
    assert parse_controller_list(read_cmd(host, IDENTIFY, nsid=1, cdw10=0x12)[1]) == [0]
    for nsid in (NSID_ALL, 2):  # broadcast, unallocated: QEMU and the spec's Invalid Field
        assert_status(read_cmd(host, IDENTIFY, nsid=nsid, cdw10=0x12)[0], INVALID_FIELD)
    assert_status(read_cmd(host, IDENTIFY, nsid=NSID_ALL, cdw10=0x10)[0], INVALID_NSID)
    assert_status(read_cmd(host, IDENTIFY, nsid=NSID_ALL, cdw10=0x11)[0], INVALID_NSID)
    assert_status(read_cmd(host, IDENTIFY, nsid=257, cdw10=0x11)[0], INVALID_NSID)


# -- Notices -----------------------------------------------------------------------------------------------


@MANAGED
def test_attach_and_detach_notify_this_controller(host: Host) -> None:
    nsid = create(host, 2048)
    enable_notices(host)
    aer = host.submit_aer()
    no_completion(host, aer)  # a create attaches it nowhere: nothing to tell
    assert_status(attach_namespace(host, nsid), SUCCESS)
    assert host.wait(0, aer).dw0 == NOTICE_NS_CHANGED
    assert changed(host, rae=True) == [nsid]  # RAE=1: the list stays and notices stay masked
    second = host.submit_aer()
    assert_status(detach_namespace(host, nsid), SUCCESS)
    no_completion(host, second)
    assert changed(host) == [nsid]
    assert changed(host) == []
    assert_status(attach_namespace(host, nsid), SUCCESS)
    assert host.wait(0, second).dw0 == NOTICE_NS_CHANGED
    assert changed(host) == [nsid]


@MANAGED
def test_delete_does_not_notify_the_controller_that_processed_it(host: Host) -> None:
    nsid = create(host, 2048)
    assert_status(attach_namespace(host, nsid), SUCCESS)
    assert changed(host) == [nsid]
    enable_notices(host)
    aer = host.submit_aer()
    assert_status(delete_namespace(host, nsid), SUCCESS)
    no_completion(host, aer)  # NVMe Base 2.0 8.1.16.2
    assert nsid_list(identify(host, 0x02)[1]) == [1]


# -- Attach and detach racing I/O -------------------------------------------------------------------------


@MANAGED
def test_detach_while_io_is_outstanding(host: Host) -> None:
    nsid = create(host, 2048)
    assert_status(attach_namespace(host, nsid), SUCCESS)
    host.identify_namespace(nsid)
    host.write(nsid, 0, bytes(range(256)) * 2)
    buf = host.alloc(4096)
    cids = [host.submit(build_sqe(0x02, nsid=nsid, prp1=buf, cdw10=i % 2048, cdw12=0), 1) for i in range(24)]
    other = [host.submit(build_sqe(0x02, nsid=1, prp1=buf, cdw10=i, cdw12=0), 1) for i in range(8)]
    assert_status(detach_namespace(host, nsid), SUCCESS)
    outcomes = {(c.sct, c.sc) for c in (host.wait(1, cid) for cid in cids)}
    assert outcomes <= {SUCCESS, INVALID_FIELD}  # before the detach, or after it: inactive
    assert all(host.wait(1, cid).ok for cid in other)  # the other namespace is untouched
    io = host.io(build_sqe(0x02, nsid=nsid, prp1=buf, cdw12=0))
    assert (io.sct, io.sc) == INVALID_FIELD
    assert_status(attach_namespace(host, nsid), SUCCESS)
    assert host.read(nsid, 0, 1) == bytes(range(256)) * 2  # attachment never touches the data


@MANAGED
def test_a_create_that_cannot_be_recorded_leaves_nothing_behind(
    host: Host, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Create whose manifest cannot be written fails, and takes neither an
    NSID nor capacity: the next Create gets the same NSID, UNVMCAP is as before."""
    before = capacities(host)
    manager = controller._admin.namespaces

    def full(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manager, "_save", full)
    c = create_namespace(host, build_create_structure(2048))
    assert not c.ok, "the Create succeeded although it could not be recorded"
    assert capacities(host) == before
    assert nsid_list(identify(host, 0x10)[1]) == [1]  # allocated: the configured one only
    monkeypatch.undo()
    assert create(host, 2048) == 2


@MANAGED
def test_attach_checks_the_namespace_as_it_is_when_it_changes_it(
    host: Host, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Attach whose NSID the embedder removes and fills again (attached)
    while the controller list is read answers for the namespace that is there
    now: Namespace Already Attached, not a second attach of the new one."""
    nsid = create(host, 2048)  # allocated, not attached
    admin = controller._admin
    engine = admin.engine

    class Racing:
        """The engine, with the embedder's change inside the list's read."""

        def __getattr__(self, name: str) -> object:
            return getattr(engine, name)

        def read_prp(self, *args: int) -> object:
            monkeypatch.setattr(admin, "engine", engine)
            controller.remove_namespace(nsid)
            assert controller.add_namespace(NamespaceConfig(size_bytes=1 * MiB)) == nsid
            return engine.read_prp(*args)

    monkeypatch.setattr(admin, "engine", Racing())
    assert_status(attach_namespace(host, nsid), ALREADY_ATTACHED)
