"""A minimal KVM VM that proves irqfd delivery: eventfd in, LAPIC IRR bit out.

A VMM attaches a vector's eventfd to KVM with ``KVM_IRQFD``; KVM then turns
every eventfd write into an MSI injected straight into a vCPU's local APIC,
without the VMM's userspace in the path. nvmefast's core only writes
eventfds (DESIGN.md, "Interrupts"), so this module lets a test hand the core
a real irqfd and look at the result where a guest would: the Interrupt
Request Register of the vCPU's in-kernel LAPIC.

The VM has an in-kernel irqchip and one vCPU that never runs: it has no
memory and no registers set up. An interrupt that nobody acknowledges stays
in the IRR, which is exactly what a test wants to observe. x86 only (the
LAPIC register page layout is x86's).

Layouts and numbers follow ``include/uapi/linux/kvm.h``,
``include/uapi/asm-generic/ioctl.h`` and ``arch/x86/include/uapi/asm/kvm.h``;
``tests/test_kvm_irqfd.py`` checks every ioctl number against the header's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import time
from types import TracebackType
from typing import Final

from nvmefast.errors import NvmeFastError, StateError

__all__ = [
    "KVM_API_VERSION",
    "KvmError",
    "KvmVm",
    "kvm_unavailable_reason",
    "msi_address",
    "msi_data",
]

KVM_DEVICE: Final = "/dev/kvm"
KVM_API_VERSION: Final = 12
"""The only KVM API version there has ever been (since Linux 2.6.22)."""

# -- ioctl encoding (include/uapi/asm-generic/ioctl.h, which x86 uses) -------

_IOC_NRBITS: Final = 8
_IOC_TYPEBITS: Final = 8
_IOC_SIZEBITS: Final = 14
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT: Final = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT: Final = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE: Final = 0
_IOC_WRITE: Final = 1
_IOC_READ: Final = 2

KVMIO: Final = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return direction << _IOC_DIRSHIFT | size << _IOC_SIZESHIFT | KVMIO << _IOC_TYPESHIFT | nr << _IOC_NRSHIFT


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _iow(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _ior(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def _iowr(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


# -- wire structs ------------------------------------------------------------
# Field annotations are for mypy only: ctypes takes the layout from _fields_.


class KvmIrqfd(ctypes.Structure):
    """``struct kvm_irqfd`` (KVM_IRQFD)."""

    _fields_ = [("fd", ctypes.c_uint32), ("gsi", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("resamplefd", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 16)]
    fd: int
    gsi: int
    flags: int
    resamplefd: int


class KvmMsi(ctypes.Structure):
    """``struct kvm_msi`` (KVM_SIGNAL_MSI)."""

    _fields_ = [("address_lo", ctypes.c_uint32), ("address_hi", ctypes.c_uint32), ("data", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("devid", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 12)]
    address_lo: int
    address_hi: int
    data: int
    flags: int
    devid: int


class KvmIrqRoutingMsi(ctypes.Structure):
    """``struct kvm_irq_routing_msi``: the ``u.msi`` member of a routing entry."""

    _fields_ = [("address_lo", ctypes.c_uint32), ("address_hi", ctypes.c_uint32), ("data", ctypes.c_uint32),
                ("devid", ctypes.c_uint32)]
    address_lo: int
    address_hi: int
    data: int
    devid: int


class _KvmIrqRoutingUnion(ctypes.Union):
    # The kernel's union has irqchip/s390/hv/xen members too; pad[8] fixes its size.
    _fields_ = [("msi", KvmIrqRoutingMsi), ("pad", ctypes.c_uint32 * 8)]
    msi: KvmIrqRoutingMsi


class KvmIrqRoutingEntry(ctypes.Structure):
    """``struct kvm_irq_routing_entry``."""

    _fields_ = [("gsi", ctypes.c_uint32), ("type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("u", _KvmIrqRoutingUnion)]
    gsi: int
    type: int
    flags: int
    u: _KvmIrqRoutingUnion


class KvmIrqRouting(ctypes.Structure):
    """``struct kvm_irq_routing`` without its flexible ``entries[]`` (they follow it)."""

    _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32)]
    nr: int
    flags: int


class KvmLapicState(ctypes.Structure):
    """``struct kvm_lapic_state``: the 1 KiB xAPIC register page.

    The header declares ``char regs[1024]``; every APIC register is a 32-bit
    word at a 16-byte stride, so viewing the page as u32s (x86 is little
    endian) lets ``regs[offset // 4]`` read the register at ``offset``.
    """

    _fields_ = [("regs", ctypes.c_uint32 * 256)]
    regs: ctypes.Array[ctypes.c_uint32]


class KvmMsrEntry(ctypes.Structure):
    """``struct kvm_msr_entry``."""

    _fields_ = [("index", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("data", ctypes.c_uint64)]
    index: int
    data: int


class KvmMsrs(ctypes.Structure):
    """``struct kvm_msrs`` without its flexible ``entries[]`` (sizes the ioctl number)."""

    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _KvmMsrsOne(ctypes.Structure):
    # kvm_msrs with exactly one entry: all we ever read or write is IA32_APIC_BASE.
    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("entry", KvmMsrEntry)]
    nmsrs: int
    entry: KvmMsrEntry


def _check_size(struct: type[ctypes.Structure] | type[ctypes.Union], size: int) -> None:
    # The Python twin of the kernel's BUILD_BUG_ON: a wrong layout would make
    # KVM read garbage (or reject the ioctl by size), so fail at import.
    if ctypes.sizeof(struct) != size:
        raise ImportError(f"{struct.__name__} is {ctypes.sizeof(struct)} bytes, linux/kvm.h says {size}")


_SIZES: Final[list[tuple[type[ctypes.Structure] | type[ctypes.Union], int]]] = [
    (KvmIrqfd, 32), (KvmMsi, 32), (KvmIrqRoutingMsi, 16), (_KvmIrqRoutingUnion, 32),
    (KvmIrqRoutingEntry, 48), (KvmIrqRouting, 8), (KvmLapicState, 1024), (KvmMsrEntry, 16),
    (KvmMsrs, 8), (_KvmMsrsOne, 24),
]
for _struct, _size in _SIZES:
    _check_size(_struct, _size)

# -- ioctl numbers and constants (include/uapi/linux/kvm.h) --------------------

KVM_GET_API_VERSION: Final = _io(0x00)
KVM_CREATE_VM: Final = _io(0x01)
KVM_CHECK_EXTENSION: Final = _io(0x03)
KVM_CREATE_VCPU: Final = _io(0x41)
KVM_CREATE_IRQCHIP: Final = _io(0x60)
KVM_SET_GSI_ROUTING: Final = _iow(0x6A, KvmIrqRouting)
KVM_IRQFD: Final = _iow(0x76, KvmIrqfd)
KVM_GET_MSRS: Final = _iowr(0x88, KvmMsrs)
KVM_SET_MSRS: Final = _iow(0x89, KvmMsrs)
KVM_GET_LAPIC: Final = _ior(0x8E, KvmLapicState)
KVM_SET_LAPIC: Final = _iow(0x8F, KvmLapicState)
KVM_SIGNAL_MSI: Final = _iow(0xA5, KvmMsi)

KVM_CAP_IRQCHIP: Final = 0
KVM_CAP_IRQ_ROUTING: Final = 25
KVM_CAP_IRQFD: Final = 32
KVM_CAP_SIGNAL_MSI: Final = 77

KVM_IRQ_ROUTING_MSI: Final = 2
KVM_IRQFD_FLAG_DEASSIGN: Final = 1 << 0

# x86 local APIC (Intel SDM vol. 3, ch. 11) and MSI format (§11.11).
MSR_IA32_APICBASE: Final = 0x1B
APICBASE_ENABLE: Final = 1 << 11  # APIC global (hardware) enable
APIC_ID: Final = 0x20
APIC_SPIV: Final = 0xF0
APIC_SPIV_APIC_ENABLED: Final = 1 << 8  # APIC software enable
APIC_IRR: Final = 0x200
SPURIOUS_VECTOR: Final = 0xFF
MSI_ADDRESS_BASE: Final = 0xFEE0_0000

_REQUIRED_CAPS: Final = [
    (KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"),
    (KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"),
    (KVM_CAP_IRQFD, "KVM_CAP_IRQFD"),
    (KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"),
]


def msi_address(dest_apic_id: int = 0) -> int:
    """MSI address for physical destination ``dest_apic_id`` (RH=0, DM=0: no redirection)."""
    if not 0 <= dest_apic_id <= 0xFF:
        raise ValueError(f"xAPIC destination ID must be 0..255, got {dest_apic_id}")
    return MSI_ADDRESS_BASE | dest_apic_id << 12


def msi_data(vector: int) -> int:
    """MSI data for ``vector`` with fixed delivery, edge trigger."""
    # Vectors 0-15 are reserved: the LAPIC flags them as illegal in ESR instead
    # of setting IRR, so a route to one could never be observed.
    if not 16 <= vector <= 0xFF:
        raise ValueError(f"LAPIC vector must be 16..255, got {vector}")
    return vector


class KvmError(NvmeFastError):
    """A KVM ioctl (or opening /dev/kvm) failed; ``errno`` is None for a bad result value."""

    def __init__(self, what: str, err: int | None, hint: str = "") -> None:
        self.what = what
        self.errno = err
        text = what
        if err is not None:
            text = f"{what} failed: {errno.errorcode.get(err, str(err))} ({os.strerror(err)})"
        super().__init__(f"{text}; {hint}" if hint else text)


def _ioctl(fd: int, name: str, request: int, arg: int | ctypes.Structure | bytearray = 0) -> int:
    # A mutable buffer makes fcntl.ioctl pass it to the kernel in place and
    # return the ioctl's int result (an immutable one would return a copy).
    try:
        return int(fcntl.ioctl(fd, request, arg))
    except OSError as exc:
        raise KvmError(name, exc.errno) from exc


class KvmVm:
    """A VM with an in-kernel irqchip and vCPU 0, whose LAPIC collects injected MSIs.

    Route a GSI to a LAPIC vector with :meth:`msi_route`, attach an eventfd
    to that GSI with :meth:`irqfd`, and every write to the eventfd sets the
    vector's bit in :meth:`irr`. The vCPU never runs, so bits stay set until
    :meth:`clear_irr`. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str = KVM_DEVICE) -> None:
        self._kvm = self._vm = self._vcpu = -1
        self._routes: dict[int, tuple[int, int]] = {}
        self._last_msi: tuple[int, int, KvmMsi] = (-1, -1, KvmMsi())
        try:
            self._kvm = _open_kvm(path)
            version = _ioctl(self._kvm, "KVM_GET_API_VERSION", KVM_GET_API_VERSION)
            if version != KVM_API_VERSION:
                raise KvmError(f"{path}: KVM API version {version}, expected {KVM_API_VERSION}", None)
            for cap, name in _REQUIRED_CAPS:
                if _ioctl(self._kvm, "KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, cap) <= 0:
                    raise KvmError(f"this kernel's KVM lacks {name}", None)
            self._vm = _ioctl(self._kvm, "KVM_CREATE_VM", KVM_CREATE_VM, 0)
            # The irqchip must exist before any vCPU, or the vCPU gets no in-kernel LAPIC.
            _ioctl(self._vm, "KVM_CREATE_IRQCHIP", KVM_CREATE_IRQCHIP)
            self._vcpu = _ioctl(self._vm, "KVM_CREATE_VCPU", KVM_CREATE_VCPU, 0)
            self._enable_apic()
        except BaseException:
            self.close()
            raise

    def _enable_apic(self) -> None:
        # KVM drops a fixed interrupt aimed at a LAPIC that is not both
        # hardware-enabled (IA32_APIC_BASE bit 11, also what puts it in the
        # destination map) and software-enabled (SPIV bit 8). A reset vCPU is
        # hardware-enabled but software-disabled, as on real hardware.
        msrs = _KvmMsrsOne(nmsrs=1)
        msrs.entry.index = MSR_IA32_APICBASE
        if _ioctl(self._vcpu, "KVM_GET_MSRS", KVM_GET_MSRS, msrs) != 1:
            raise KvmError("KVM_GET_MSRS could not read IA32_APIC_BASE", None)
        if not msrs.entry.data & APICBASE_ENABLE:
            msrs.entry.data |= APICBASE_ENABLE
            if _ioctl(self._vcpu, "KVM_SET_MSRS", KVM_SET_MSRS, msrs) != 1:
                raise KvmError("KVM_SET_MSRS refused to hardware-enable the LAPIC", None)
        state = self._get_lapic()
        spiv = int(state.regs[APIC_SPIV // 4])
        state.regs[APIC_SPIV // 4] = (spiv & ~0xFF) | APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR
        self._set_lapic(state)
        self.apic_id: int = int(self._get_lapic().regs[APIC_ID // 4]) >> 24
        """The vCPU's xAPIC ID: the destination an MSI must name to reach it."""

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> KvmVm:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the vCPU, VM and /dev/kvm fds (idempotent); KVM then drops routes and irqfds."""
        # vCPU first: it holds a reference to the VM, which is destroyed
        # (irqfds released) only when the last reference goes.
        for name in ("_vcpu", "_vm", "_kvm"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                os.close(fd)

    @property
    def vm_fd(self) -> int:
        """The VM fd (for ``Controller.set_vector_kvm_msi``)."""
        return self._vm

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._vcpu < 0

    def _live(self) -> None:
        if self.closed:
            raise StateError("the KvmVm is closed; create a new one")

    # -- interrupt routing ---------------------------------------------------------

    def msi_route(self, gsi: int, vector: int, dest_apic_id: int | None = None) -> None:
        """Route ``gsi`` as an edge-triggered, fixed-delivery MSI to ``vector``.

        The destination is physical APIC ID ``dest_apic_id`` (default: this
        VM's vCPU). Routing a GSI again replaces its route; routes of other
        GSIs stay.
        """
        self._live()
        dest = self.apic_id if dest_apic_id is None else dest_apic_id
        route = (msi_address(dest), msi_data(vector))
        previous = dict(self._routes)
        self._routes[gsi] = route
        try:
            self._set_routing()
        except BaseException:
            self._routes = previous
            raise

    def _set_routing(self) -> None:
        # KVM_SET_GSI_ROUTING replaces the VM's whole table (including the
        # default PIC/IOAPIC pin routes, which this VM never uses), so it
        # always carries every route we own.
        header = KvmIrqRouting(nr=len(self._routes), flags=0)
        buf = bytearray(header)
        for gsi, (address, data) in sorted(self._routes.items()):
            entry = KvmIrqRoutingEntry(gsi=gsi, type=KVM_IRQ_ROUTING_MSI, flags=0)
            entry.u.msi.address_lo = address & 0xFFFF_FFFF
            entry.u.msi.address_hi = address >> 32
            entry.u.msi.data = data
            buf += bytes(entry)
        _ioctl(self._vm, "KVM_SET_GSI_ROUTING", KVM_SET_GSI_ROUTING, buf)

    def irqfd(self, eventfd: int, gsi: int) -> None:
        """Attach ``eventfd`` to ``gsi``: each write to it injects the GSI's route."""
        self._live()
        _ioctl(self._vm, "KVM_IRQFD", KVM_IRQFD, KvmIrqfd(fd=eventfd, gsi=gsi, flags=0))

    def irqfd_detach(self, eventfd: int, gsi: int) -> None:
        """Detach ``eventfd`` from ``gsi`` (KVM_IRQFD_FLAG_DEASSIGN)."""
        self._live()
        arg = KvmIrqfd(fd=eventfd, gsi=gsi, flags=KVM_IRQFD_FLAG_DEASSIGN)
        _ioctl(self._vm, "KVM_IRQFD (deassign)", KVM_IRQFD, arg)

    def signal_msi(self, address: int, data: int) -> int:
        """Inject one MSI by ioctl; returns how many LAPICs accepted it (> 0: delivered)."""
        # This is the call benchmarks time, so it checks _live() only on
        # failure (fcntl rejects a closed VM's fd of -1 with ValueError) and
        # reuses the last message: building a KvmMsi costs more than the
        # ioctl itself. A built KvmMsi is never mutated, so threads may share it.
        last_address, last_data, msi = self._last_msi
        if address != last_address or data != last_data:
            msi = KvmMsi(address_lo=address & 0xFFFF_FFFF, address_hi=address >> 32, data=data)
            self._last_msi = (address, data, msi)
        try:
            return int(fcntl.ioctl(self._vm, KVM_SIGNAL_MSI, msi))
        except ValueError:
            self._live()
            raise
        except OSError as exc:
            raise KvmError("KVM_SIGNAL_MSI", exc.errno) from exc

    # -- the LAPIC ---------------------------------------------------------------------

    def _get_lapic(self) -> KvmLapicState:
        # KVM_GET_LAPIC first syncs posted interrupts (APICv PIR) into IRR, so
        # the IRR read here is complete with or without APICv.
        state = KvmLapicState()
        _ioctl(self._vcpu, "KVM_GET_LAPIC", KVM_GET_LAPIC, state)
        return state

    def _set_lapic(self, state: KvmLapicState) -> None:
        _ioctl(self._vcpu, "KVM_SET_LAPIC", KVM_SET_LAPIC, state)

    def irr(self, vector: int) -> bool:
        """True if ``vector``'s bit is set in the LAPIC Interrupt Request Register."""
        self._live()
        if not 0 <= vector <= 0xFF:
            raise ValueError(f"LAPIC vector must be 0..255, got {vector}")
        word = int(self._get_lapic().regs[(APIC_IRR + (vector // 32) * 0x10) // 4])
        return bool(word >> (vector % 32) & 1)

    def irr_vectors(self) -> set[int]:
        """Every vector whose IRR bit is set."""
        self._live()
        state = self._get_lapic()
        out: set[int] = set()
        for i in range(8):
            word = int(state.regs[(APIC_IRR + i * 0x10) // 4])
            out.update(i * 32 + bit for bit in range(32) if word >> bit & 1)
        return out

    def clear_irr(self) -> None:
        """Zero the IRR so the next delivery can be observed.

        Read-modify-write of the whole LAPIC: an MSI injected between the get
        and the set is lost, so clear only while nothing is being delivered.
        """
        self._live()
        state = self._get_lapic()
        for i in range(8):
            state.regs[(APIC_IRR + i * 0x10) // 4] = 0
        self._set_lapic(state)

    def wait_irr(self, vector: int, timeout: float = 1.0) -> bool:
        """Poll until ``vector``'s IRR bit is set; False if ``timeout`` seconds pass first.

        irqfd injection may run from a kernel work item rather than inside
        the eventfd write, so a test must poll rather than look once.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.irr(vector):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)


def _open_kvm(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        hints = {
            errno.ENOENT: "the kvm module is not loaded, or the device is not passed into this container",
            errno.EACCES: "run as root or as a member of the group that owns it (usually 'kvm')",
            errno.EPERM: "a security policy (seccomp, SELinux, device cgroup) forbids it",
            errno.ENXIO: "kvm is loaded but found no VT-x/AMD-V (disabled, or nesting off)",
        }
        raise KvmError(f"opening {path}", exc.errno, hints.get(exc.errno or 0, "")) from exc


def kvm_unavailable_reason(path: str = KVM_DEVICE) -> str | None:
    """Why a :class:`KvmVm` cannot be used on this machine, or None if it can.

    Builds a throwaway VM and routes one MSI, so the answer names the exact
    failing step (with its errno), fit for ``pytest.skip(reason)``.
    """
    machine = platform.machine()
    if machine not in ("x86_64", "i386", "i686"):
        return f"KvmVm reads an x86 LAPIC; this machine is {machine}"
    try:
        with KvmVm(path) as vm:
            vm.msi_route(0, 0x30)
    except KvmError as exc:
        return str(exc)
    return None
