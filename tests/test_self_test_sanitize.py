"""Device Self-test (14h) with its log (06h), and Sanitize (84h) with its log
(81h), SANICAP, the commands allowed while it runs and the completion event.

Offsets and values are the spec's (NVMe Base 2.0 5.14, 5.24, 8.1.8, 8.1.26,
Figures 143, 235, 236, 267) through nvmefast.testing.namespaces, whose
parsers do not share code with the controller.
"""

from __future__ import annotations

import importlib
import time

import pytest

from adminutil import INVALID_FIELD, INVALID_NSID, MiB, SUCCESS, assert_status, cmd, get_log, u16, u32
from nvmefast import Controller
from nvmefast.testing import Host, build_sqe
from nvmefast.testing.namespaces import SanitizeStatus, SelfTestLog, device_self_test, sanitize

# The modules (nvmefast.admin re-exports functions of the same names).
sanitize_module = importlib.import_module("nvmefast.admin.sanitize")
self_test_module = importlib.import_module("nvmefast.admin.self_test")

SELF_TEST_IN_PROGRESS = (1, 0x1D)
SANITIZE_IN_PROGRESS = (0, 0x1D)
SANITIZE_COMPLETED_EVENT = 0x6 | 0x01 << 8 | 0x81 << 16  # I/O Command Specific, Sanitize Completed, log 81h
SHORT, EXTENDED, ABORT = 0x1, 0x2, 0xF
BLOCK_ERASE, OVERWRITE, CRYPTO_ERASE = 0x2, 0x3, 0x4
NSID_ALL = 0xFFFFFFFF


def self_test_log(host: Host) -> SelfTestLog:
    c, data = get_log(host, 0x06, 564)
    assert_status(c, SUCCESS)
    return SelfTestLog.parse(data[:564])


def sanitize_log(host: Host, rae: bool = False) -> SanitizeStatus:
    c, data = get_log(host, 0x81, 512, rae=rae)
    assert_status(c, SUCCESS)
    return SanitizeStatus.parse(data[:512])


def wait_self_test(host: Host, timeout: float = 30) -> SelfTestLog:
    deadline = time.monotonic() + timeout
    while (log := self_test_log(host)).current:
        assert time.monotonic() < deadline, log
        time.sleep(0.02)
    return log


def wait_sanitize(host: Host, timeout: float = 30) -> SanitizeStatus:
    deadline = time.monotonic() + timeout
    while (log := sanitize_log(host, rae=True)).sos == 0b010:
        assert time.monotonic() < deadline, log
        time.sleep(0.02)
    return log


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Self-tests and sanitizes that last a short while (progress still shows)."""
    monkeypatch.setattr(self_test_module, "SHORT_SECONDS", 0.3)
    monkeypatch.setattr(self_test_module, "EXTENDED_SECONDS", 0.6)
    monkeypatch.setattr(sanitize_module, "MIN_SECONDS", 0.5)


# -- Device Self-test --------------------------------------------------------------------------------


def test_self_test_advertised(host: Host) -> None:
    data = host.identify(0x01)
    assert u16(data, 256) & (1 << 4)  # OACS bit 4
    assert u16(data, 316) >= 1  # EDSTT, minutes
    assert data[318] & 1  # DSTO: one self-test at a time
    log = self_test_log(host)
    assert (log.current, log.entries) == (0, ())
    raw = get_log(host, 0x06, 564)[1]
    assert all(raw[4 + 28 * i] == 0x0F for i in range(20))  # unused: code 0h, result Fh


@pytest.mark.usefixtures("quick")
def test_short_self_test_runs_with_visible_progress_then_passes(host: Host) -> None:
    assert_status(device_self_test(host, SHORT), SUCCESS)
    seen = []
    while (log := self_test_log(host)).current:
        assert log.current == SHORT
        seen.append(log.percent)
        time.sleep(0.02)
    assert seen and max(seen) > 0, seen  # nvme-cli --wait needs progress above 0
    assert seen == sorted(seen)  # never backwards ("progress broken")
    assert log.percent == 0
    (entry,) = log.entries
    assert (entry.code, entry.result, entry.valid) == (SHORT, 0x0, 0)


@pytest.mark.usefixtures("quick")
def test_self_test_in_progress_abort_and_statuses(host: Host) -> None:
    assert_status(device_self_test(host, ABORT), SUCCESS)  # none running: nothing logged
    assert self_test_log(host).entries == ()
    assert_status(device_self_test(host, EXTENDED, nsid=1), SUCCESS)
    assert_status(device_self_test(host, SHORT), SELF_TEST_IN_PROGRESS)
    assert_status(device_self_test(host, EXTENDED), SELF_TEST_IN_PROGRESS)
    assert_status(device_self_test(host, ABORT), SUCCESS)
    log = self_test_log(host)
    assert log.current == 0
    assert [(e.code, e.result) for e in log.entries] == [(EXTENDED, 0x1)]  # aborted by a command
    for stc in (0x0, 0x3, 0x5, 0xE):
        assert_status(device_self_test(host, stc), INVALID_FIELD)
    assert_status(device_self_test(host, SHORT, nsid=257), INVALID_NSID)
    assert_status(device_self_test(host, SHORT, nsid=2), INVALID_FIELD)  # inactive
    assert_status(device_self_test(host, SHORT, nsid=0), SUCCESS)  # the controller alone
    assert [(e.code, e.result) for e in wait_self_test(host).entries] == [(SHORT, 0x0), (EXTENDED, 0x1)]


@pytest.mark.usefixtures("quick")
def test_self_test_fails_on_an_uncorrectable_block(host: Host) -> None:
    c = host.io(build_sqe(0x04, nsid=1, cdw10=12345, cdw12=3))  # Write Uncorrectable LBAs 12345..12348
    assert c.ok
    assert_status(device_self_test(host, EXTENDED, nsid=NSID_ALL), SUCCESS)
    (entry,) = wait_self_test(host).entries
    assert (entry.code, entry.result) == (EXTENDED, 0x7)  # failed segment
    assert entry.segment > 0
    assert entry.valid == 0xF  # NSID, FLBA, SCT, SC valid
    assert (entry.nsid, entry.lba, entry.sct, entry.sc) == (1, 12345, 0x2, 0x81)  # Unrecovered Read Error


def test_log_keeps_the_twenty_newest_first(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(self_test_module, "SHORT_SECONDS", 0.0)
    monkeypatch.setattr(self_test_module, "EXTENDED_SECONDS", 0.0)
    for i in range(22):
        assert_status(device_self_test(host, EXTENDED if i % 2 else SHORT, nsid=0), SUCCESS)
        wait_self_test(host)
    log = self_test_log(host)
    assert len(log.entries) == 20
    assert [e.code for e in log.entries] == [EXTENDED, SHORT] * 10  # the 22nd (extended) first


@pytest.mark.usefixtures("quick")
def test_reset_aborts_a_short_test_not_an_extended_one(bare_host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    host = bare_host
    host.enable()
    assert_status(device_self_test(host, SHORT), SUCCESS)
    host.disable()
    host.enable()
    (entry,) = self_test_log(host).entries
    assert (entry.code, entry.result) == (SHORT, 0x2)  # aborted by a Controller Level Reset
    monkeypatch.setattr(self_test_module, "EXTENDED_SECONDS", 2.0)
    assert_status(device_self_test(host, EXTENDED), SUCCESS)
    host.disable()
    host.enable()
    assert self_test_log(host).current == EXTENDED  # goes on
    assert [(e.code, e.result) for e in wait_self_test(host).entries][0] == (EXTENDED, 0x0)


def test_a_finished_test_is_logged_with_its_result_by_a_later_reset(
    bare_host: Host, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reset after the core finished a short test, before the host read the
    log, logs the test as it ended (passed), not as aborted by the reset."""
    monkeypatch.setattr(self_test_module, "SHORT_SECONDS", 0.0)
    host = bare_host
    host.enable()
    assert_status(device_self_test(host, SHORT), SUCCESS)
    engine = controller._engine  # the core's own view: reading the log would record the end
    assert engine is not None
    deadline = time.monotonic() + 30
    while engine.self_test_status()["running"]:
        assert time.monotonic() < deadline, "the short test never ended"
        time.sleep(0.01)
    host.disable()
    host.enable()
    (entry,) = self_test_log(host).entries
    assert (entry.code, entry.result) == (SHORT, 0x0)


@pytest.mark.usefixtures("quick")
@pytest.mark.nvme_config(capacity_bytes=64 * MiB)
def test_removing_the_tested_namespace_aborts_the_test(host: Host, controller: Controller,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(self_test_module, "EXTENDED_SECONDS", 5.0)
    from nvmefast import NamespaceConfig

    nsid = controller.add_namespace(NamespaceConfig(size_bytes=MiB))
    assert_status(device_self_test(host, EXTENDED, nsid=nsid), SUCCESS)
    controller.remove_namespace(nsid)
    (entry,) = self_test_log(host).entries
    assert (entry.code, entry.result) == (EXTENDED, 0x3)  # aborted: namespace removed


# -- Sanitize ----------------------------------------------------------------------------------------------


def test_sanitize_advertised_and_idle_log(host: Host) -> None:
    sanicap = u32(host.identify(0x01), 328)
    assert sanicap & 0b111 == 0b110  # block erase, overwrite; no crypto erase
    assert not sanicap & (1 << 29)  # NDI clear: No-Deallocate is honoured
    log = sanitize_log(host)
    assert (log.sprog, log.sos, log.scdw10) == (0xFFFF, 0b000, 0)  # never sanitized


@pytest.mark.parametrize("action", [0, CRYPTO_ERASE, 5, 6, 7])
def test_sanitize_unsupported_actions(host: Host, action: int) -> None:
    assert_status(sanitize(host, action), INVALID_FIELD)
    assert sanitize_log(host).sos == 0


@pytest.mark.usefixtures("quick")
def test_block_erase_restricts_commands_then_completes(host: Host) -> None:
    host.write(1, 40, b"\xee" * 4096)
    aer = host.submit_aer()
    assert_status(sanitize(host, BLOCK_ERASE), SUCCESS)
    log = sanitize_log(host, rae=True)
    assert log.sos == 0b010 and log.sprog < 0xFFFF  # in progress at once
    assert log.scdw10 == BLOCK_ERASE | 1 << 4  # the CDW10 sent (the helper's OWPASS 1, ignored by a block erase)
    buf = host.alloc(4096)
    read = host.io(build_sqe(0x02, nsid=1, prp1=buf, cdw10=40, cdw12=0))
    assert (read.sct, read.sc) == SANITIZE_IN_PROGRESS
    assert host.io(build_sqe(0x00, nsid=1)).ok  # Flush is allowed
    assert_status(cmd(host, 0x06, cdw10=1, prp1=buf), SUCCESS)  # Identify is allowed
    assert_status(get_log(host, 0x02, 512)[0], SUCCESS)  # SMART / Health is allowed
    assert_status(get_log(host, 0x05, 4096)[0], SANITIZE_IN_PROGRESS)  # Commands Supported and Effects is not
    assert_status(device_self_test(host, SHORT), SANITIZE_IN_PROGRESS)
    assert_status(cmd(host, 0x80, nsid=1), SANITIZE_IN_PROGRESS)  # Format NVM
    assert_status(sanitize(host, BLOCK_ERASE), SANITIZE_IN_PROGRESS)  # a second one
    assert host.wait(0, aer, timeout=30).dw0 == SANITIZE_COMPLETED_EVENT
    log = wait_sanitize(host)
    assert (log.sos, log.global_data_erased, log.sprog) == (0b001, True, 0xFFFF)
    assert host.read(1, 40, 8) == bytes(4096)
    host.write(1, 0, bytes(512))
    assert sanitize_log(host).global_data_erased is False  # written since


@pytest.mark.usefixtures("quick")
def test_overwrite_with_pattern_passes_and_no_deallocate(host: Host) -> None:
    assert_status(sanitize(host, OVERWRITE, passes=3, invert=True, no_dealloc=True, pattern=0x11223344), SUCCESS)
    log = wait_sanitize(host)
    assert (log.sos, log.passes) == (0b001, 3)
    # Passes 1 and 3 write the pattern, 2 its inverse (OIPBP); the blocks stay allocated (NDAS).
    assert host.read(1, 7, 1) == bytes.fromhex("44332211") * 128


@pytest.mark.usefixtures("quick")
def test_sanitize_survives_a_reset_and_aborts_a_self_test(bare_host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    host = bare_host
    host.enable()
    monkeypatch.setattr(self_test_module, "EXTENDED_SECONDS", 5.0)
    assert_status(device_self_test(host, EXTENDED), SUCCESS)
    monkeypatch.setattr(sanitize_module, "MIN_SECONDS", 1.5)
    assert_status(sanitize(host, BLOCK_ERASE), SUCCESS)
    host.disable()
    host.enable()
    assert sanitize_log(host).sos == 0b010  # a reset does not stop it
    assert wait_sanitize(host).sos == 0b001
    (entry,) = self_test_log(host).entries
    assert (entry.code, entry.result) == (EXTENDED, 0x9)  # aborted by a sanitize
