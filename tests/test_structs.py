"""nvmefast.structs log parsers, nvmefast.status helpers, and the Identify
parsers users' tests get from nvmefast.testing, checked against bytes the
controller really transferred.
"""

from __future__ import annotations

import pytest

from nvmefast import CommandError, ControllerConfig, NvmeFastError, Status
from nvmefast.status import DNR, describe, dnr_of, sc_of, sct_of, with_dnr
from nvmefast.structs import ErrorLogEntry, FirmwareSlotLog, SmartLog, namespace_ids
from nvmefast.testing import Host, IdentifyController, IdentifyNamespace
from nvmefast.testing.identify import parse_ns_descriptors, parse_nsid_list


def test_status_layout() -> None:
    assert int(Status.INVALID_QID) == 0x101
    assert int(Status.INVALID_PRP_OFFSET) == 0x013
    assert with_dnr(Status.INVALID_FIELD) == DNR | 0x002 == 0x4002
    status = with_dnr(Status.INVALID_LOG_PAGE)
    assert (sct_of(status), sc_of(status), dnr_of(status)) == (1, 0x09, True)
    assert describe(status) == "Invalid Log Page (SCT 1h, SC 09h, DNR)"
    assert "Unknown" in describe(0x2FF)


def test_command_error() -> None:
    error = CommandError(with_dnr(Status.INVALID_QID), 0x05)
    assert isinstance(error, NvmeFastError)
    assert (error.sct, error.sc, error.dnr, error.opcode) == (1, 0x01, True, 0x05)
    assert "Invalid Queue Identifier" in str(error) and "0x05" in str(error)


@pytest.mark.nvme_config(serial="XS-1", model="model x", firmware="FW9")
def test_identify_parsers(host: Host, config: ControllerConfig) -> None:
    ctrl = IdentifyController.parse(host.identify(0x01))
    assert (ctrl.sn, ctrl.mn, ctrl.fr) == ("XS-1", "model x", "FW9")
    assert (ctrl.mdts, ctrl.ver, ctrl.aerl, ctrl.nn) == (config.mdts, 0x00020000, config.aerl, 256)
    ns = IdentifyNamespace.parse(host.identify(0x00, 1))
    assert (ns.nsze, ns.lba_size) == (config.namespaces[0].lbas, 512)
    assert parse_nsid_list(host.identify(0x02)) == [1]
    descriptors = dict(parse_ns_descriptors(host.identify(0x03, 1)))
    assert descriptors[0x02] == namespace_ids(config.serial, 1).nguid


def test_log_parsers(host: Host, config: ControllerConfig) -> None:
    host.admin(bytes([0xC1]) + bytes(63))  # an invalid opcode: one error entry
    entries = ErrorLogEntry.parse_log(host.get_log_page(0x01, 4096))
    assert len(entries) == 1 and entries[0].sqid == 0
    assert (sct_of(entries[0].status), sc_of(entries[0].status)) == (0, 0x01)
    smart = SmartLog.parse(host.get_log_page(0x02, 512))
    assert smart.num_err_log_entries == 1 and smart.available_spare == 100
    fw = FirmwareSlotLog.parse(host.get_log_page(0x03, 512))
    assert fw.active_slot == 1 and fw.revisions[0] == config.firmware
