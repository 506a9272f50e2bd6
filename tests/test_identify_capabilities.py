"""Identify's claims hold: read Identify Controller and Identify Namespace,
then exercise every capability they advertise on a real namespace.

The I/O commands themselves are tested elsewhere (test_conformance_* of the
NVM command set); here each advertised bit only has to lead to a command
that works.
"""

from __future__ import annotations

import pytest

from adminutil import MiB, SUCCESS, assert_status, cmd, format_nvm, get_log, u16
from nvmefast import CommandError, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import nvm, pi
from nvmefast.testing.sgl import bit_bucket, data_block

ONCS_COMPARE, ONCS_DSM, ONCS_WRITE_ZEROES, ONCS_SAVE_SELECT = 1 << 0, 1 << 2, 1 << 3, 1 << 4
ONCS_TIMESTAMP, ONCS_VERIFY, ONCS_COPY = 1 << 6, 1 << 7, 1 << 8
OACS_FORMAT, OACS_DBBUF = 1 << 1, 1 << 8


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_every_oncs_bit_works(host: Host) -> None:
    oncs = host.identify_controller().oncs
    lba = host.lba_size(1)
    data = pattern(4 * lba, 1)
    host.write(1, 0, data)
    assert oncs & ONCS_COMPARE
    assert nvm.compare(host, 1, 0, data).ok
    miscompare = nvm.compare(host, 1, 0, pattern(4 * lba, 2))
    assert (miscompare.sct, miscompare.sc) == (2, 0x85)  # Compare Failure
    assert oncs & ONCS_WRITE_ZEROES
    assert nvm.write_zeroes(host, 1, 0, 1).ok
    assert host.read(1, 0, 1) == bytes(lba)
    assert oncs & ONCS_DSM
    assert nvm.dataset_management(host, 1, [(1, 1)]).ok  # deallocate: reads 00h (DLFEAT)
    assert host.read(1, 1, 1) == bytes(lba)
    assert oncs & ONCS_VERIFY
    assert nvm.verify(host, 1, 0, 4).ok
    assert oncs & ONCS_COPY
    assert nvm.copy(host, 1, 100, [(2, 2)]).ok
    assert host.read(1, 100, 2) == data[2 * lba :]
    assert oncs & ONCS_SAVE_SELECT
    assert_status(cmd(host, 0x0A, cdw10=1 << 8 | 0x01), SUCCESS)  # SEL honoured
    assert oncs & ONCS_TIMESTAMP
    assert_status(cmd(host, 0x0A, cdw10=0x0E, prp1=host.alloc(4096)), SUCCESS)


def test_write_zeroes_deallocate_as_dlfeat_says(host: Host) -> None:
    ns = host.identify_namespace(1)
    dlfeat = ns.raw[33]
    assert dlfeat & 0x8 and dlfeat & 0x7 == 0x1  # DEAC supported; deallocated reads 00h
    host.write(1, 8, pattern(512, 3))
    assert nvm.write_zeroes(host, 1, 8, 1, deac=True).ok
    assert host.read(1, 8, 1) == bytes(512)


def test_copy_limits_are_enforced_as_identify_says(host: Host) -> None:
    raw = host.identify_namespace(1).raw
    mssrl, msrc = u16(raw, 74), raw[80]
    assert nvm.copy(host, 1, 4096, [(0, mssrl)]).ok
    too_long = nvm.copy(host, 1, 4096, [(0, mssrl + 1)])
    assert (too_long.sct, too_long.sc) == (1, 0x83)  # Command Size Limit Exceeded
    too_many = nvm.copy(host, 1, 8192, [(i, 1) for i in range(msrc + 2)])
    assert (too_many.sct, too_many.sc) == (1, 0x83)


def test_sgls_advertised_and_an_sgl_read_works(host: Host) -> None:
    sgls = host.identify_controller().sgls
    assert sgls & 0x3 == 0x1 and sgls & 1 << 16
    data = pattern(2048, 5)
    host.write(1, 16, data)
    buf = host.alloc(4096)
    c = nvm.sgl_io(host, 0x02, 1, 16, 4, [data_block(buf, 1024), bit_bucket(512),
                                           data_block(buf + 2048, 512)])
    assert c.ok
    assert host.read_mem(buf, 1024) == data[:1024]
    assert host.read_mem(buf + 2048, 512) == data[1536:]


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=4 * MiB, lba_size=512)])
def test_each_lba_format_can_be_formatted_to_and_used(host: Host) -> None:
    ns = host.identify_namespace(1)
    assert host.identify_controller().oacs & OACS_FORMAT
    for index, fmt in enumerate(ns.lbaf):
        assert_status(format_nvm(host, 1, index), SUCCESS)
        now = host.identify_namespace(1)
        assert now.format_index == index and now.lba_size == fmt.lba_size
        assert now.nsze == 4 * MiB // fmt.lba_size
        data = pattern(2 * fmt.lba_size, index)
        if fmt.ms:  # with metadata, in a separate buffer (MSET 0)
            md = pattern(2 * fmt.ms, index + 1)
            assert pi.write(host, 1, now.nsze - 2, data, md).ok
            back = pi.read(host, 1, now.nsze - 2, 2)
            assert (back.data, back.metadata) == (data, md)
            assert not pi.read(host, 1, now.nsze - 1, 2).ok  # LBA range follows the new size
        else:
            host.write(1, now.nsze - 2, data)
            assert host.read(1, now.nsze - 2, 2) == data
            with pytest.raises(CommandError):
                host.read(1, now.nsze - 1, 2)  # LBA range follows the new size
        host.flush(1)


def test_vwc_flush_works(host: Host) -> None:
    assert host.identify_controller().vwc & 1
    host.write(1, 0, pattern(512, 9))
    host.flush(1)


def test_oacs_doorbell_buffer_config_accepted(host: Host) -> None:
    assert host.identify_controller().oacs & OACS_DBBUF
    host.enable_shadow_doorbells()
    data = pattern(512, 4)
    host.write(1, 5, data)
    assert host.read(1, 5, 1) == data


def test_lpa_and_kas_claims(host: Host) -> None:
    ident = host.identify_controller()
    assert ident.lpa & 0x2
    assert_status(get_log(host, 0x05, 4096)[0], SUCCESS)
    assert u16(ident.raw, 320)  # KAS: Keep Alive is supported
    assert_status(cmd(host, 0x18), SUCCESS)


@pytest.mark.parametrize("mdts", [1, 2])
def test_mdts_enforced_at_the_boundary(bare_host: Host, mdts: int) -> None:
    host = bare_host
    host.enable()
    host.set_num_queues(1, 1)
    host.create_io_queue_pair(1)
    limit = host.identify_controller().mdts
    assert limit == mdts
    max_bytes = 4096 << limit
    blocks = max_bytes // host.lba_size(1)
    host.write(1, 0, pattern(max_bytes, 1))
    assert len(host.read(1, 0, blocks)) == max_bytes
    buf = host.alloc(max_bytes + 4096)
    prps = host.build_prps(list(range(buf, buf + max_bytes + 4096, 4096)))
    over = host.io(build_sqe(0x02, nsid=1, prp1=prps.prp1, prp2=prps.prp2, cdw12=blocks))
    assert (over.sct, over.sc) == (0, 0x02)  # one block past MDTS: Invalid Field


@pytest.fixture
def config(request: pytest.FixtureRequest) -> ControllerConfig:
    """The conftest config, with ``mdts`` from a test's parameter when it has one."""
    from conftest import DEFAULT_CONFIG

    kwargs = dict(DEFAULT_CONFIG)
    marker = request.node.get_closest_marker("nvme_config")
    if marker is not None:
        kwargs.update(marker.kwargs)
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "mdts" in callspec.params:
        kwargs["mdts"] = callspec.params["mdts"]
    return ControllerConfig(**kwargs)
