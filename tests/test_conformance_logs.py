"""Get Log Page 04h/05h, offsets, and the asynchronous events that point at
logs (NVMe Base 2.0 5.16 and 5.2): Namespace Attribute Changed after Format
NVM, SMART temperature events, both masked by Asynchronous Event
Configuration."""

from __future__ import annotations

import pytest

from adminutil import (
    INVALID_FIELD, INVALID_LOG_PAGE, MiB, NSID_ALL, SET_FEATURES, SUCCESS, assert_status, cmd,
    format_nvm, get_log, no_completion, u32,
)
from nvmefast import NamespaceConfig
from nvmefast.testing import Host

THREE_NAMESPACES = [NamespaceConfig(size_bytes=MiB)] * 3
ADMIN_OPCODES = {0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x14, 0x15, 0x18, 0x7C, 0x80, 0x84}
IO_OPCODES = {0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x09, 0x0C, 0x19}
LBCC_IO = {0x01, 0x04, 0x08, 0x09, 0x19}  # Write, Write Uncorrectable, Write Zeroes, DSM, Copy
NOTICE_NS_CHANGED = 0x2 | 0x00 << 8 | 0x04 << 16  # type Notice, info 00h, log 04h
SMART_TEMPERATURE = 0x1 | 0x01 << 8 | 0x02 << 16  # type SMART, info 01h, log 02h


def log(host: Host, lid: int, length: int, **kw: int) -> bytes:
    c, data = get_log(host, lid, length, **kw)
    assert_status(c, SUCCESS)
    return data[:length]


def changed(data: bytes) -> list[int]:
    out = []
    for i in range(0, len(data), 4):
        nsid = u32(data, i)
        if not nsid:
            break
        out.append(nsid)
    return out


def enable_events(host: Host, aec: int) -> None:
    assert_status(cmd(host, SET_FEATURES, cdw10=0x0B, cdw11=aec), SUCCESS)


# -- Commands Supported and Effects (05h) -------------------------------------------------------


def test_commands_supported_and_effects(host: Host) -> None:
    data = log(host, 0x05, 4096)
    for opcode in range(256):
        admin = u32(data, 4 * opcode)
        io = u32(data, 1024 + 4 * opcode)
        assert bool(admin & 1) == (opcode in ADMIN_OPCODES), hex(opcode)
        assert bool(io & 1) == (opcode in IO_OPCODES), hex(opcode)
        assert bool(io & 2) == (opcode in LBCC_IO), hex(opcode)  # LBCC
    assert u32(data, 4 * 0x80) & 0x7 == 0x7  # Format NVM: CSUPP, LBCC, NCC
    # Namespace Management and Attachment: CSUPP, NIC (bit 3: Linux rescans after them), CCC (bit 4).
    assert u32(data, 4 * 0x0D) == u32(data, 4 * 0x15) == 1 << 0 | 1 << 3 | 1 << 4
    # Sanitize: CSUPP, LBCC, CSE 010b (nothing else outstanding to any namespace).
    assert u32(data, 4 * 0x84) == 1 << 0 | 1 << 1 | 0b010 << 16
    assert data[2048:] == bytes(2048)
    assert log(host, 0x05, 8, offset=1024 + 4) == data[1028:1036]  # partial read
    assert_status(get_log(host, 0x05, 4096, csi=1)[0], INVALID_FIELD)


def test_effects_log_matches_what_the_controller_accepts(host: Host) -> None:
    data = log(host, 0x05, 4096)
    for opcode in (0x03, 0x07, 0x10, 0x7D, 0x81):
        assert not u32(data, 4 * opcode) & 1
        assert (cmd(host, opcode).sct, cmd(host, opcode).sc) == (0, 0x01)  # Invalid Opcode


# -- Changed Namespace List (04h) and Namespace Attribute Changed ---------------------------------


@pytest.mark.nvme_config(namespaces=THREE_NAMESPACES)
def test_changed_namespace_list(host: Host) -> None:
    assert changed(log(host, 0x04, 4096)) == []
    assert_status(format_nvm(host, 3, 1), SUCCESS)
    assert_status(format_nvm(host, 1, 1), SUCCESS)
    assert changed(log(host, 0x04, 4096, rae=True)) == [1, 3]  # RAE=1 keeps it
    assert log(host, 0x04, 4, offset=4, rae=True) == (3).to_bytes(4, "little")
    assert changed(log(host, 0x04, 4096)) == [1, 3]
    assert changed(log(host, 0x04, 4096)) == []  # cleared by the read with RAE=0
    assert_status(format_nvm(host, NSID_ALL, 0), SUCCESS)
    assert changed(log(host, 0x04, 4096)) == [1, 2, 3]


@pytest.mark.nvme_config(namespaces=THREE_NAMESPACES)
def test_format_raises_namespace_attribute_notice(host: Host) -> None:
    enable_events(host, 1 << 8)
    aer = host.submit_aer()
    no_completion(host, aer)
    assert_status(format_nvm(host, 2, 1), SUCCESS)
    assert host.wait(0, aer).dw0 == NOTICE_NS_CHANGED
    # Notices stay masked until log 04h is read with RAE=0.
    second = host.submit_aer()
    assert_status(format_nvm(host, 1, 1), SUCCESS)
    no_completion(host, second)
    assert changed(log(host, 0x04, 4096, rae=True)) == [1, 2]
    no_completion(host, second)
    assert changed(log(host, 0x04, 4096)) == [1, 2]
    assert_status(format_nvm(host, 1, 0), SUCCESS)
    assert host.wait(0, second).dw0 == NOTICE_NS_CHANGED


def test_namespace_notice_masked_by_configuration(host: Host) -> None:
    aer = host.submit_aer()  # AEC bit 8 is clear by default
    assert_status(format_nvm(host, 1, 1), SUCCESS)
    no_completion(host, aer)
    assert changed(log(host, 0x04, 4096)) == [1]  # the log is kept anyway


# -- SMART temperature events ------------------------------------------------------------------------


def test_temperature_threshold_raises_smart_event(host: Host) -> None:
    enable_events(host, 1 << 1)  # critical warning bit 1: temperature
    aer = host.submit_aer()
    assert_status(cmd(host, SET_FEATURES, cdw10=0x04, cdw11=300), SUCCESS)  # over threshold 300 K < 310 K
    assert host.wait(0, aer).dw0 == SMART_TEMPERATURE
    assert log(host, 0x02, 512)[0] & 0x2  # and the SMART log says so (read clears the mask)
    again = host.submit_aer()
    assert_status(cmd(host, SET_FEATURES, cdw10=0x04, cdw11=1 << 20 | 320), SUCCESS)  # under 320 K
    assert host.wait(0, again).dw0 == SMART_TEMPERATURE


def test_smart_event_masked_by_configuration(host: Host) -> None:
    enable_events(host, 0xFF & ~(1 << 1))
    aer = host.submit_aer()
    assert_status(cmd(host, SET_FEATURES, cdw10=0x04, cdw11=300), SUCCESS)
    no_completion(host, aer)
    assert log(host, 0x02, 512)[0] & 0x2  # the warning is there; only the event is masked


def test_threshold_not_crossed_raises_nothing(host: Host) -> None:
    enable_events(host, 0xFF)
    aer = host.submit_aer()
    assert_status(cmd(host, SET_FEATURES, cdw10=0x04, cdw11=350), SUCCESS)
    no_completion(host, aer)


# -- offsets and identifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(("lid", "size"), [(0x01, 4096), (0x02, 512), (0x03, 512), (0x04, 4096),
                                           (0x05, 4096)])
def test_offsets_and_partial_reads(host: Host, lid: int, size: int) -> None:
    full = log(host, lid, size, rae=True)
    assert log(host, lid, 16, offset=size - 16, rae=True) == full[-16:]
    assert log(host, lid, 4, offset=size, rae=True) == bytes(4)  # at the end: zeroes
    assert_status(get_log(host, lid, 4, offset=size + 4, rae=True)[0], INVALID_FIELD)  # past it
    assert_status(get_log(host, lid, 4, offset=6, rae=True)[0], INVALID_FIELD)  # not dword aligned


@pytest.mark.parametrize("lid", [0x00, 0x07, 0x08, 0x0C, 0x0D, 0x70, 0x80, 0x82, 0xBE, 0xC0, 0xFF])
def test_unknown_log_page(host: Host, lid: int) -> None:
    assert_status(get_log(host, lid, 512)[0], INVALID_LOG_PAGE)
