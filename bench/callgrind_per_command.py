"""Instructions per command on the I/O worker, counted by callgrind.

Wall-clock runs on a shared machine swing by tens of percent; instruction
counts repeat within a fraction of one, so a change to the hot path that
should cost nothing is shown to cost nothing this way::

    python bench/callgrind_per_command.py --backend null [--sealed]
    python bench/callgrind_per_command.py --backend ram --seconds 20

runs itself under ``valgrind --tool=callgrind --separate-threads=yes``: an
interrupt-mode worker (``polling="interrupt"``), QD 1 4 KiB reads from the
Rust host loop (``_core.bench_io``, completions by eventfd), and prints the
I/O worker thread's instructions divided by the commands it completed (the
fewest of ``--repeat`` runs: idle passes vary with thread interleaving).
``--sealed`` maps guest RAM as a memfd sealed against shrinking (as QEMU
does), which the controller trusts; unsealed it is guarded against
truncation (docs/trust.md). The null backend copies no data, so the
per-command overhead is all there is; ram adds one 4 KiB copy.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile


def workload(backend: str, sealed: bool, seconds: float) -> int:
    """Runs the reads (under valgrind); returns how many completed."""
    from nvmefast import Controller, ControllerConfig, NamespaceConfig, _core
    from nvmefast.testing import Host

    ns = NamespaceConfig(size_bytes=64 << 20, lba_size=512, backend=backend)
    cfg = ControllerConfig(namespaces=[ns], polling="interrupt", max_io_queue_pairs=1)
    with Controller(cfg) as ctrl:
        try:
            host = Host(ctrl, memory_bytes=4 << 20, sealed_memory=sealed)
        except TypeError:  # a build from before the guard: nothing to seal for
            host = Host(ctrl, memory_bytes=4 << 20)
        with host:
            host.enable()
            qp = host.create_io_queue_pair(1, entries=16, vector=1, irq=True)
            buf = host.alloc(4096)
            region = host.mem.regions[0]
            kinds = [getattr(r, "kind", "n/a") for r in getattr(ctrl, "dma_regions", lambda: [])()]
            r = _core.bench_io(
                ctrl.engine, mem_fd=region.fd, mem_iova=region.iova, mem_size=region.size, sqid=1,
                sq_iova=qp.sq_iova, cq_iova=qp.cq_iova, qsize=16, buf_iova=buf, nsid=1,
                ns_lbas=ns.lbas, lba_size=512, block_size=4096, qd=1, seconds=seconds, mode="irq",
                eventfd=host.vector_fd(1),
            )
            print(f"regions {kinds}; {int(r['ios'])} commands, {int(r['errors'])} errors", file=sys.stderr)
            return int(r["ios"])


def totals(path: str) -> tuple[int, bool]:
    """(instructions, runs the engine's worker loop) of one thread's callgrind file."""
    ir = 0
    worker = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                ir = int(line.split()[1])
            elif "worker_loop" in line and line.startswith(("fn=", "cfn=")):
                worker = True
    return ir, worker


def one_run(args: argparse.Namespace) -> tuple[int, int, str]:
    """(commands, I/O worker instructions, the regions' kinds) of one run under callgrind."""
    out = tempfile.mkdtemp(prefix="nvmefast-callgrind-")
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}/cg.%p",
        sys.executable, os.path.abspath(__file__), "--run", "--backend", args.backend,
        "--seconds", str(args.seconds), *(["--sealed"] if args.sealed else []),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    m = re.search(r"regions (.*); (\d+) commands, (\d+) errors", r.stderr)
    if r.returncode != 0 or m is None or m.group(3) != "0":
        sys.exit(f"the run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    threads = [totals(p) for p in sorted(glob.glob(f"{out}/cg.*"))]
    shutil.rmtree(out, ignore_errors=True)
    # Worker 0 serves the admin queue; the I/O worker is the busy one.
    return int(m.group(2)), max(ir for ir, worker in threads if worker), m.group(1)


def measure(args: argparse.Namespace) -> None:
    per: list[float] = []
    for _ in range(args.repeat):
        commands, ir, regions = one_run(args)
        per.append(ir / commands)
        print(f"  {commands} commands, I/O worker {ir:,} instructions: {ir / commands:,.0f} per command",
              file=sys.stderr)
    # A run's count includes the worker's idle passes, which depend on how
    # threads interleave: the fewest per command is the steadiest figure.
    print(f"{args.backend} regions {regions}: {min(per):,.0f} instructions per command "
          f"(min of {len(per)}; median {statistics.median(per):,.0f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["null", "ram"], default="null")
    p.add_argument("--sealed", action="store_true", help="guest RAM is a sealed memfd (trusted, unguarded)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the host submits (under valgrind)")
    p.add_argument("--repeat", type=int, default=5, help="runs (the minimum per command is reported)")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        workload(args.backend, args.sealed, args.seconds)
    else:
        measure(args)


if __name__ == "__main__":
    main()
