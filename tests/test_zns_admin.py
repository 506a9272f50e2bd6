"""The admin side of zoned namespaces: command set selection, Identify,
features, logs and the Zone Descriptor Changed notice.

Expectations come from NVMe Base 2.0 (CAP.CSS, CC.CSS, CNS 03h/05h-08h/1Ch,
Features 19h/0Bh, Get Log Page CSI) and ZNS 1.1 (Figures 41-43, 48-50), as
tabulated in the project's research note; QEMU's choices where the spec
leaves one (CFS for an unsupported CC.CSS, Invalid Field for CNS 03h of an
inactive NSID, Invalid Format for Format NVM of a zoned namespace).
"""

from __future__ import annotations

import struct

import pytest

from adminutil import GET_FEATURES, NSID_ALL, SET_FEATURES, cmd, format_nvm, get_log, identify, ok, u16, u32, u64
from nvmefast import Controller, HostTimeoutError, NamespaceConfig, ZoneConfig
from nvmefast.testing import Host
from nvmefast.testing.zns import ChangedZoneList, IdentifyNamespaceZns
from znsutil import (
    INVALID_FIELD, INVALID_FORMAT, INVALID_NSID, IOCS_COMBINATION_REJECTED, LBA,
    MAX_ACTIVE, MAX_OPEN, NAMESPACE_BYTES, NAMESPACES, NVM_NSID, SUCCESS, ZONE, ZONE_BYTES, ZNS_NSID,
    assert_status, read_completion, write_blocks, zslba,
)  # fmt: skip

pytestmark = pytest.mark.nvme_config(namespaces=NAMESPACES)

CAP, CC, CSTS = 0x00, 0x14, 0x1C
CSTS_RDY, CSTS_CFS = 1 << 0, 1 << 1
CSS_NVM, CSS_ALL, CSS_ADMIN = 0b000, 0b110, 0b111
CSI_NVM, CSI_ZNS = 0x00, 0x02
LID_EFFECTS, LID_CHANGED_ZONES = 0x05, 0xBF
FID_IOCS_PROFILE, FID_AEC = 0x19, 0x0B


def enabled(bare_host: Host, css: int) -> Host:
    bare_host.enable(css=css)
    bare_host.set_num_queues(2, 2)
    bare_host.create_io_queue_pair(1)
    return bare_host


def active_list(host: Host, cns: int = 0x02, nsid: int = 0, csi: int = 0) -> list[int]:
    c, raw = identify(host, cns, nsid, csi)
    assert_status(c, SUCCESS)
    ids = struct.unpack_from("<1024I", raw)
    return [n for n in ids if n]


def descriptors(raw: bytes) -> dict[int, bytes]:
    out, offset = {}, 0
    while offset < len(raw) and raw[offset]:
        nidt, nidl = raw[offset], raw[offset + 1]
        out[nidt] = raw[offset + 4 : offset + 4 + nidl]
        offset += 4 + nidl
    return out


# -- CAP.CSS and CC.CSS ------------------------------------------------------------------------


def test_cap_css_offers_nvm_every_command_set_and_admin_only(controller: Controller) -> None:
    css = (controller.bar0_read(CAP, 8) >> 37) & 0xFF
    assert css == 1 << 0 | 1 << 6 | 1 << 7  # NCSS, IOCSS, NOIOCSS


def test_host_selects_every_command_set_as_linux_does(host: Host, controller: Controller) -> None:
    assert (controller.bar0_read(CC, 4) >> 4) & 0x7 == CSS_ALL


@pytest.mark.parametrize("css", [0b001, 0b010, 0b011, 0b100, 0b101])
def test_an_unsupported_css_fails_the_controller(bare_host: Host, controller: Controller, css: int) -> None:
    with pytest.raises(HostTimeoutError):
        bare_host.enable(timeout=0.3, css=css)
    value = controller.bar0_read(CSTS, 4)
    assert value & CSTS_CFS and not value & CSTS_RDY
    assert controller.counters()["ub_cc_enable_css"] == 1
    bare_host.disable()  # CC.EN 0: a reset clears the failure
    assert not controller.bar0_read(CSTS, 4) & CSTS_CFS
    bare_host.enable(css=CSS_ALL)
    assert controller.bar0_read(CSTS, 4) & (CSTS_RDY | CSTS_CFS) == CSTS_RDY


@pytest.mark.parametrize("css", [CSS_NVM, CSS_ALL, CSS_ADMIN])
def test_supported_css_values_enable(bare_host: Host, controller: Controller, css: int) -> None:
    bare_host.enable(css=css)
    assert controller.bar0_read(CSTS, 4) & (CSTS_RDY | CSTS_CFS) == CSTS_RDY


# -- what each selection attaches ------------------------------------------------------------


def test_all_command_sets_attach_both_namespaces(bare_host: Host) -> None:
    host = enabled(bare_host, CSS_ALL)
    assert active_list(host) == [ZNS_NSID, NVM_NSID]
    assert active_list(host, 0x07, 0, CSI_ZNS) == [ZNS_NSID]
    assert active_list(host, 0x07, 0, CSI_NVM) == [NVM_NSID]
    assert active_list(host, 0x07, ZNS_NSID, CSI_ZNS) == []  # NSIDs above 1 only
    c, raw = identify(host, 0x00, ZNS_NSID)
    assert_status(c, SUCCESS)
    nsze, ncap, nuse = struct.unpack_from("<QQQ", raw)
    assert nsze == ncap == NAMESPACE_BYTES // LBA  # a whole number of zones
    assert (raw[26] & 0xF) == 1  # FLBAS: LBA format 1, 4 KiB


def test_nvm_only_leaves_the_zoned_namespace_inactive(bare_host: Host) -> None:
    host = enabled(bare_host, CSS_NVM)
    assert active_list(host) == [NVM_NSID]
    assert active_list(host, 0x07, 0, CSI_ZNS) == []
    for cns, csi in ((0x00, 0), (0x05, CSI_NVM), (0x05, CSI_ZNS), (0x08, 0)):
        c, raw = identify(host, cns, ZNS_NSID, csi)
        assert_status(c, SUCCESS)
        assert raw == bytes(4096), f"CNS {cns:#x} of an inactive NSID is zero-filled"
    assert_status(identify(host, 0x03, ZNS_NSID)[0], INVALID_FIELD)
    # I/O to an inactive NSID: Invalid Field in Command (QEMU nvme_io_cmd).
    assert_status(read_completion(host, 0, nsid=ZNS_NSID)[0], INVALID_FIELD)
    assert_status(write_blocks(host, 0, nsid=ZNS_NSID), INVALID_FIELD)
    # The conventional namespace works as ever.
    host.write(NVM_NSID, 0, b"\x11" * 512)
    assert host.read(NVM_NSID, 0, 1) == b"\x11" * 512


def test_admin_only_attaches_no_namespace(bare_host: Host) -> None:
    host = enabled(bare_host, CSS_ADMIN)
    assert active_list(host) == []
    for nsid in (ZNS_NSID, NVM_NSID):
        assert identify(host, 0x00, nsid)[1] == bytes(4096)
        assert_status(read_completion(host, 0, nsid=nsid)[0], INVALID_FIELD)


def test_a_new_enable_takes_the_new_selection(bare_host: Host) -> None:
    host = enabled(bare_host, CSS_NVM)
    assert active_list(host) == [NVM_NSID]
    host.disable()
    host = enabled(host, CSS_ALL)
    assert active_list(host) == [ZNS_NSID, NVM_NSID]
    host.write(ZNS_NSID, 0, b"\x22" * LBA)
    assert host.read(ZNS_NSID, 0, 1) == b"\x22" * LBA


# -- Identify ------------------------------------------------------------------------------------


def test_identify_controller_advertises_zone_descriptor_changed_notices(host: Host) -> None:
    raw = identify(host, 0x01)[1]
    oaes = u32(raw, 92)
    assert oaes & (1 << 27)  # Zone Descriptor Changed Notices
    assert oaes & (1 << 8)  # Namespace Attribute Notices, as before


def test_namespace_descriptors_name_each_command_set(host: Host) -> None:
    for nsid, csi in ((ZNS_NSID, CSI_ZNS), (NVM_NSID, CSI_NVM)):
        c, raw = identify(host, 0x03, nsid)
        assert_status(c, SUCCESS)
        found = descriptors(raw)
        assert found[0x04] == bytes([csi])  # NIDT 04h, NIDL 1
        assert set(found) == {0x01, 0x02, 0x03, 0x04}


def test_identify_namespace_zns(host: Host) -> None:
    c, raw = identify(host, 0x05, ZNS_NSID, CSI_ZNS)
    assert_status(c, SUCCESS)
    assert u16(raw, 0) == 0  # ZOC
    assert u16(raw, 2) == 0  # OZCS: no reads across zone boundaries
    assert u32(raw, 4) == MAX_ACTIVE - 1  # MAR, 0's based
    assert u32(raw, 8) == MAX_OPEN - 1  # MOR
    assert u32(raw, 12) == 0 and u32(raw, 16) == 0  # RRL, FRL
    # One LBA Format Extension per LBA format (512 B, 4 KiB): the zone is 1 MiB in both.
    assert u64(raw, 2816) == ZONE_BYTES // 512 and raw[2824] == 0
    assert u64(raw, 2832) == ZONE_BYTES // 4096 and raw[2840] == 0
    assert IdentifyNamespaceZns.parse(raw).lbafe[1] == (ZONE, 0)


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(
    size_bytes=8 << 20, lba_size=512,
    zones=ZoneConfig(size_bytes=1 << 20, descriptor_extension_bytes=128, cross_read=True)),
])  # fmt: skip
def test_identify_namespace_zns_options(host: Host) -> None:
    raw = identify(host, 0x05, 1, CSI_ZNS)[1]
    assert u16(raw, 2) & 1  # OZCS.RAZB
    assert u32(raw, 4) == 0xFFFFFFFF and u32(raw, 8) == 0xFFFFFFFF  # no limits
    assert raw[2824] == 2 and raw[2840] == 2  # ZDES: 128 bytes in 64-byte units


def test_identify_namespace_csi_rules(host: Host) -> None:
    assert_status(identify(host, 0x05, NVM_NSID, CSI_ZNS)[0], INVALID_FIELD)  # no zones there
    c, raw = identify(host, 0x05, ZNS_NSID, CSI_NVM)  # a zoned namespace is also an NVM one
    assert_status(c, SUCCESS)
    for csi in (0x01, 0x03, 0xFF):
        assert_status(identify(host, 0x05, ZNS_NSID, csi)[0], INVALID_FIELD)
    for nsid in (0, 257, NSID_ALL):
        assert_status(identify(host, 0x05, nsid, CSI_ZNS)[0], INVALID_NSID)
    c, raw = identify(host, 0x05, 3, CSI_ZNS)  # valid, no namespace: inactive, zeroes
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)


def test_identify_controller_zns(host: Host) -> None:
    c, raw = identify(host, 0x06, 0, CSI_ZNS)
    assert_status(c, SUCCESS)
    assert raw == bytes(4096)  # ZASL 0: Zone Append up to MDTS
    assert_status(identify(host, 0x06, 0, 0x01)[0], INVALID_FIELD)


@pytest.mark.nvme_config(mdts=5, namespaces=[
    NamespaceConfig(size_bytes=4 << 20, lba_size=4096,
                    zones=ZoneConfig(size_bytes=1 << 20, append_size_limit=64 << 10)),
    NamespaceConfig(size_bytes=4 << 20, lba_size=4096,
                    zones=ZoneConfig(size_bytes=1 << 20, append_size_limit=32 << 10)),
])  # fmt: skip
def test_zasl_is_the_smallest_limit(host: Host) -> None:
    assert identify(host, 0x06, 0, CSI_ZNS)[1][0] == 3  # 32 KiB = 2**3 * 4 KiB


def test_active_list_of_a_command_set_rejects(host: Host) -> None:
    assert_status(identify(host, 0x07, 0, 0x01)[0], INVALID_FIELD)
    for nsid in (0xFFFFFFFE, NSID_ALL):
        assert_status(identify(host, 0x07, nsid, CSI_ZNS)[0], INVALID_NSID)


def test_independent_identify_namespace_of_a_zoned_namespace(host: Host) -> None:
    c, raw = identify(host, 0x08, ZNS_NSID)
    assert_status(c, SUCCESS)
    assert raw[14] & 1  # NSTAT: ready


def test_io_command_set_combinations(host: Host) -> None:
    c, raw = identify(host, 0x1C)
    assert_status(c, SUCCESS)
    assert u64(raw, 0) == 1 << 0 | 1 << 2  # combination 0: NVM and Zoned Namespace
    assert raw[8:] == bytes(4088)


# -- Features ------------------------------------------------------------------------------------


def test_io_command_set_profile(host: Host) -> None:
    assert ok(cmd(host, GET_FEATURES, cdw10=FID_IOCS_PROFILE)) == 0
    ok(cmd(host, SET_FEATURES, cdw10=FID_IOCS_PROFILE, cdw11=0))
    for index in (1, 2, 0x1FF):  # combinations CNS 1Ch leaves all zero
        assert_status(cmd(host, SET_FEATURES, cdw10=FID_IOCS_PROFILE, cdw11=index), IOCS_COMBINATION_REJECTED)
    assert ok(cmd(host, GET_FEATURES, cdw10=FID_IOCS_PROFILE)) == 0
    caps = ok(cmd(host, GET_FEATURES, cdw10=FID_IOCS_PROFILE | 3 << 8))  # SEL 011b
    assert caps == 1 << 2  # changeable; neither saveable nor namespace specific


def test_async_event_configuration_takes_bit_27(host: Host) -> None:
    ok(cmd(host, SET_FEATURES, cdw10=FID_AEC, cdw11=1 << 27 | 1 << 8 | 1 << 20))
    assert ok(cmd(host, GET_FEATURES, cdw10=FID_AEC)) == 1 << 27 | 1 << 8  # bit 20 reserved


# -- logs ----------------------------------------------------------------------------------------


def _iocs(raw: bytes, opcode: int) -> int:
    return u32(raw, 1024 + 4 * opcode)


def test_effects_log_per_command_set(host: Host) -> None:
    c, zoned = get_log(host, LID_EFFECTS, 4096, csi=CSI_ZNS)
    assert_status(c, SUCCESS)
    assert _iocs(zoned, 0x79) == 0b11  # Zone Management Send: CSUPP, LBCC
    assert _iocs(zoned, 0x7A) == 0b01  # Zone Management Receive: CSUPP
    assert _iocs(zoned, 0x7D) == 0b11  # Zone Append: CSUPP, LBCC
    for opcode in (0x00, 0x01, 0x02, 0x08):  # Flush, Write, Read, Write Zeroes
        assert _iocs(zoned, opcode) & 1
    c, nvm = get_log(host, LID_EFFECTS, 4096, csi=CSI_NVM)
    assert_status(c, SUCCESS)
    assert all(_iocs(nvm, op) == 0 for op in (0x79, 0x7A, 0x7D))
    assert nvm[:1024] == zoned[:1024]  # admin commands are the same
    assert_status(get_log(host, LID_EFFECTS, 4096, csi=0x01)[0], INVALID_FIELD)


def test_effects_log_ignores_csi_with_nvm_only(bare_host: Host) -> None:
    host = enabled(bare_host, CSS_NVM)
    nvm = get_log(host, LID_EFFECTS, 4096, csi=CSI_NVM)[1]
    for csi in (CSI_ZNS, 0x01):
        c, raw = get_log(host, LID_EFFECTS, 4096, csi=csi)
        assert_status(c, SUCCESS)
        assert raw == nvm


def test_changed_zone_list_needs_an_active_zoned_namespace(host: Host) -> None:
    c, raw = get_log(host, LID_CHANGED_ZONES, 4096, nsid=ZNS_NSID)
    assert_status(c, SUCCESS)
    assert ChangedZoneList.parse(raw) == ChangedZoneList(False, ())
    for nsid in (NVM_NSID, 0, NSID_ALL, 3):
        assert_status(get_log(host, LID_CHANGED_ZONES, 4096, nsid=nsid)[0], INVALID_FIELD)


def test_format_of_a_zoned_namespace_is_refused(host: Host) -> None:
    assert_status(format_nvm(host, ZNS_NSID, 1), INVALID_FORMAT)
    assert_status(format_nvm(host, NSID_ALL, 0), INVALID_FORMAT)
    assert identify(host, 0x00, NVM_NSID)[1][26] & 0xF == 0  # not formatted either
    assert_status(format_nvm(host, NVM_NSID, 1), SUCCESS)


# -- Zone Descriptor Changed notices ---------------------------------------------------------------


NOTICE_DW0 = 0x2 | 0xEF << 8 | 0xBF << 16  # type Notice, Zone Descriptor Changed, log BFh


def _changed(host: Host, *, rae: bool, nsid: int = ZNS_NSID) -> ChangedZoneList:
    c, raw = get_log(host, LID_CHANGED_ZONES, 4096, nsid=nsid, rae=rae)
    assert_status(c, SUCCESS)
    return ChangedZoneList.parse(raw)


def test_zone_descriptor_changed_notice_and_log(host: Host, controller: Controller) -> None:
    ok(cmd(host, SET_FEATURES, cdw10=FID_AEC, cdw11=1 << 27))
    aer = host.submit_aer()
    assert controller.engine.zone_action(ZNS_NSID, 3, "readonly")
    c = host.wait(0, aer)
    assert (c.dw0, c.dw1) == (NOTICE_DW0, ZNS_NSID)
    # Read with RAE: the list stays, and so does the mask on Notice events.
    assert _changed(host, rae=True).zslbas == (zslba(3),)
    host.write(ZNS_NSID, zslba(5), b"\x05" * LBA)  # Finish Recommended needs an opened or closed zone
    aer = host.submit_aer()
    assert controller.engine.zone_action(ZNS_NSID, 5, "finish-recommended")
    with pytest.raises(HostTimeoutError):
        host.wait(0, aer, timeout=0.2)  # masked until the log is read without RAE
    assert _changed(host, rae=False).zslbas == (zslba(3), zslba(5))
    c = host.wait(0, aer)  # the second change, now unmasked
    assert (c.dw0, c.dw1) == (NOTICE_DW0, ZNS_NSID)
    assert _changed(host, rae=False).zslbas == ()


def test_zone_changes_are_logged_even_without_the_notice(host: Host, controller: Controller) -> None:
    aer = host.submit_aer()
    assert controller.engine.zone_action(ZNS_NSID, 2, "offline")
    with pytest.raises(HostTimeoutError):
        host.wait(0, aer, timeout=0.2)  # AEC bit 27 is clear
    assert _changed(host, rae=False).zslbas == (zslba(2),)


def test_a_fault_rule_on_a_zone_raises_the_notice(host: Host, controller: Controller) -> None:
    ok(cmd(host, SET_FEATURES, cdw10=FID_AEC, cdw11=1 << 27))
    controller.faults.add("write zone=2 count=1 -> zone-readonly")
    aer = host.submit_aer()
    host.write(ZNS_NSID, zslba(1), b"\x01" * LBA)  # another zone: no match
    c = write_blocks(host, zslba(2))
    assert (c.sct, c.sc) == (1, 0xBA)  # Zone Is Read Only: the zone changed before the write ran
    c = host.wait(0, aer)
    assert (c.dw0, c.dw1) == (NOTICE_DW0, ZNS_NSID)
    assert _changed(host, rae=False).zslbas == (zslba(2),)


def test_host_commands_do_not_log_zone_changes(host: Host) -> None:
    host.write(ZNS_NSID, zslba(1), b"\x01" * LBA)  # Empty -> Implicitly Opened
    host.zone_send(ZNS_NSID, zslba(1), 0x02)  # Finish
    host.zone_send(ZNS_NSID, 0, 0x04, select_all=True)  # Reset all
    assert _changed(host, rae=False).zslbas == ()


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(
    size_bytes=520 * (64 << 10), lba_size=4096, zones=ZoneConfig(size_bytes=64 << 10))])  # fmt: skip
def test_changed_zone_list_overflow(host: Host, controller: Controller) -> None:
    for z in range(511):
        assert controller.engine.zone_action(1, z, "readonly")
    listed = _changed(host, rae=True, nsid=1)
    assert not listed.overflow and len(listed.zslbas) == 511
    assert controller.engine.zone_action(1, 511, "readonly")
    assert _changed(host, rae=True, nsid=1) == ChangedZoneList(True, ())
    assert _changed(host, rae=False, nsid=1).overflow
    assert _changed(host, rae=False, nsid=1) == ChangedZoneList(False, ())
