"""Get/Set Features against NVMe Base 2.0 5.27: every supported Feature
Identifier, Select (current, default, saved, supported capabilities), Save,
namespace specific features and the data-buffer features."""

from __future__ import annotations

import struct
import time

import pytest

from adminutil import (
    FEATURE_NOT_NS_SPECIFIC, FID_NOT_SAVEABLE, GET_FEATURES, INVALID_FIELD, INVALID_NSID, MiB,
    NSID_ALL, SET_FEATURES, SUCCESS, assert_status, cmd, ok, read_cmd, write_cmd,
)
from nvmefast import NamespaceConfig
from nvmefast.testing import Host

ALL_FIDS = [0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0E, 0x0F, 0x16]
TWO_NAMESPACES = [NamespaceConfig(size_bytes=MiB)] * 2


def get(host: Host, fid: int, *, sel: int = 0, nsid: int = 0, cdw11: int = 0) -> int:
    return ok(cmd(host, GET_FEATURES, nsid=nsid, cdw10=sel << 8 | fid, cdw11=cdw11))


def set_(host: Host, fid: int, cdw11: int, *, nsid: int = 0) -> None:
    assert_status(cmd(host, SET_FEATURES, nsid=nsid, cdw10=fid, cdw11=cdw11), SUCCESS)


@pytest.mark.parametrize("fid", ALL_FIDS)
def test_supported_capabilities(host: Host, fid: int) -> None:
    caps = get(host, fid, sel=3)
    assert caps & 0x1 == 0  # not saveable (QEMU saves none)
    assert caps & 0x4  # changeable
    assert bool(caps & 0x2) == (fid == 0x05)  # only Error Recovery is namespace specific


@pytest.mark.parametrize("fid", [f for f in ALL_FIDS if f != 0x05])
def test_not_namespace_specific(host: Host, fid: int) -> None:
    c = cmd(host, SET_FEATURES, nsid=1, cdw10=fid, prp1=host.alloc(4096))
    assert_status(c, FEATURE_NOT_NS_SPECIFIC)
    c = cmd(host, SET_FEATURES, nsid=7, cdw10=fid, prp1=host.alloc(4096))
    assert_status(c, INVALID_FIELD)  # a valid NSID with no namespace: inactive (QEMU likewise)
    c = cmd(host, SET_FEATURES, nsid=0x101, cdw10=fid, prp1=host.alloc(4096))
    assert_status(c, INVALID_NSID)  # not even a valid NSID (NN is 256)


@pytest.mark.nvme_config(namespaces=TWO_NAMESPACES)
def test_error_recovery_is_per_namespace(host: Host) -> None:
    set_(host, 0x05, 100, nsid=1)
    assert get(host, 0x05, nsid=1) == 100 and get(host, 0x05, nsid=2) == 0
    set_(host, 0x05, 7, nsid=NSID_ALL)
    assert get(host, 0x05, nsid=1) == 7 and get(host, 0x05, nsid=2) == 7
    assert get(host, 0x05, nsid=2, sel=1) == 0
    for nsid in (0, 0x101, NSID_ALL):
        assert_status(cmd(host, GET_FEATURES, nsid=nsid, cdw10=0x05), INVALID_NSID)
    for nsid in (0, 0x101):
        assert_status(cmd(host, SET_FEATURES, nsid=nsid, cdw10=0x05, cdw11=1), INVALID_NSID)
    # NSID 3 is valid but has no namespace: inactive.
    assert_status(cmd(host, GET_FEATURES, nsid=3, cdw10=0x05), INVALID_FIELD)
    assert_status(cmd(host, SET_FEATURES, nsid=3, cdw10=0x05, cdw11=1), INVALID_FIELD)


def test_write_atomicity_normal(host: Host) -> None:
    assert get(host, 0x0A) == 0 and get(host, 0x0A, sel=1) == 0
    set_(host, 0x0A, 0xFFFFFFFF)  # DN; reserved bits dropped
    assert get(host, 0x0A) == 1


def test_async_event_configuration_bits(host: Host) -> None:
    set_(host, 0x0B, 0xFFFFFFFF)
    # SMART warnings 7:0, namespace attribute notices (bit 8), zone descriptor changed notices (bit 27)
    assert get(host, 0x0B) == 0x1FF | 1 << 27
    assert get(host, 0x0B, sel=1) == 0


def test_keep_alive_timer(host: Host) -> None:
    assert get(host, 0x0F) == 0
    set_(host, 0x0F, 30000)
    assert get(host, 0x0F) == 30000
    host.disable()
    host.enable()
    assert get(host, 0x0F) == 0  # reset restores the default


def _timestamp(host: Host) -> tuple[int, int, int]:
    c, raw = read_cmd(host, GET_FEATURES, cdw10=0x0E)
    assert_status(c, SUCCESS)
    (value,) = struct.unpack_from("<Q", raw, 0)
    return value & ((1 << 48) - 1), raw[6] & 1, (raw[6] >> 1) & 0x7


def test_timestamp(host: Host) -> None:
    ms, synch, origin = _timestamp(host)
    assert origin == 0 and synch == 0  # counting from 0 since the reset
    time.sleep(0.05)
    later, _, _ = _timestamp(host)
    assert later >= ms + 40  # the clock runs
    base = 1_700_000_000_000
    payload = struct.pack("<Q", base | 0xFF << 48)  # attribute byte is the controller's
    assert_status(write_cmd(host, SET_FEATURES, payload, cdw10=0x0E), SUCCESS)
    now, synch, origin = _timestamp(host)
    assert origin == 1 and synch == 0  # set by Set Features
    assert base <= now < base + 1000
    time.sleep(0.05)
    assert _timestamp(host)[0] >= now + 40
    host.disable()
    host.enable()
    assert _timestamp(host)[2] == 0  # reset: origin 000b again


def test_host_behavior_support(host: Host) -> None:
    c, raw = read_cmd(host, GET_FEATURES, cdw10=0x16)
    assert_status(c, SUCCESS)
    assert raw[:512] == bytes(512)
    payload = bytes([1, 1, 1]) + bytes(509)  # ACRE, ETDAS, LBAFEE
    assert_status(write_cmd(host, SET_FEATURES, payload, cdw10=0x16), SUCCESS)
    c, raw = read_cmd(host, GET_FEATURES, cdw10=0x16)
    assert raw[:3] == b"\x01\x01\x01" and raw[3:512] == bytes(509)
    c, raw = read_cmd(host, GET_FEATURES, cdw10=1 << 8 | 0x16)
    assert raw[:512] == bytes(512)  # default
    assert_status(write_cmd(host, SET_FEATURES, bytes([2]) + bytes(511), cdw10=0x16), INVALID_FIELD)


@pytest.mark.parametrize("fid", [0x0E, 0x16])
def test_data_buffer_features_refuse_save(host: Host, fid: int) -> None:
    c = write_cmd(host, SET_FEATURES, bytes(512), cdw10=1 << 31 | fid)
    assert_status(c, FID_NOT_SAVEABLE)


def test_temperature_threshold_drives_critical_warning(host: Host) -> None:
    # Composite temperature 310 K: at or past an over threshold of 310.
    set_(host, 0x04, 310)
    smart = host.get_log_page(0x02, 512)
    assert smart[0] & 0x2
    set_(host, 0x04, 343)
    assert host.get_log_page(0x02, 512)[0] & 0x2 == 0
    set_(host, 0x04, 1 << 20 | 311)  # under threshold above the temperature
    assert host.get_log_page(0x02, 512)[0] & 0x2
    set_(host, 0x04, 1 << 20 | 0)
    assert host.get_log_page(0x02, 512)[0] == 0
