"""Admin commands, driven through the admin queue by the testing Host.

Each test checks the controller against NVMe Base 2.0 section 5: the status a bad
field earns (SCT/SC, with DNR), and on success the data the host reads back,
parsed at the spec's byte offsets.
"""

from __future__ import annotations

import struct

import pytest

from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Completion, Host, IdentifyController, IdentifyNamespace, build_sqe

MiB = 1 << 20

# Admin opcodes (Figure 139).
DELETE_SQ, CREATE_SQ, GET_LOG_PAGE, DELETE_CQ, CREATE_CQ = 0x00, 0x01, 0x02, 0x04, 0x05
IDENTIFY, ABORT, SET_FEATURES, GET_FEATURES, AER = 0x06, 0x08, 0x09, 0x0A, 0x0C

# (SCT, SC) pairs.
SUCCESS = (0, 0x00)
INVALID_OPCODE = (0, 0x01)
INVALID_FIELD = (0, 0x02)
ABORT_REQUESTED = (0, 0x07)
INVALID_NSID = (0, 0x0B)
COMMAND_SEQUENCE_ERROR = (0, 0x0C)
INVALID_PRP_OFFSET = (0, 0x13)
INVALID_CQ = (1, 0x00)
INVALID_QID = (1, 0x01)
INVALID_QSIZE = (1, 0x02)
AERL_EXCEEDED = (1, 0x05)
INVALID_VECTOR = (1, 0x08)
INVALID_LOG_PAGE = (1, 0x09)
INVALID_QUEUE_DELETION = (1, 0x0C)
FID_NOT_SAVEABLE = (1, 0x0D)


def assert_status(c: Completion, expected: tuple[int, int], dnr: bool = True) -> None:
    assert (c.sct, c.sc) == expected, str(c)
    if expected != SUCCESS:
        assert c.dnr == dnr, str(c)


def cmd(host: Host, opcode: int, **fields: int) -> Completion:
    return host.admin(build_sqe(opcode, **fields))


def read_cmd(host: Host, opcode: int, length: int = 4096, **fields: int) -> tuple[Completion, bytes]:
    buf = host.alloc(length)
    prps = host.build_prps(list(range(buf, buf + length, 4096)))
    c = cmd(host, opcode, prp1=prps.prp1, prp2=prps.prp2, **fields)
    return c, host.read_mem(buf, length)


# -- opcodes and common fields --------------------------------------------------


@pytest.mark.parametrize("opcode", [0x03, 0x07, 0x10, 0x11, 0x7D, 0x81, 0xC0, 0xFF])
def test_unsupported_opcode(host: Host, opcode: int) -> None:
    assert_status(cmd(host, opcode), INVALID_OPCODE)


def test_sgl_and_fused_admin_commands_are_invalid_fields(host: Host) -> None:
    assert_status(cmd(host, IDENTIFY, cdw10=1, psdt=1, prp1=host.alloc(4096)), INVALID_FIELD)
    assert_status(cmd(host, IDENTIFY, cdw10=1, fuse=1, prp1=host.alloc(4096)), INVALID_FIELD)


# -- Identify ---------------------------------------------------------------------


def test_identify_controller(host: Host, config: ControllerConfig) -> None:
    c, raw = read_cmd(host, IDENTIFY, cdw10=0x01)
    assert_status(c, SUCCESS)
    ident = IdentifyController.parse(raw)
    assert ident.vid != 0 and ident.ssvid != 0
    assert raw[4:24] == config.serial.encode().ljust(20, b" ")
    assert raw[24:64] == config.model.encode().ljust(40, b" ")
    assert raw[64:72] == config.firmware.encode().ljust(8, b" ")
    assert ident.mdts == config.mdts
    assert ident.ver == 0x00020000  # NVMe 2.0.0
    assert raw[76] == 0  # CMIC
    # OAES: namespace attribute notices, zone descriptor changed notices
    assert struct.unpack_from("<I", raw, 92)[0] == 1 << 8 | 1 << 27
    assert raw[111] == 1  # CNTRLTYPE: I/O controller
    # Doorbell Buffer Config, Device Self-test, Namespace Management, Format NVM
    assert ident.oacs == 1 << 8 | 1 << 4 | 1 << 3 | 1 << 1
    assert ident.acl == 3
    assert ident.aerl == config.aerl
    assert raw[260] == 0x03  # FRMW: slot 1 read-only, one slot
    assert ident.lpa & 0x4  # extended Get Log Page data
    assert ident.elpe == 63
    assert raw[263] == 0  # NPSS
    assert ident.sqes == 0x66 and ident.cqes == 0x44
    assert ident.nn == 256  # every NSID a created namespace may take
    assert struct.unpack_from("<I", raw, 540)[0] == 256  # MNAN
    assert ident.vwc == 0x05  # present; flush to NSID FFFFFFFFh not supported
    assert ident.sgls == 0x000B0001  # SGLs without alignment, bit bucket, metadata: byte-aligned, SGL (17, 19)
    subnqn = raw[768:1024].rstrip(b"\0").decode()
    assert subnqn.startswith("nqn.") and config.serial in subnqn
    assert struct.unpack_from("<H", raw, 2048)[0] != 0  # PSD0.MP


@pytest.mark.nvme_config(volatile_write_cache=False, mdts=0, aerl=7)
def test_identify_controller_follows_config(host: Host) -> None:
    ident = host.identify_controller()
    assert (ident.vwc, ident.mdts, ident.aerl) == (0, 0, 7)


@pytest.mark.nvme_config(
    namespaces=[
        NamespaceConfig(size_bytes=4 * MiB, lba_size=512),
        NamespaceConfig(size_bytes=8 * MiB, lba_size=4096, backend="null"),
    ]
)
def test_identify_namespace(host: Host) -> None:
    for nsid, lbas, lbads in ((1, 8192, 9), (2, 2048, 12)):
        c, raw = read_cmd(host, IDENTIFY, cdw10=0x00, nsid=nsid)
        assert_status(c, SUCCESS)
        ns = IdentifyNamespace.parse(raw)
        assert (ns.nsze, ns.ncap, ns.nuse) == (lbas, lbas, lbas)
        assert ns.nlbaf == 6 and ns.flbas == (0 if lbads == 9 else 1)
        # 0 and 1 without metadata, then 512+8, 512+16, 4096+8, 4096+16, 4096+64
        assert [(f.lbads, f.ms) for f in ns.lbaf] == [(9, 0), (12, 0), (9, 8), (9, 16), (12, 8), (12, 16), (12, 64)]
        assert ns.lba_size == 1 << lbads
        assert raw[104:120] != bytes(16)  # NGUID
        assert raw[120:128] != bytes(8)  # EUI64


def test_identify_namespace_broadcast_gives_common_fields(host: Host) -> None:
    c, raw = read_cmd(host, IDENTIFY, cdw10=0x00, nsid=0xFFFFFFFF)
    assert_status(c, SUCCESS)
    ns = IdentifyNamespace.parse(raw)
    assert (ns.nsze, ns.ncap, ns.nuse) == (0, 0, 0)
    assert ns.lbaf[0].lbads == 9


@pytest.mark.parametrize("nsid", [0, 0x101, 0xFFFFFFFE])
def test_identify_namespace_invalid_nsid(host: Host, nsid: int) -> None:
    # NN is 256 (namespace management): NSIDs above it, and 0, are invalid.
    assert_status(read_cmd(host, IDENTIFY, cdw10=0x00, nsid=nsid)[0], INVALID_NSID)


@pytest.mark.parametrize("nsid", [2, 0x100])
def test_identify_namespace_unallocated_nsid_is_zeroes(host: Host, nsid: int) -> None:
    # A valid NSID with no namespace is inactive: a zero-filled structure (NVMe Base 2.0 5.17.2.1).
    c, raw = read_cmd(host, IDENTIFY, cdw10=0x00, nsid=nsid)
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)


def test_identify_buffer_across_a_page_boundary(host: Host) -> None:
    buf = host.alloc(8192)
    c = cmd(host, IDENTIFY, cdw10=0x01, prp1=buf + 0x800, prp2=buf + 0x1000)
    assert_status(c, SUCCESS)
    assert host.read_mem(buf + 0x800, 4096) == host.identify(0x01)


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=MiB)] * 3)
def test_active_namespace_list(host: Host) -> None:
    for nsid, expected in ((0, [1, 2, 3]), (1, [2, 3]), (2, [3]), (3, []), (0x1000, [])):
        c, raw = read_cmd(host, IDENTIFY, cdw10=0x02, nsid=nsid)
        assert_status(c, SUCCESS)
        ids = struct.unpack_from("<1024I", raw)
        assert list(ids[: len(expected)]) == expected
        assert not any(ids[len(expected) :])
    for nsid in (0xFFFFFFFE, 0xFFFFFFFF):
        assert_status(read_cmd(host, IDENTIFY, cdw10=0x02, nsid=nsid)[0], INVALID_NSID)


def _descriptors(raw: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    offset = 0
    while raw[offset]:
        nidt, nidl = raw[offset], raw[offset + 1]
        out[nidt] = raw[offset + 4 : offset + 4 + nidl]
        offset += 4 + nidl
    return out


def _ids(serial: str, nsid: int) -> tuple[dict[int, bytes], bytes, bytes]:
    cfg = ControllerConfig(serial=serial, namespaces=[NamespaceConfig(size_bytes=MiB)] * 2)
    with Controller(cfg) as ctrl, Host(ctrl) as host:
        host.enable()
        c, raw = read_cmd(host, IDENTIFY, cdw10=0x03, nsid=nsid)
        assert_status(c, SUCCESS)
        ns = host.identify(0x00, nsid)
        return _descriptors(raw), ns[104:120], ns[120:128]


def test_namespace_identification_descriptors() -> None:
    descs, nguid, eui64 = _ids("SERIAL-A", 1)
    assert len(descs[0x02]) == 16 and descs[0x02] == nguid  # NGUID matches Identify Namespace
    assert len(descs[0x03]) == 16 and descs[0x03] != bytes(16)  # UUID
    if 0x01 in descs:
        assert descs[0x01] == eui64
    # Stable for the same serial and NSID, different otherwise.
    assert _ids("SERIAL-A", 1) == (descs, nguid, eui64)
    other_ns, other_serial = _ids("SERIAL-A", 2), _ids("SERIAL-B", 1)
    for other in (other_ns, other_serial):
        assert other[0][0x02] != descs[0x02] and other[0][0x03] != descs[0x03]
        assert other[2] != eui64


@pytest.mark.parametrize("nsid", [0, 0x101, 0xFFFFFFFF])
def test_namespace_identification_descriptors_invalid_nsid(host: Host, nsid: int) -> None:
    assert_status(read_cmd(host, IDENTIFY, cdw10=0x03, nsid=nsid)[0], INVALID_NSID)


def test_namespace_identification_descriptors_unallocated_nsid(host: Host) -> None:
    # Valid but inactive: no descriptors to give (QEMU: Invalid Field).
    assert_status(read_cmd(host, IDENTIFY, cdw10=0x03, nsid=2)[0], INVALID_FIELD)


@pytest.mark.parametrize("cns", [0x04, 0x09, 0x14, 0x15, 0x16, 0x1D, 0xFF])
def test_identify_unsupported_cns(host: Host, cns: int) -> None:
    assert_status(read_cmd(host, IDENTIFY, cdw10=cns, nsid=1)[0], INVALID_FIELD)


# -- queue creation and deletion -----------------------------------------------------


def create_cq(host: Host, qid: int, entries: int = 16, *, iv: int = 0, pc: int = 1, ien: int = 1,
              prp1: int | None = None) -> Completion:
    base = host.alloc(entries * 16) if prp1 is None else prp1
    return cmd(host, CREATE_CQ, prp1=base, cdw10=((entries - 1) & 0xFFFF) << 16 | qid,
               cdw11=iv << 16 | ien << 1 | pc)


def create_sq(host: Host, qid: int, cqid: int, entries: int = 16, *, pc: int = 1,
              prp1: int | None = None) -> Completion:
    base = host.alloc(entries * 64) if prp1 is None else prp1
    return cmd(host, CREATE_SQ, prp1=base, cdw10=((entries - 1) & 0xFFFF) << 16 | qid,
               cdw11=cqid << 16 | pc)


def test_create_cq_errors(host: Host, config: ControllerConfig) -> None:
    mqes = config.max_queue_entries - 1
    assert_status(create_cq(host, 0), INVALID_QID)
    assert_status(create_cq(host, config.max_io_queue_pairs + 1), INVALID_QID)
    assert_status(create_cq(host, 1), INVALID_QID)  # exists (host fixture)
    assert_status(create_cq(host, 2, entries=1), INVALID_QSIZE)  # QSIZE 0
    assert_status(create_cq(host, 2, entries=mqes + 2), INVALID_QSIZE)
    assert_status(create_cq(host, 2, iv=config.vectors), INVALID_VECTOR)
    assert_status(create_cq(host, 2, pc=0), INVALID_FIELD)
    assert_status(create_cq(host, 2, prp1=0), INVALID_FIELD)
    assert_status(create_cq(host, 2, prp1=host.alloc(8192) + 0x200), INVALID_PRP_OFFSET)
    # A ring that would run past 2**64: a status, not an internal error.
    errors0 = host.controller.counters()["admin_internal_errors"]
    assert_status(create_cq(host, 2, entries=256, prp1=(1 << 64) - 4096), INVALID_FIELD)
    assert host.controller.counters()["admin_internal_errors"] == errors0
    assert_status(create_cq(host, 2, entries=mqes + 1, iv=config.vectors - 1), SUCCESS)


def test_create_sq_errors(host: Host, config: ControllerConfig) -> None:
    mqes = config.max_queue_entries - 1
    assert_status(create_cq(host, 2), SUCCESS)
    assert_status(create_sq(host, 0, 2), INVALID_QID)
    assert_status(create_sq(host, config.max_io_queue_pairs + 1, 2), INVALID_QID)
    assert_status(create_sq(host, 1, 2), INVALID_QID)  # exists
    assert_status(create_sq(host, 2, 0), INVALID_CQ)  # the admin CQ
    assert_status(create_sq(host, 2, 3), INVALID_CQ)  # no such CQ
    assert_status(create_sq(host, 2, 2, entries=1), INVALID_QSIZE)
    assert_status(create_sq(host, 2, 2, entries=mqes + 2), INVALID_QSIZE)
    assert_status(create_sq(host, 2, 2, pc=0), INVALID_FIELD)
    assert_status(create_sq(host, 2, 2, prp1=0), INVALID_FIELD)
    assert_status(create_sq(host, 2, 2, prp1=host.alloc(8192) + 0x40), INVALID_PRP_OFFSET)
    errors0 = host.controller.counters()["admin_internal_errors"]
    assert_status(create_sq(host, 2, 2, entries=256, prp1=(1 << 64) - 4096), INVALID_FIELD)
    assert host.controller.counters()["admin_internal_errors"] == errors0
    assert_status(create_sq(host, 2, 2, entries=mqes + 1), SUCCESS)


def test_queue_ids_limited_to_granted_queues(bare_host: Host) -> None:
    bare_host.enable()
    assert bare_host.set_num_queues(2, 3) == (2, 3)
    assert_status(create_cq(bare_host, 4), INVALID_QID)
    assert_status(create_cq(bare_host, 3), SUCCESS)
    assert_status(create_sq(bare_host, 3, 3), INVALID_QID)
    assert_status(create_sq(bare_host, 2, 3), SUCCESS)


def test_delete_queue_errors_and_success(host: Host) -> None:
    assert_status(cmd(host, DELETE_SQ, cdw10=0), INVALID_QID)
    assert_status(cmd(host, DELETE_SQ, cdw10=2), INVALID_QID)
    assert_status(cmd(host, DELETE_CQ, cdw10=0), INVALID_QID)
    assert_status(cmd(host, DELETE_CQ, cdw10=2), INVALID_QID)
    assert_status(cmd(host, DELETE_CQ, cdw10=1), INVALID_QUEUE_DELETION)  # SQ 1 posts to it
    host.delete_io_sq(1)
    assert_status(cmd(host, DELETE_SQ, cdw10=1), INVALID_QID)  # already gone
    host.delete_io_cq(1)
    assert_status(cmd(host, DELETE_CQ, cdw10=1), INVALID_QID)


def test_created_queues_carry_io(host: Host) -> None:
    host.create_io_queue_pair(2, entries=8, vector=2)
    host.create_io_queue_pair(3, entries=4, irq=False)  # polled CQ (IEN = 0)
    for qid in (1, 2, 3):
        data = bytes([qid]) * 512
        host.write(1, qid, data, qid=qid)
        assert host.read(1, qid, 1, qid=qid) == data
    host.delete_io_queue_pair(2)
    host.create_io_queue_pair(2)  # the ID is free again
    assert host.read(1, 2, 1, qid=2) == bytes([2]) * 512


# -- features ---------------------------------------------------------------------------


def get_feature(host: Host, fid: int, cdw11: int = 0, sel: int = 0) -> Completion:
    return cmd(host, GET_FEATURES, cdw10=sel << 8 | fid, cdw11=cdw11)


def set_feature(host: Host, fid: int, cdw11: int, save: bool = False) -> Completion:
    return cmd(host, SET_FEATURES, cdw10=int(save) << 31 | fid, cdw11=cdw11)


def ok_dw0(c: Completion) -> int:
    assert_status(c, SUCCESS)
    return c.dw0


@pytest.mark.nvme_config(max_io_queue_pairs=8)
def test_number_of_queues(bare_host: Host) -> None:
    host = bare_host
    host.enable()
    assert ok_dw0(get_feature(host, 0x07, sel=1)) == 7 << 16 | 7  # default: everything
    assert ok_dw0(set_feature(host, 0x07, 4 << 16 | 2)) == 4 << 16 | 2
    assert ok_dw0(get_feature(host, 0x07)) == 4 << 16 | 2
    assert ok_dw0(set_feature(host, 0x07, 100 << 16 | 0xFFFE)) == 7 << 16 | 7  # clipped
    assert_status(set_feature(host, 0x07, 0xFFFF), INVALID_FIELD)
    assert_status(set_feature(host, 0x07, 0xFFFF << 16), INVALID_FIELD)
    assert ok_dw0(set_feature(host, 0x07, 1 << 16 | 1)) == 1 << 16 | 1
    # Kept across a controller reset (5.21.1.7: shall not change between resets).
    host.disable()
    host.enable()
    assert ok_dw0(get_feature(host, 0x07)) == 1 << 16 | 1


def test_number_of_queues_after_queue_creation(host: Host) -> None:
    assert_status(set_feature(host, 0x07, 0), COMMAND_SEQUENCE_ERROR)
    # "After creation of any I/O queue" (5.27.1.5), deleted since or not, as
    # QEMU's qs_created: only a controller reset allows it again.
    host.delete_io_queue_pair(1)
    assert_status(set_feature(host, 0x07, 0), COMMAND_SEQUENCE_ERROR)
    host.disable()
    host.enable()
    assert ok_dw0(set_feature(host, 0x07, 0)) == 0


@pytest.mark.parametrize("fid", [0x00, 0x03, 0x0C, 0x0D, 0x10, 0x11, 0x15, 0x17, 0x1A, 0x80, 0xFF])
def test_unsupported_feature(host: Host, fid: int) -> None:
    assert_status(get_feature(host, fid), INVALID_FIELD)
    assert_status(set_feature(host, fid, 0), INVALID_FIELD)


@pytest.mark.parametrize("fid", [0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0E, 0x0F, 0x16])
def test_features_are_changeable_not_saveable(host: Host, fid: int) -> None:
    caps = ok_dw0(get_feature(host, fid, sel=3))
    assert caps & 0x4 and not caps & 0x1
    nsid = 0xFFFFFFFF if fid == 0x05 else 0  # Error Recovery is namespace specific
    c = cmd(host, SET_FEATURES, nsid=nsid, cdw10=1 << 31 | fid, prp1=host.alloc(4096))
    assert_status(c, FID_NOT_SAVEABLE)


@pytest.mark.parametrize("sel", [4, 5, 6, 7])
def test_get_features_reserved_select(host: Host, sel: int) -> None:
    assert_status(get_feature(host, 0x01, sel=sel), INVALID_FIELD)


@pytest.mark.parametrize(
    ("fid", "value"),
    [(0x01, 0x04030201), (0x02, 0x40), (0x05, 1000), (0x08, 0x0A05), (0x0A, 1), (0x0B, 0x11F),
     (0x0F, 12000)],
)
def test_set_then_get_feature(host: Host, fid: int, value: int) -> None:
    nsid = 1 if fid == 0x05 else 0  # Error Recovery is namespace specific
    default = ok_dw0(cmd(host, GET_FEATURES, nsid=nsid, cdw10=1 << 8 | fid))
    assert_status(cmd(host, SET_FEATURES, nsid=nsid, cdw10=fid, cdw11=value), SUCCESS)
    assert ok_dw0(cmd(host, GET_FEATURES, nsid=nsid, cdw10=fid)) == value
    assert ok_dw0(cmd(host, GET_FEATURES, nsid=nsid, cdw10=1 << 8 | fid)) == default
    # Nothing is saveable: the saved value is the default.
    assert ok_dw0(cmd(host, GET_FEATURES, nsid=nsid, cdw10=2 << 8 | fid)) == default


def test_power_management_only_state_0(host: Host) -> None:
    assert_status(set_feature(host, 0x02, 1), INVALID_FIELD)
    assert_status(set_feature(host, 0x02, 0x1F), INVALID_FIELD)
    assert ok_dw0(get_feature(host, 0x02)) & 0x1F == 0


def test_error_recovery_dulbe_unsupported(host: Host) -> None:
    c = cmd(host, SET_FEATURES, nsid=1, cdw10=0x05, cdw11=1 << 16)
    assert_status(c, INVALID_FIELD)


def test_temperature_threshold(host: Host) -> None:
    wctemp = host.identify_controller().raw[266:268]
    over = ok_dw0(get_feature(host, 0x04)) & 0xFFFF
    assert over == int.from_bytes(wctemp, "little")  # default over threshold: WCTEMP
    assert_status(set_feature(host, 0x04, 350), SUCCESS)
    assert_status(set_feature(host, 0x04, 1 << 20 | 260), SUCCESS)  # under threshold
    assert ok_dw0(get_feature(host, 0x04)) & 0xFFFF == 350
    assert ok_dw0(get_feature(host, 0x04, 1 << 20)) & 0xFFFF == 260
    assert_status(set_feature(host, 0x04, 2 << 20 | 300), INVALID_FIELD)  # THSEL reserved
    assert_status(get_feature(host, 0x04, 3 << 20), INVALID_FIELD)
    assert_status(set_feature(host, 0x04, 1 << 16 | 300), INVALID_FIELD)  # no sensor 1
    assert_status(get_feature(host, 0x04, 1 << 16), INVALID_FIELD)


def test_volatile_write_cache(host: Host) -> None:
    assert ok_dw0(get_feature(host, 0x06)) & 1 == 1
    assert_status(set_feature(host, 0x06, 0), SUCCESS)
    assert ok_dw0(get_feature(host, 0x06)) & 1 == 0
    assert ok_dw0(get_feature(host, 0x06, sel=1)) & 1 == 1
    assert_status(set_feature(host, 0x06, 1), SUCCESS)
    assert ok_dw0(get_feature(host, 0x06)) & 1 == 1


@pytest.mark.nvme_config(volatile_write_cache=False)
def test_volatile_write_cache_absent(host: Host) -> None:
    assert_status(get_feature(host, 0x06), INVALID_FIELD)
    assert_status(set_feature(host, 0x06, 1), INVALID_FIELD)


@pytest.mark.nvme_config(max_io_queue_pairs=4, msix_vectors=3)
def test_interrupt_vector_configuration(host: Host) -> None:
    assert ok_dw0(get_feature(host, 0x09, 2)) == 2
    assert_status(set_feature(host, 0x09, 1 << 16 | 2), SUCCESS)
    assert ok_dw0(get_feature(host, 0x09, 2)) == 1 << 16 | 2
    assert ok_dw0(get_feature(host, 0x09, 1)) == 1
    assert_status(set_feature(host, 0x09, 3), INVALID_FIELD)
    assert_status(get_feature(host, 0x09, 3), INVALID_FIELD)


def test_reset_restores_feature_defaults(host: Host) -> None:
    assert_status(set_feature(host, 0x06, 0), SUCCESS)
    assert_status(set_feature(host, 0x01, 0x01010101), SUCCESS)
    default_arbitration = ok_dw0(get_feature(host, 0x01, sel=1))
    host.disable()
    host.enable()
    assert ok_dw0(get_feature(host, 0x06)) & 1 == 1
    assert ok_dw0(get_feature(host, 0x01)) == default_arbitration
