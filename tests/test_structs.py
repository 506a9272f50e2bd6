"""nvmefast.structs parsers and nvmefast.status helpers.

The structs parsers are public (users' tests read Identify and log data with
them); here they are checked against bytes the controller really transferred
and against the testing package's independent parsers.
"""

from __future__ import annotations

import pytest

from nvmefast import CommandError, ControllerConfig, NvmeFastError, Status
from nvmefast.status import DNR, describe, dnr_of, sc_of, sct_of, with_dnr
from nvmefast.structs import (
    ErrorLogEntry,
    FirmwareSlotLog,
    IdentifyController,
    IdentifyNamespace,
    SmartLog,
    parse_active_ns_list,
    parse_ns_id_descriptors,
)
from nvmefast.testing import Host
from nvmefast.testing import IdentifyController as HostIdentifyController
from nvmefast.testing import IdentifyNamespace as HostIdentifyNamespace


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
    raw = host.identify(0x01)
    ours, theirs = IdentifyController.parse(raw), HostIdentifyController.parse(raw)
    assert (ours.sn, ours.mn, ours.fr) == ("XS-1", "model x", "FW9")
    for name in ("vid", "ssvid", "sn", "mn", "fr", "mdts", "ver", "aerl", "elpe", "nn", "vwc", "oncs"):
        assert getattr(ours, name) == getattr(theirs, name), name
    ns_raw = host.identify(0x00, 1)
    ns, host_ns = IdentifyNamespace.parse(ns_raw), HostIdentifyNamespace.parse(ns_raw)
    assert (ns.nsze, ns.lba_size) == (host_ns.nsze, host_ns.lba_size) == (config.namespaces[0].lbas, 512)
    assert parse_active_ns_list(host.identify(0x02)) == [1]
    descriptors = dict(parse_ns_id_descriptors(host.identify(0x03, 1)))
    assert descriptors[0x02] == ns.nguid


def test_log_parsers(host: Host, config: ControllerConfig) -> None:
    host.admin(bytes([0xC1]) + bytes(63))  # an invalid opcode: one error entry
    entries = ErrorLogEntry.parse_log(host.get_log_page(0x01, 4096))
    assert len(entries) == 1 and entries[0].sqid == 0
    assert (sct_of(entries[0].status), sc_of(entries[0].status)) == (0, 0x01)
    smart = SmartLog.parse(host.get_log_page(0x02, 512))
    assert smart.num_err_log_entries == 1 and smart.available_spare == 100
    fw = FirmwareSlotLog.parse(host.get_log_page(0x03, 512))
    assert fw.active_slot == 1 and fw.revisions[0] == config.firmware
