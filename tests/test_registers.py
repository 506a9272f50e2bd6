"""BAR0 controller registers and the CC/CSTS state machine (NVMe 1.4 section 3.1, 7.6).

Driven through the embedding contract (``bar0_read``/``bar0_write``) the way
a VMM forwards guest MMIO; register layouts are written out from the spec.
"""

from __future__ import annotations

import time

import pytest

from nvmefast import Controller, ControllerConfig, RegisterAccessError
from nvmefast.testing import Host, build_sqe

CAP, VS, INTMS, INTMC, CC, CSTS, NSSR, AQA, ASQ, ACQ = (
    0x00, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24, 0x28, 0x30,
)
CC_EN = 1 << 0
# What Linux programs: MPS 0 (4 KiB), AMS 0, IOSQES 6, IOCQES 4 (and CSS 110b when CAP.CSS bit 6
# is set; an unsupported CSS sets CFS: tests/test_zns_admin.py).
CC_LINUX = 6 << 16 | 4 << 20
CSTS_RDY, CSTS_CFS = 1 << 0, 1 << 1
SHST_MASK, SHST_COMPLETE = 0x3 << 2, 0x2 << 2
IDENTIFY = 0x06


def field(value: int, lo: int, hi: int) -> int:
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def csts(ctrl: Controller) -> int:
    return ctrl.bar0_read(CSTS, 4)


def wait_csts(ctrl: Controller, mask: int, value: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if csts(ctrl) & mask == value:
            return True
        time.sleep(0.001)
    return csts(ctrl) & mask == value


def setup_admin_queues(ctrl: Controller, host: Host, entries: int = 16) -> None:
    """Program AQA/ASQ/ACQ with valid queues, as nvme_pci_configure_admin_queue does."""
    asq = host.alloc(entries * 64)
    acq = host.alloc(entries * 16)
    ctrl.bar0_write(AQA, (entries - 1) << 16 | (entries - 1), 4)
    ctrl.bar0_write(ASQ, asq, 8)
    ctrl.bar0_write(ACQ, acq, 8)


# -- CAP, VS ------------------------------------------------------------------


@pytest.mark.nvme_config(max_queue_entries=1024, doorbell_stride=0)
def test_cap_fields(controller: Controller) -> None:
    cap = controller.bar0_read(CAP, 8)
    assert field(cap, 0, 15) == 1023  # MQES, 0-based
    assert field(cap, 16, 16) == 1  # CQR: contiguous queues required
    assert field(cap, 17, 18) == 0  # AMS: round robin only
    assert field(cap, 24, 31) == 20  # TO: 10 s in 500 ms units
    assert field(cap, 32, 35) == 0  # DSTRD
    assert field(cap, 36, 36) == 0  # NSSRS
    assert field(cap, 37, 44) == 0xC1  # CSS: NVM (bit 0), I/O command sets (bit 6), admin only (bit 7)
    assert field(cap, 45, 45) == 0  # BPS
    assert field(cap, 48, 51) == 0  # MPSMIN: 4 KiB
    assert field(cap, 52, 55) == 4  # MPSMAX: 64 KiB
    assert field(cap, 56, 56) == 0  # PMRS
    assert field(cap, 57, 57) == 0  # CMBS
    assert field(cap, 19, 23) == 0 and field(cap, 46, 47) == 0 and field(cap, 58, 63) == 0


@pytest.mark.nvme_config(max_queue_entries=64, doorbell_stride=3)
def test_cap_follows_config(controller: Controller) -> None:
    cap = controller.bar0_read(CAP, 8)
    assert field(cap, 0, 15) == 63
    assert field(cap, 32, 35) == 3


def test_cap_dword_and_narrow_reads_agree(controller: Controller) -> None:
    cap = controller.bar0_read(CAP, 8)
    assert controller.bar0_read(CAP, 4) | controller.bar0_read(CAP + 4, 4) << 32 == cap
    assert controller.bar0_read(CAP, 2) == cap & 0xFFFF
    assert controller.bar0_read(CAP + 3, 1) == (cap >> 24) & 0xFF
    assert controller.bar0_read(CAP + 6, 2) == (cap >> 48) & 0xFFFF


def test_vs_is_2_0_0(controller: Controller) -> None:
    assert controller.bar0_read(VS, 4) == 0x00020000
    assert controller.bar0_read(VS + 2, 2) == 0x0002  # MJR
    assert controller.bar0_read(VS + 1, 1) == 0x00  # MNR
    assert controller.bar0_read(VS, 1) == 0x00  # TER


def test_read_only_registers_ignore_writes(controller: Controller) -> None:
    cap, vs = controller.bar0_read(CAP, 8), controller.bar0_read(VS, 4)
    controller.bar0_write(CAP, 0, 8)
    controller.bar0_write(CAP + 4, 0xFFFFFFFF, 4)
    controller.bar0_write(VS, 0x00020000, 4)
    assert controller.bar0_read(CAP, 8) == cap
    assert controller.bar0_read(VS, 4) == vs


# -- BAR size and access rules -----------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "stride", "size"),
    [(8, 0, 0x2000), (1, 0, 0x2000), (1023, 0, 0x4000), (8, 4, 0x2000), (64, 4, 0x4000)],
)
def test_bar0_size_covers_every_doorbell(pairs: int, stride: int, size: int) -> None:
    with Controller(ControllerConfig(max_io_queue_pairs=pairs, doorbell_stride=stride)) as ctrl:
        assert ctrl.bar0_size == size
        assert ctrl.bar0_size & (ctrl.bar0_size - 1) == 0
        last_doorbell = 0x1000 + (2 * pairs + 1) * (4 << stride)
        assert last_doorbell + 4 <= ctrl.bar0_size


@pytest.mark.parametrize("size", [0, 3, 5, 6, 7, 16, -4])
def test_bad_access_size_raises(controller: Controller, size: int) -> None:
    with pytest.raises(RegisterAccessError, match="1, 2, 4 or 8"):
        controller.bar0_read(CC, size)
    with pytest.raises(RegisterAccessError, match="1, 2, 4 or 8"):
        controller.bar0_write(CC, 0, size)


def test_access_outside_bar0_raises(controller: Controller) -> None:
    end = controller.bar0_size
    for offset, size in [(-1, 1), (-4, 4), (end, 1), (end - 2, 4), (end - 4, 8), (1 << 40, 4)]:
        with pytest.raises(RegisterAccessError):
            controller.bar0_read(offset, size)
        with pytest.raises(RegisterAccessError):
            controller.bar0_write(offset, 0, size)
    controller.bar0_read(end - 4, 4)  # the last dword is inside
    controller.bar0_write(end - 8, 0, 8)


def test_reserved_space_reads_zero_and_ignores_writes(controller: Controller) -> None:
    for offset in (0x18, 0x38, 0x3C, 0x50, 0xE00, 0xFFC):
        controller.bar0_write(offset, 0xFFFFFFFF, 4)
        assert controller.bar0_read(offset, 4) == 0


def test_nssr_unsupported(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    assert controller.bar0_read(NSSR, 4) == 0
    controller.bar0_write(NSSR, 0x4E564D65, 4)  # "NVMe": would start a subsystem reset
    assert controller.bar0_read(NSSR, 4) == 0
    assert csts(controller) & CSTS_RDY
    assert bare_host.admin(build_sqe(IDENTIFY, cdw10=1, prp1=bare_host.alloc(4096))).ok


def test_doorbells_read_zero(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    for offset in (0x1000, 0x1004, 0x1008):
        assert controller.bar0_read(offset, 4) == 0


# -- field masking -------------------------------------------------------------


def test_cc_reserved_bits_read_zero(controller: Controller) -> None:
    controller.bar0_write(CC, 0xFFFFFFFE, 4)  # everything but EN
    assert controller.bar0_read(CC, 4) == 0x00FFFFF0
    assert not csts(controller) & CSTS_RDY


def test_aqa_reserved_bits_masked(controller: Controller) -> None:
    controller.bar0_write(AQA, 0xFFFFFFFF, 4)
    assert controller.bar0_read(AQA, 4) == 0x0FFF0FFF


@pytest.mark.parametrize("reg", [ASQ, ACQ])
def test_queue_base_low_bits_masked(controller: Controller, reg: int) -> None:
    controller.bar0_write(reg, 0xFFFF_FFFF_FFFF_FFFF, 8)
    assert controller.bar0_read(reg, 8) == 0xFFFF_FFFF_FFFF_F000
    # Linux writes 64-bit registers as two dwords, low first (lo_hi_writeq).
    controller.bar0_write(reg, 0x1234_5678, 4)
    controller.bar0_write(reg + 4, 0x9, 4)
    assert controller.bar0_read(reg, 8) == 0x9_1234_5000
    assert controller.bar0_read(reg, 4) == 0x1234_5000
    assert controller.bar0_read(reg + 4, 4) == 0x9


def test_csts_is_read_only(bare_host: Host, controller: Controller) -> None:
    assert csts(controller) == 0
    controller.bar0_write(CSTS, 0xFFFFFFFF, 4)
    assert csts(controller) == 0
    bare_host.enable()
    controller.bar0_write(CSTS, 0, 4)
    assert csts(controller) == CSTS_RDY


def test_intms_intmc(controller: Controller) -> None:
    assert controller.bar0_read(INTMS, 4) == 0
    controller.bar0_write(INTMS, 0x5, 4)
    assert controller.bar0_read(INTMS, 4) == 0x5
    assert controller.bar0_read(INTMC, 4) == 0x5
    controller.bar0_write(INTMS, 0x8, 4)
    assert controller.bar0_read(INTMS, 4) == 0xD
    controller.bar0_write(INTMC, 0x1, 4)
    assert controller.bar0_read(INTMS, 4) == 0xC
    assert controller.bar0_read(INTMC, 4) == 0xC


# -- guest oddities: ignored and counted, never exceptions ------------------------


def test_narrow_and_misaligned_writes_are_ignored_and_counted(controller: Controller) -> None:
    before = sum(controller.counters().values())
    controller.bar0_write(AQA, 0x001F001F, 4)
    controller.bar0_write(AQA, 0xFF, 1)
    controller.bar0_write(AQA, 0xFFFF, 2)
    controller.bar0_write(AQA + 2, 0xFFFF, 2)
    controller.bar0_write(AQA + 1, 0xFFFFFFFF, 4)
    controller.bar0_write(AQA, 0xFFFF_FFFF_FFFF_FFFF, 8)  # 8 bytes, not 8-aligned
    assert controller.bar0_read(AQA, 4) == 0x001F001F
    controller.bar0_write(CC, CC_EN, 1)  # a byte write cannot enable
    assert controller.bar0_read(CC, 4) == 0
    assert sum(controller.counters().values()) >= before + 6


# -- CC.EN -----------------------------------------------------------------------


def test_enable_sets_ready_and_disable_clears_it(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    assert csts(controller) == CSTS_RDY
    assert controller.bar0_read(CC, 4) == CC_LINUX | 0b110 << 4 | CC_EN  # CSS 110b: CAP.CSS bit 6
    bare_host.disable()
    assert csts(controller) == 0
    bare_host.enable()
    assert csts(controller) == CSTS_RDY
    assert bare_host.identify_controller().vid != 0


def _bad_enable(controller: Controller, host: Host, cc: int, aqa: int | None, asq: bool, acq: bool) -> None:
    setup_admin_queues(controller, host)
    if aqa is not None:
        controller.bar0_write(AQA, aqa, 4)
    if not asq:
        controller.bar0_write(ASQ, 0, 8)
    if not acq:
        controller.bar0_write(ACQ, 0, 8)
    controller.bar0_write(CC, cc, 4)
    controller.bar0_write(CC, cc | CC_EN, 4)


@pytest.mark.nvme_config(max_queue_entries=64)
@pytest.mark.parametrize(
    ("cc", "aqa", "asq", "acq"),
    [
        pytest.param(CC_LINUX, 0x000F0000, True, True, id="asqs-0"),
        pytest.param(CC_LINUX, 0x0000000F, True, True, id="acqs-0"),
        pytest.param(CC_LINUX, 0x000F0040, True, True, id="asqs-over-mqes"),
        pytest.param(CC_LINUX, 0x0040000F, True, True, id="acqs-over-mqes"),
        pytest.param(CC_LINUX, None, False, True, id="asq-0"),
        pytest.param(CC_LINUX, None, True, False, id="acq-0"),
        pytest.param(CC_LINUX | 5 << 7, None, True, True, id="mps-over-mpsmax"),
        pytest.param(CC_LINUX | 1 << 11, None, True, True, id="ams-not-rr"),
    ],
)
def test_enable_with_bad_config_stays_not_ready(
    bare_host: Host, controller: Controller, cc: int, aqa: int | None, asq: bool, acq: bool
) -> None:
    _bad_enable(controller, bare_host, cc, aqa, asq, acq)
    assert not wait_csts(controller, CSTS_RDY, CSTS_RDY, timeout=0.2)
    assert not csts(controller) & CSTS_CFS
    # A reset and a valid configuration bring it up.
    controller.bar0_write(CC, 0, 4)
    assert wait_csts(controller, CSTS_RDY, 0)
    bare_host.enable()
    assert csts(controller) & CSTS_RDY


@pytest.mark.nvme_config(max_queue_entries=1024)
@pytest.mark.parametrize("which", [ASQ, ACQ])
@pytest.mark.parametrize("fault", ["past-2**64", "not-mps-aligned"])
def test_enable_with_an_admin_queue_base_it_cannot_use(
    bare_host: Host, controller: Controller, which: int, fault: str
) -> None:
    """A guest's bad ASQ/ACQ leaves RDY clear and is counted; the register
    write never raises into the embedder."""
    # 1024 entries: 64 KiB of SQ, 16 KiB of CQ, neither fits below 2**64 - 4 KiB.
    setup_admin_queues(controller, bare_host, entries=1024)
    cc = CC_LINUX
    if fault == "past-2**64":
        controller.bar0_write(which, (1 << 64) - 4096, 8)
    else:
        cc |= 1 << 7  # CC.MPS 1: 8 KiB pages
        base = controller.bar0_read(which, 8)
        controller.bar0_write(which, base | 0x1000 if base % 0x2000 == 0 else base, 8)
    invalid0 = controller.counters().get("ub_cc_enable_invalid", 0)
    controller.bar0_write(CC, cc | CC_EN, 4)
    assert not wait_csts(controller, CSTS_RDY, CSTS_RDY, timeout=0.2)
    assert controller.counters().get("ub_cc_enable_invalid", 0) == invalid0 + 1
    controller.bar0_write(CC, 0, 4)
    bare_host.enable()
    assert csts(controller) & CSTS_RDY


@pytest.mark.nvme_config(max_queue_entries=64)
def test_enable_with_largest_admin_queues(bare_host: Host, controller: Controller) -> None:
    setup_admin_queues(controller, bare_host, entries=64)
    controller.bar0_write(CC, CC_LINUX | CC_EN, 4)
    assert wait_csts(controller, CSTS_RDY, CSTS_RDY)


def test_reset_deletes_io_queues(host: Host, controller: Controller) -> None:
    host.disable()
    host.enable()
    cq = host.alloc(4096)
    # CQ 1 was deleted by the reset: an SQ cannot name it.
    sq = host.admin(build_sqe(0x01, prp1=host.alloc(4096), cdw10=15 << 16 | 1, cdw11=1 << 16 | 1))
    assert (sq.sct, sq.sc) == (1, 0x00)  # Completion Queue Invalid
    created = host.admin(build_sqe(0x05, prp1=cq, cdw10=15 << 16 | 1, cdw11=1))
    assert created.ok


# -- CC.SHN ----------------------------------------------------------------------


@pytest.mark.parametrize("shn", [0b01, 0b10])
def test_shutdown_reports_complete(bare_host: Host, controller: Controller, shn: int) -> None:
    bare_host.enable()
    cc = controller.bar0_read(CC, 4)
    controller.bar0_write(CC, cc | shn << 14, 4)
    assert wait_csts(controller, SHST_MASK, SHST_COMPLETE)
    assert field(controller.bar0_read(CC, 4), 14, 15) == shn
    # A disable afterwards is a reset: RDY and SHST clear.
    controller.bar0_write(CC, 0, 4)
    assert wait_csts(controller, CSTS_RDY | SHST_MASK, 0)
    bare_host.enable()
    assert csts(controller) == CSTS_RDY


def test_host_shutdown_then_disable(bare_host: Host, controller: Controller) -> None:
    bare_host.enable()
    bare_host.shutdown()
    assert csts(controller) & SHST_MASK == SHST_COMPLETE
    bare_host.disable()
    assert csts(controller) == 0


def test_shutdown_while_disabled_does_nothing(controller: Controller) -> None:
    controller.bar0_write(CC, CC_LINUX | 0b01 << 14, 4)
    assert csts(controller) & SHST_MASK == 0


# -- lifecycle -------------------------------------------------------------------


def test_closed_controller_raises_state_error() -> None:
    from nvmefast import StateError

    ctrl = Controller()
    ctrl.close()
    ctrl.close()  # idempotent
    with pytest.raises(StateError):
        ctrl.bar0_read(CAP, 8)
    with pytest.raises(StateError):
        ctrl.bar0_write(CC, 0, 4)
    with pytest.raises(StateError):
        ctrl.counters()
    with pytest.raises(StateError):
        ctrl.pending_vectors()
