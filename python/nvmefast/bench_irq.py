"""``nvmefast bench --irq``: what delivering an interrupt costs, by each route.

Answers the qemu-devel thread's first question with numbers from one run:
the cost of one delivery by eventfd (and by a KVM irqfd, where KVM works),
by the KVM_SIGNAL_MSI ioctl, and by a callback into Python (what an
emulator's msix_notify costs when it runs in the interpreter); then the
end-to-end effect of each at QD 1 and QD 64 (the host polls the CQ so that
only the device-side cost differs), and interrupt coalescing: interrupts
per completion at QD 64 and the latency it adds at QD 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from nvmefast import _core
from nvmefast.bench import BenchConfig, BenchSession, Floors, measure_floors, run_info
from nvmefast.controller import Controller
from nvmefast.testing.kvm import KvmVm, kvm_unavailable_reason, msi_address, msi_data

__all__ = ["IrqBench", "format_irq_table", "run_irq_bench"]

# The LAPIC vector the benchmark's MSIs land on (never consumed: the vCPU
# does not run, so IRR just stays set; the injection cost is unchanged).
_LAPIC_VECTOR = 0x41
_GSI = 1


@dataclass
class IrqBench:
    """Everything ``nvmefast bench --irq`` measured."""

    floors: Floors
    kvm: str
    """"available", or why KVM could not be used."""
    delivery_ns: dict[str, float] = field(default_factory=dict)
    """Mean ns per delivery, by route."""
    end_to_end: list[dict[str, Any]] = field(default_factory=list)
    """Per (route, QD): KIOPS, mean latency, deliveries per I/O."""
    coalescing: list[dict[str, Any]] = field(default_factory=list)
    """Per (setting, QD): interrupts per completion, mean latency."""


def _noop(_vector: int) -> None:
    """The cheapest possible Python msix_notify."""


@contextmanager
def _kvm() -> Iterator[tuple[KvmVm | None, str]]:
    reason = kvm_unavailable_reason()
    if reason is not None:
        yield None, reason
        return
    with KvmVm() as vm:
        vm.msi_route(_GSI, _LAPIC_VECTOR)
        yield vm, "available"


def run_irq_bench(seconds: float, progress: Callable[[str], None] | None = None) -> IrqBench:
    """Measure delivery costs, their end-to-end effect, and coalescing."""
    say = progress or (lambda _m: None)
    say("measuring floors")
    floors = measure_floors(64 << 20, min(seconds, 1.0))
    with ExitStack() as stack:
        vm, kvm_state = stack.enter_context(_kvm())
        result = IrqBench(floors, kvm_state)
        iterations = 2_000_000
        plain = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        stack.callback(os.close, plain)
        say("cost of one delivery: eventfd")
        result.delivery_ns["eventfd"] = _core.measure_irq_delivery("eventfd", plain, iterations, seconds / 2)
        routes: dict[str, Callable[[Controller], None]] = {
            "eventfd": lambda c: c.set_vector_eventfd(1, plain),
            "python callback": lambda c: c.set_vector_callback(1, _noop),
        }
        if vm is not None:
            irqfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            stack.callback(os.close, irqfd)
            vm.irqfd(irqfd, _GSI)
            stack.callback(vm.irqfd_detach, irqfd, _GSI)
            address, data = msi_address(), msi_data(_LAPIC_VECTOR)
            say("cost of one delivery: KVM irqfd, KVM_SIGNAL_MSI")
            result.delivery_ns["kvm irqfd"] = _core.measure_irq_delivery("eventfd", irqfd, iterations, seconds / 2)
            result.delivery_ns["KVM_SIGNAL_MSI"] = _core.measure_irq_delivery(
                "kvm_msi", vm.vm_fd, iterations, seconds / 2, address, data
            )

            def kvm_msi(c: Controller) -> None:
                c.engine.set_msix_entry(1, address, data, False)
                c.set_vector_kvm_msi(1, vm.vm_fd)

            routes["kvm irqfd"] = lambda c: c.set_vector_eventfd(1, irqfd)
            routes["KVM_SIGNAL_MSI"] = kvm_msi
        say("cost of one delivery: Python callback")
        result.delivery_ns["python callback"] = _core.measure_irq_delivery("callback", _noop, 200_000, seconds / 2)

        with BenchSession(BenchConfig(backend="null", size_bytes=64 << 20)) as session:
            for qd in (1, 64):
                say(f"end to end, QD{qd}: no interrupts (IEN=0)")
                r = session.drive("poll", qd, seconds)
                result.end_to_end.append(_row("none (IEN=0)", qd, r))
                for name, route in routes.items():
                    say(f"end to end, QD{qd}: {name}")
                    before = session.controller.counters()["interrupts"]
                    r = session.drive("poll", qd, seconds, delivery=route)
                    sent = session.controller.counters()["interrupts"] - before
                    result.end_to_end.append(_row(name, qd, r, sent))
            for setting, thr, time in (("off", 0, 0), ("THR 8, TIME 200 us", 7, 2)):
                session.host.set_features(0x08, thr | time << 8)
                for qd in (1, 4, 16, 64):
                    say(f"coalescing {setting}, QD{qd} (interrupt mode, doorbell per command)")
                    # One doorbell per command, as a guest driver without
                    # batching rings: completions then trickle out in small
                    # batches, which is what coalescing is for.
                    before = session.controller.counters()["interrupts"]
                    r = session.drive("irq", qd, seconds, ring_each=True)
                    sent = session.controller.counters()["interrupts"] - before
                    result.coalescing.append(_row(setting, qd, r, sent))
            session.host.set_features(0x08, 0)
    return result


def _row(name: str, qd: int, r: dict[str, float], deliveries: int | None = None) -> dict[str, Any]:
    ios = max(1.0, r["ios"])
    row: dict[str, Any] = {
        "route": name,
        "qd": qd,
        "kiops": r["iops"] / 1000,
        "mean_us": r["mean_ns"] / 1000,
        "p99_us": r["p99_ns"] / 1000,
        "errors": int(r["errors"]),
    }
    if deliveries is not None:
        row["deliveries_per_io"] = deliveries / ios
    return row


def format_irq_table(b: IrqBench) -> str:
    """The human report."""
    f = b.floors
    out = [
        "nvmefast bench --irq: the cost of an interrupt, by route",
        f"floors: eventfd ping-pong {f.eventfd_rtt_ns / 1000:.2f} us round trip | "
        f"shared-memory ping-pong {f.shm_rtt_ns / 1000:.3f} us",
        f"KVM: {b.kvm}",
        "",
        "one delivery (the worker's notify path, mean):",
    ]
    base = b.delivery_ns.get("eventfd", 0.0) or 1.0
    for name, ns in b.delivery_ns.items():
        out.append(f"  {name:<18}{ns:>10.0f} ns   {ns / base:>5.2f}x eventfd write")
    out += ["", "end to end, null namespace, host polls the CQ, only the delivery route differs:"]
    out.append(f"  {'route':<18}{'QD':>4}{'KIOPS':>10}{'mean us':>10}{'p99 us':>9}{'irq/IO':>8}")
    for r in b.end_to_end:
        per = r.get("deliveries_per_io")
        out.append(
            f"  {r['route']:<18}{r['qd']:>4}{r['kiops']:>10.1f}{r['mean_us']:>10.2f}{r['p99_us']:>9.2f}"
            f"{'' if per is None else f'{per:>8.2f}'}"
        )
    out += ["", "interrupt coalescing (Set Features 08h), interrupt mode, one SQ doorbell per command:"]
    out.append(f"  {'setting':<20}{'QD':>4}{'KIOPS':>10}{'mean us':>10}{'irq/IO':>8}")
    for r in b.coalescing:
        out.append(
            f"  {r['route']:<20}{r['qd']:>4}{r['kiops']:>10.1f}{r['mean_us']:>10.2f}{r['deliveries_per_io']:>8.3f}"
        )
    out.append("  (irq/IO: interrupts the device delivered per completion)")
    return "\n".join(out)


def irq_json(b: IrqBench) -> dict[str, Any]:
    """The same figures as a JSON-able dict."""
    return {"tool": "nvmefast bench --irq", "version": _core.__version__, **asdict(b), **run_info()}
