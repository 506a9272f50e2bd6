"""The admin side of metadata and protection information: Identify Namespace
(NLBAF, LBAF, FLBAS, MC, DPC, DPS, DLFEAT), the NVM Command Set Identify
Namespace (CNS 05h: ELBAF PIF and STS), Identify Controller CTRATT.ELBAS, Host
Behavior Support LBAFEE, and Format NVM with LBAF/LBAFU, MSET, PI, PIL and SES:
what each field reports, what a format leaves behind, and every status.

Offsets and values are NVM Command Set 1.0's (Figures 78, 97, 98, 100, 101)
and NVMe Base 2.0's, written here as literals.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from adminutil import (
    INVALID_FIELD, INVALID_FORMAT, INVALID_NSID, NSID_ALL, SUCCESS, MiB, assert_status, format_nvm,
)
from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.testing import Host
from nvmefast.testing import pi as hpi
from nvmefast.testing.identify import IdentifyNamespace, IdentifyNamespaceNvm
from pimodel import PRACT, PRCHK_GUARD, PRCHK_REF, Fmt
from piref import Tuple

NS_WRITE_PROTECTED = (0, 0x20)
LBAFS = [(512, 0), (4096, 0), (512, 8), (512, 16), (4096, 8), (4096, 16), (4096, 64)]
"""The LBA Format table every namespace reports (index: data bytes, metadata bytes)."""


def _u32(raw: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", raw, offset)[0])


def identify_ns(host: Host, nsid: int) -> IdentifyNamespace:
    return IdentifyNamespace.parse(host.identify(0x00, nsid))


def identify_nvm(host: Host, nsid: int) -> IdentifyNamespaceNvm:
    return IdentifyNamespaceNvm.parse(host.identify(0x05, nsid))


CONFIGS = {
    "no-metadata": NamespaceConfig(size_bytes=MiB),
    "512+8-t1": NamespaceConfig(size_bytes=MiB, metadata_size=8, pi_type=1),
    "512+16-ext-no-pi": NamespaceConfig(size_bytes=MiB, metadata_size=16, extended_lba=True),
    "4096+16-t1-first-crc64": NamespaceConfig(size_bytes=MiB, lba_size=4096, metadata_size=16, pi_type=1,
                                              pi_first=True, guard="crc64"),
    "4096+64-t3-last-ext": NamespaceConfig(size_bytes=MiB, lba_size=4096, metadata_size=64, pi_type=3,
                                           extended_lba=True),
    "4096+64-t2-first-crc64": NamespaceConfig(size_bytes=MiB, lba_size=4096, metadata_size=64, pi_type=2,
                                              pi_first=True, guard="crc64"),
}  # fmt: skip


@pytest.mark.nvme_config(namespaces=list(CONFIGS.values()))
def test_identify_namespace_reports_the_configured_format(host: Host) -> None:
    for nsid, (name, ns) in enumerate(CONFIGS.items(), start=1):
        raw = host.identify(0x00, nsid)
        ident = IdentifyNamespace.parse(raw)
        assert ident.nlbaf == 6, name
        assert [(f.lba_size, f.ms, f.rp) for f in ident.lbaf] == [(a, b, 0) for a, b in LBAFS], name
        index = LBAFS.index((ns.lba_size, ns.metadata_size))
        assert raw[26] == index | (0x10 if ns.extended_lba else 0), name  # FLBAS
        assert raw[27] == 0b11, name  # MC: extended and separate both supported
        assert raw[28] == 0x1F, name  # DPC: Types 1-3, PI first and last
        assert raw[29] == ns.pi_type | (0x08 if ns.pi_first else 0), name  # DPS
        assert raw[33] == 0x09, name  # DLFEAT: 001b zeroes, WZ DEAC; bit 4 clear: deallocated guard FFFFh
        assert ident.nsze == MiB // ns.lba_size, name


@pytest.mark.nvme_config(namespaces=list(CONFIGS.values()))
def test_nvm_identify_namespace_elbaf(host: Host) -> None:
    """CNS 05h: no storage tags (LBSTM, PIC, STS 0); PIF 10b (64-bit guard) for the formats with
    16+ bytes of metadata and 4 KiB blocks on a crc64 namespace, 00b everywhere else."""
    for nsid, (name, ns) in enumerate(CONFIGS.items(), start=1):
        nvm = identify_nvm(host, nsid)
        assert (nvm.lbstm, nvm.pic) == (0, 0), name
        pifs = [e.pif for e in nvm.elbaf[: len(LBAFS)]]
        want = [2 if ns.guard == "crc64" and ms >= 16 and lba == 4096 else 0 for lba, ms in LBAFS]
        assert pifs == want, name
        assert all(e.sts == 0 for e in nvm.elbaf) and all(e.pif == 0 for e in nvm.elbaf[len(LBAFS) :]), name
        assert nvm.raw[12 + 4 * 64 :] == bytes(4096 - 12 - 4 * 64), name


@pytest.mark.nvme_config(namespaces=list(CONFIGS.values()))
def test_host_learns_the_format_from_identify(host: Host) -> None:
    for nsid, ns in enumerate(CONFIGS.values(), start=1):
        assert hpi.namespace_format(host, nsid) == hpi.PiFormat(
            ns.lba_size, ns.metadata_size, ns.extended_lba, ns.pi_type, ns.pi_first, ns.guard
        )


def test_ctratt_elbas(host: Host) -> None:
    """CTRATT bit 15: extended LBA formats (the 64-bit guard) supported; Linux answers with
    Host Behavior Support LBAFEE and reads CNS 05h for each namespace with metadata."""
    assert host.identify_controller().ctratt & (1 << 15)


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=MiB, metadata_size=8, pi_type=1)])
def test_broadcast_identify_namespace_gives_the_common_capabilities(host: Host) -> None:
    raw = host.identify(0x00, NSID_ALL)
    assert raw[25] == 6 and raw[26] == 0 and (raw[27], raw[28], raw[29]) == (0b11, 0x1F, 0)
    assert [(_u32(raw, 128 + 4 * i) >> 16 & 0xFF, _u32(raw, 128 + 4 * i) & 0xFFFF) for i in range(7)] == [
        (9 if a == 512 else 12, b) for a, b in LBAFS
    ]


class NoMetadataStore:
    """A storage object without read_metadata/write_metadata: it cannot keep metadata."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}

    def read(self, lba: int, nlb: int) -> bytes:
        return b"".join(self.blocks.get(lba + i, bytes(512)) for i in range(nlb))

    def write(self, lba: int, data: bytes) -> None:
        for i in range(len(data) // 512):
            self.blocks[lba + i] = data[i * 512 : (i + 1) * 512]


@pytest.mark.nvme_config(namespaces=[NamespaceConfig(size_bytes=MiB, backend=NoMetadataStore())])
def test_storage_without_metadata_reports_those_formats_unavailable(host: Host) -> None:
    """LBADS 0 marks a valid format that is not currently available (Figure 97, NLBAF); MC and
    DPC are 0; Format NVM to one is Invalid Format."""
    ident = identify_ns(host, 1)
    assert [(f.lbads, f.ms) for f in ident.lbaf] == [(9, 0), (12, 0), (0, 8), (0, 16), (0, 8), (0, 16), (0, 64)]
    assert (ident.mc, ident.dpc) == (0, 0)
    for index in range(2, 7):
        assert_status(format_nvm(host, 1, index), INVALID_FORMAT)
    assert_status(format_nvm(host, 1, 1), SUCCESS)


# -- Format NVM --------------------------------------------------------------------------------

ONE_MIB = [NamespaceConfig(size_bytes=MiB)]


def _format_cases() -> Iterator[tuple[int, int, bool, bool]]:
    for index, (_, ms) in enumerate(LBAFS):
        for pi in range(4):
            if pi and ms < 8:
                continue
            for mset in (False, True):
                for pil in (False, True):
                    yield index, pi, mset, pil


@pytest.mark.nvme_config(namespaces=ONE_MIB)
@pytest.mark.parametrize(("index", "pi", "mset", "pil"), list(_format_cases()),
                         ids=lambda v: str(int(v)) if not isinstance(v, bool) else "yn"[not v])  # fmt: skip
def test_format_to_every_format(host: Host, index: int, pi: int, mset: bool, pil: bool) -> None:
    """Format NVM switches the format, the metadata setting and the PI type and location, and
    the namespace reads back as the spec says: data zero, metadata deallocated."""
    lba, ms = LBAFS[index]
    assert hpi.write(host, 1, 0, bytes([0xA5]) * 4096, fmt=hpi.namespace_format(host, 1)).ok
    assert_status(hpi.format_nvm(host, 1, index, mset=mset, pi=pi, pil=pil), SUCCESS)
    raw = host.identify(0x00, 1)
    assert raw[26] == index | (0x10 if mset and ms else 0)  # FLBAS (MSET means nothing without metadata)
    assert raw[29] == pi | (0x08 if pi and pil else 0)  # DPS (PIL means nothing without PI)
    assert struct.unpack_from("<Q", raw, 0)[0] == MiB // lba
    fmt = hpi.namespace_format(host, 1)
    assert (fmt.lba_size, fmt.metadata_size, fmt.pi_type, fmt.guard) == (lba, ms, pi, "crc16")
    model = Fmt(lba, ms, pi, bool(pil and pi), "crc16", bool(mset and ms))
    back = hpi.read(host, 1, 0, 2, fmt=fmt)
    assert back.ok and back.data == bytes(2 * lba)
    if pi:
        dealloc = model.with_tuple(bytes(ms), Tuple(0xFFFF, 0xFFFF, 0xFFFF_FFFF))
        assert back.metadata == dealloc * 2
        # PRACT I/O works in the new format and its tuples are the spec's.
        data = model.data(2)
        sent = None if model.stripped(PRACT) else model.metadata(2)
        assert hpi.write(host, 1, 4, data, sent, prinfo=PRACT | PRCHK_GUARD, ilbrt=4, lbat=7, fmt=fmt).ok
        got = hpi.read(host, 1, 4, 2, fmt=fmt)
        assert got.data == data and got.metadata == model.inserted(data, sent or b"", 2, 7, 4)
    else:
        assert back.metadata == bytes(2 * ms)


CRC64_NS = [NamespaceConfig(size_bytes=MiB, lba_size=4096, metadata_size=16, pi_type=1, guard="crc64")]


@pytest.mark.nvme_config(namespaces=CRC64_NS)
def test_format_to_a_64b_guard_format_needs_lbafee(host: Host) -> None:
    """NVMCS 4.1.2: without Host Behavior Support LBAFEE, Format NVM to a format of 64b Guard
    PI is Invalid Namespace or Format; with it, the 64-bit guard is in use."""
    assert_status(hpi.format_nvm(host, 1, 5, pi=1), INVALID_NSID)  # Invalid Namespace or Format
    assert_status(hpi.format_nvm(host, 1, 6, pi=3, pil=True), INVALID_NSID)
    assert_status(hpi.format_nvm(host, 1, 5), SUCCESS)  # no PI: no 64b Guard PI to enable
    assert hpi.enable_lbafee(host).ok
    assert_status(hpi.format_nvm(host, 1, 6, pi=3, pil=True), SUCCESS)
    fmt = hpi.namespace_format(host, 1)
    assert (fmt.metadata_size, fmt.pi_type, fmt.pi_first, fmt.guard) == (64, 3, True, "crc64")
    assert host.controller.engine.namespace_format(1)["guard"] == "crc64"


@pytest.mark.nvme_config(namespaces=CRC64_NS)
def test_crc64_namespace_uses_the_16b_guard_where_its_elbaf_says(host: Host) -> None:
    """The guard belongs to the LBA format (ELBAF): 4096+8 has room for 8 bytes of PI only, and
    512-byte formats may not take the 64-bit guard at all."""
    for index in (2, 3, 4):
        assert_status(hpi.format_nvm(host, 1, index, pi=1), SUCCESS)
        fmt = hpi.namespace_format(host, 1)
        assert fmt.guard == "crc16" and fmt.pi_size == 8, index
        model = Fmt(fmt.lba_size, fmt.metadata_size, 1, False, "crc16")
        data = model.data(1)
        sent = None if model.stripped(PRACT) else model.metadata(1)
        assert hpi.write(host, 1, 0, data, sent, prinfo=PRACT | PRCHK_REF, ilbrt=0, fmt=fmt).ok
        assert hpi.read(host, 1, 0, 1, fmt=fmt).metadata == model.inserted(data, sent or b"", 1, 0, 0)


@pytest.mark.nvme_config(namespaces=ONE_MIB)
def test_lbafu_counts_once_lbafee_is_set(host: Host) -> None:
    assert_status(format_nvm(host, 1, 2, cdw10=1 << 12), SUCCESS)  # LBAFU ignored: format 2
    assert identify_ns(host, 1).format_index == 2
    assert hpi.enable_lbafee(host).ok
    assert_status(format_nvm(host, 1, 2, cdw10=1 << 12), INVALID_FORMAT)  # format 18
    assert identify_ns(host, 1).nlbaf == 6  # still seven formats: LBAFEE allows 64, we have 7


@pytest.mark.nvme_config(namespaces=ONE_MIB)
@pytest.mark.parametrize(
    ("index", "pi", "status"),
    [
        (0, 1, INVALID_FORMAT),  # no metadata, no room for PI
        (1, 3, INVALID_FORMAT),
        (7, 0, INVALID_FORMAT),  # past NLBAF
        (2, 4, INVALID_FIELD),  # PI 100b: reserved
        (4, 7, INVALID_FIELD),  # PI 111b: reserved
    ],
)
def test_format_refusals(host: Host, index: int, pi: int, status: tuple[int, int]) -> None:
    assert_status(hpi.format_nvm(host, 1, index, pi=pi), status)
    assert (identify_ns(host, 1).flbas, identify_ns(host, 1).dps) == (0, 0)  # nothing changed


@pytest.mark.nvme_config(
    namespaces=[NamespaceConfig(size_bytes=MiB), NamespaceConfig(size_bytes=MiB, backend=NoMetadataStore())]
)
def test_format_all_namespaces_is_all_or_nothing(host: Host) -> None:
    """NSID FFFFFFFFh: every namespace passes the checks, or none is formatted."""
    assert_status(hpi.format_nvm(host, NSID_ALL, 2, pi=1), INVALID_FORMAT)
    assert identify_ns(host, 1).format_index == 0
    assert_status(hpi.format_nvm(host, NSID_ALL, 1), SUCCESS)
    assert identify_ns(host, 1).format_index == 1 and identify_ns(host, 2).format_index == 1


@pytest.mark.nvme_config(namespaces=ONE_MIB)
def test_format_with_user_data_erase(host: Host) -> None:
    assert_status(hpi.format_nvm(host, 1, 4, pi=1), SUCCESS)
    fmt = hpi.namespace_format(host, 1)
    assert hpi.write(host, 1, 0, b"\x5a" * 4096, prinfo=PRACT, ilbrt=0, fmt=fmt).ok
    assert_status(hpi.format_nvm(host, 1, 4, pi=1, ses=0b001), SUCCESS)
    back = hpi.read(host, 1, 0, 1, fmt=fmt)
    assert back.data == bytes(4096) and back.metadata == b"\xff" * 8
    assert_status(hpi.format_nvm(host, 1, 4, pi=1, ses=0b010), INVALID_FIELD)  # no cryptographic erase


def test_format_of_a_read_only_namespace(tmp_path: Path) -> None:
    path = tmp_path / "ro.img"
    path.write_bytes(bytes(MiB))
    cfg = ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=path, readonly=True)])
    with Controller(cfg) as ctrl, Host(ctrl) as host:
        host.enable()
        assert_status(hpi.format_nvm(host, 1, 2, pi=1), NS_WRITE_PROTECTED)


@pytest.mark.nvme_config(namespaces=CRC64_NS)
@pytest.mark.nvme_host(lbafee=True)
def test_the_nvme_host_marker_sets_lbafee(nvme_host: Host) -> None:
    assert_status(hpi.format_nvm(nvme_host, 1, 5, pi=1), SUCCESS)
    assert hpi.namespace_format(nvme_host, 1).guard == "crc64"
