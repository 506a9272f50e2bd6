"""The PCI configuration space (nvmefast.pci): IDs, capability chain, BAR
sizing, read-only and RW1C fields, and MSI-X control reaching the core.

Offsets and bits are written from the PCI specs here rather than imported
from nvmefast.pci, so a wrong constant there cannot hide itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvmefast import Controller, ControllerConfig
from nvmefast.errors import ConfigError, RegisterAccessError
from nvmefast.pci import PciConfigSpace


@pytest.fixture(params=[0, 4], ids=["msix_bar=0", "msix_bar=4"])
def ctrl(request: pytest.FixtureRequest) -> Iterator[Controller]:
    with Controller(ControllerConfig(msix_bar=request.param, max_io_queue_pairs=4)) as c:
        yield c


@pytest.fixture
def pci(ctrl: Controller) -> PciConfigSpace:
    return PciConfigSpace(ctrl)


def caps(pci: PciConfigSpace) -> dict[int, int]:
    """Capability ID -> offset, walking from 34h; fails on a loop or a duplicate."""
    found: dict[int, int] = {}
    seen: set[int] = set()
    ptr = pci.read(0x34, 1)
    while ptr:
        assert ptr >= 0x40 and ptr % 4 == 0 and ptr not in seen, hex(ptr)
        seen.add(ptr)
        cap_id = pci.read(ptr, 1)
        assert cap_id not in found, f"capability {cap_id:#x} twice"
        found[cap_id] = ptr
        ptr = pci.read(ptr + 1, 1)
    return found


def test_ids_and_class_code(pci: PciConfigSpace) -> None:
    assert pci.read(0x00, 2) == 0x4E58
    assert pci.read(0x02, 2) == 0x0001
    assert pci.read(0x00, 4) == 0x00014E58
    assert pci.read(0x08, 1) == 2  # revision
    assert pci.read(0x09, 1) == 0x02  # programming interface: NVMe
    assert pci.read(0x0A, 1) == 0x08  # subclass: NVM
    assert pci.read(0x0B, 1) == 0x01  # base class: mass storage
    assert pci.read(0x08, 4) == 0x01080202
    assert pci.read(0x0E, 1) == 0x00  # header type 0
    assert pci.read(0x2C, 2) == 0x4E58
    assert pci.read(0x2E, 2) == 0x0001
    assert pci.read(0x3D, 1) == 1  # INTA#
    assert pci.read(0x06, 2) & (1 << 4)  # capabilities list


def test_capability_chain(pci: PciConfigSpace) -> None:
    found = caps(pci)
    assert set(found) == {0x01, 0x10, 0x11}
    exp = found[0x10]
    assert pci.read(exp + 2, 2) & 0xF == 2  # capability version 2
    assert (pci.read(exp + 2, 2) >> 4) & 0xF == 0  # PCI Express endpoint
    assert pci.read(0x100, 4) == 0  # no extended capabilities


def test_msix_capability_matches_layout(ctrl: Controller, pci: PciConfigSpace) -> None:
    cap = caps(pci)[0x11]
    lay = ctrl.msix_layout
    assert lay is not None
    assert pci.read(cap + 2, 2) & 0x7FF == ctrl.config.vectors - 1
    assert pci.read(cap + 4, 4) == lay.table_offset | lay.bar
    assert pci.read(cap + 8, 4) == lay.pba_offset | lay.bar


def size_bar(pci: PciConfigSpace, offset: int) -> tuple[int, int]:
    """The Linux __pci_read_base dance: save, write ones, read, restore."""
    saved = pci.read(offset, 4)
    pci.write(offset, 0xFFFFFFFF, 4)
    probed = pci.read(offset, 4)
    pci.write(offset, saved, 4)
    return saved, probed


def test_bar0_sizing(ctrl: Controller, pci: PciConfigSpace) -> None:
    _, low = size_bar(pci, 0x10)
    _, high = size_bar(pci, 0x14)
    assert low & 0xF == 0b0100  # memory, 64-bit, not prefetchable
    mask = (high << 32) | (low & ~0xF)
    assert (~mask & (1 << 64) - 1) + 1 == ctrl.bar0_size
    # Writes keep only address bits: low bits and bits below the size drop.
    pci.write(0x10, 0xFEB0_0000 | 0xFFF, 4)
    pci.write(0x14, 0x1, 4)
    assert pci.read(0x10, 4) == 0xFEB0_0000 | 0b0100
    assert pci.bar_address(0) == 0x1_FEB0_0000


def test_msix_bar(ctrl: Controller, pci: PciConfigSpace) -> None:
    msix_bar = ctrl.config.msix_bar
    for bar in range(2, 6):
        offset = 0x10 + 4 * bar
        saved, probed = size_bar(pci, offset)
        if bar == msix_bar:
            assert probed & 0xF == 0  # 32-bit memory
            assert (~probed & 0xFFFFFFF0) + 0x10 == ctrl.msix_bar_size
        else:
            assert (saved, probed) == (0, 0)


def test_msix_bar_1_is_refused() -> None:
    with Controller(ControllerConfig(msix_bar=1)) as c, pytest.raises(ConfigError, match="msix_bar"):
        PciConfigSpace(c)


def test_read_only_fields(pci: PciConfigSpace) -> None:
    for offset in (0x00, 0x08, 0x0C, 0x2C, 0x34, 0x3C):
        before = pci.read(offset, 4)
        pci.write(offset, 0xFFFFFFFF, 4)
        pci.write(offset, 0, 4)
        after = pci.read(offset, 4)
        # Cache Line Size (0Ch) and Interrupt Line (3Ch) are scratch registers.
        keep = 0xFFFFFF00 if offset in (0x0C, 0x3C) else 0xFFFFFFFF
        assert after & keep == before & keep, hex(offset)
    cap = caps(pci)[0x11]
    table = pci.read(cap + 4, 4)
    pci.write(cap + 4, 0, 4)
    assert pci.read(cap + 4, 4) == table
    size = pci.read(cap + 2, 2) & 0x7FF
    pci.write(cap + 2, 0x07FF, 2)
    assert pci.read(cap + 2, 2) & 0x7FF == size


def test_command_and_status(pci: PciConfigSpace) -> None:
    pci.write(0x04, 0xFFFF, 2)
    assert pci.read(0x04, 2) == (1 << 1) | (1 << 2) | (1 << 10)
    pci.set_status_error(1 << 13)  # Received Master Abort
    assert pci.read(0x06, 2) & (1 << 13)
    pci.write(0x06, 0xFFFF & ~(1 << 13), 2)  # other ones clear nothing set
    assert pci.read(0x06, 2) & (1 << 13)
    pci.write(0x06, 1 << 13, 2)
    assert not pci.read(0x06, 2) & (1 << 13)
    assert pci.read(0x06, 2) & (1 << 4)  # capabilities list survives


def test_msix_control_reaches_controller(ctrl: Controller, pci: PciConfigSpace) -> None:
    cap = caps(pci)[0x11]
    assert ctrl.msix_control() == (False, False)
    pci.write(cap + 2, (1 << 15) | (1 << 14), 2)  # Enable + Function Mask
    assert ctrl.msix_control() == (True, True)
    assert ctrl.irq_mode == "msix"
    pci.write(cap + 3, 0x80, 1)  # byte write: unmask the function
    assert ctrl.msix_control() == (True, False)
    assert pci.read(cap + 2, 2) >> 14 == 0b10
    pci.write(cap + 3, 0x00, 1)  # disable: INTx takes over
    assert ctrl.msix_control() == (False, False)
    assert ctrl.irq_mode == "intx"
    pci.write(0x04, 1 << 10, 2)  # INTx Disable: no INTx either
    assert ctrl.irq_mode == "msix" and ctrl.msix_control() == (False, False)
    pci.write(0x04, 0, 2)
    assert ctrl.irq_mode == "intx"


def test_power_state(pci: PciConfigSpace) -> None:
    pm = caps(pci)[0x01]
    pci.write(pm + 4, 0b11, 2)
    assert pci.power_state == 3
    pci.write(pm + 4, 0b01, 2)  # D1 is not supported: write discarded
    assert pci.power_state == 3
    pci.write(pm + 4, 0b00, 2)
    assert pci.power_state == 0


@pytest.mark.parametrize(("offset", "size"), [(0x01, 2), (0x02, 4), (0x00, 8), (0x00, 3), (0x1000, 1), (-1, 1)])
def test_bad_access(pci: PciConfigSpace, offset: int, size: int) -> None:
    with pytest.raises(RegisterAccessError):
        pci.read(offset, size)
    with pytest.raises(RegisterAccessError):
        pci.write(offset, 0, size)


def test_embedder_managed_msix() -> None:
    with Controller(ControllerConfig(msix_bar=None)) as c:
        pci = PciConfigSpace(c)
        assert pci.msix_embedder_managed
        cap = caps(pci)[0x11]
        table = pci.read(cap + 4, 4)
        pba = pci.read(cap + 8, 4)
        assert table & 7 == 0 and pba & 7 == 0  # in BAR0
        _, low = size_bar(pci, 0x10)
        _, high = size_bar(pci, 0x14)
        bar0 = (~((high << 32) | (low & ~0xF)) & (1 << 64) - 1) + 1
        assert table & ~7 >= 0x1000 and (pba & ~7) + 8 <= bar0  # after doorbells, inside BAR0
        assert pci.read(cap + 2, 2) >> 15 == 1  # embedder mode starts enabled
        pci.write(cap + 2, 1 << 14, 2)
        assert c.msix_control() == (False, True)


def test_identify_vid_and_ssvid_match_the_config_space(controller: Controller) -> None:
    from nvmefast.structs import build_identify_controller

    pci = PciConfigSpace(controller)
    data = build_identify_controller(controller.config)
    assert int.from_bytes(data[0:2], "little") == pci.read(0x00, 2)
    assert int.from_bytes(data[2:4], "little") == pci.read(0x2C, 2)
