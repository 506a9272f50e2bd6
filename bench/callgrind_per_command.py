"""Instructions per command on the I/O worker, counted by callgrind.

Wall-clock runs on a shared machine swing by tens of percent; instruction
counts repeat within a percent, so a change to the hot path that should cost nothing
is shown to cost nothing this way::

    python bench/callgrind_per_command.py --backend null [--sealed]
    python bench/callgrind_per_command.py --backend ram --sealed

runs itself twice under ``valgrind --tool=callgrind --separate-threads=yes``:
an interrupt-mode worker (``polling="interrupt"``), QD 1 4 KiB reads
submitted one at a time by ``nvmefast.testing.Host``, each after the
worker went back to sleep, so it goes through the same cycle for every
command: woken by the doorbell, a pass that serves the command, an empty
pass, a sleep, and prints the I/O worker thread's instructions per command,
counted from after a warm-up to the end of the reads (``callgrind_control
--zero`` and ``--dump``): the difference between a long and a short run,
divided by the difference in commands, so what is not per command cancels
out. ``--pi TYPE`` (``--guard crc64``) does the same on a RAM namespace
of 4096-byte LBAs whose metadata is all PI, first, as ``nvmefast bench
--pi`` does: reads with PRACT and every check the type allows, writes with
PRACT; ``--pi 0`` is the same namespace without metadata (the baseline).
``--zoned`` serves the namespace zoned (4 MiB zones; writes go sequentially,
zone after zone) to show what the zone rules cost, and ``--op append``
(always zoned) runs Zone Appends, each naming its zone::

    python bench/callgrind_per_command.py --backend ram --op write [--zoned]
    python bench/callgrind_per_command.py --backend ram --op append

``--sealed`` maps guest RAM as a memfd
sealed against shrinking (as QEMU does), which the controller trusts;
unsealed it is guarded against truncation (docs/trust.md). The null backend
copies no data, so the per-command overhead is all there is; ram adds one
4 KiB copy.
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
import time


ZONE_BYTES = 4 << 20
"""The zones of ``--zoned``."""
APPEND = 0x7D
"""Zone Append's opcode."""


def workload(backend: str, sealed: bool, commands: int, op_name: str = "read",
             pi: int | None = None, guard: str = "crc16", zoned: bool = False) -> None:
    """Runs the reads (or writes, appends: ``op_name``) under valgrind."""
    from nvmefast import Controller, ControllerConfig, NamespaceConfig, ZoneConfig
    from nvmefast.testing import Host, build_sqe
    from nvmefast.testing import sqe as op

    zoned = zoned or op_name == "append"
    zones = {"zones": ZoneConfig(size_bytes=ZONE_BYTES)} if zoned else {}
    ns = NamespaceConfig(size_bytes=64 << 20, lba_size=512, backend=backend, **zones)  # type: ignore[arg-type]
    cdw12 = 7  # 8 blocks of 512 bytes
    if pi is not None:
        # As `nvmefast bench --pi`: 4096-byte LBAs, metadata all PI, first.
        ms = 16 if guard == "crc64" else 8
        extra = dict(metadata_size=ms, pi_type=pi, pi_first=True, guard=guard) if pi else {}
        ns = NamespaceConfig(size_bytes=64 << 20, lba_size=4096, backend=backend, **extra)  # type: ignore[arg-type]
        pract, checks = 8, 4 | 2 | (1 if pi != 3 else 0)
        cdw12 = 0 if not pi else ((pract | checks) if op_name == "read" else pract) << 26
    cfg = ControllerConfig(namespaces=[ns], polling="interrupt", max_io_queue_pairs=1)
    with Controller(cfg) as ctrl:
        try:
            host = Host(ctrl, memory_bytes=4 << 20, sealed_memory=sealed)
        except TypeError:  # a build from before the guard: nothing to seal for
            host = Host(ctrl, memory_bytes=4 << 20)
        with host:
            host.enable()
            host.create_io_queue_pair(1, entries=16)
            buf = host.alloc(4096)
            opcode = {"read": op.IO_READ, "write": op.IO_WRITE, "append": APPEND}[op_name]
            if pi:  # real PI to check (a never-written block's escapes every check)
                assert host.io(build_sqe(op.IO_WRITE, nsid=1, prp1=buf, cdw12=8 << 26)).ok
            zone_lbas, nlb, lba = ZONE_BYTES // 512, (cdw12 & 0xFFFF) + 1, 0

            def sqe() -> bytes:
                """The next command: the same block, or on a zoned namespace
                the next blocks (a Zone Append names their zone's start)."""
                nonlocal lba
                slba = lba - lba % zone_lbas if op_name == "append" else lba
                if zoned and op_name != "read":
                    lba = (lba + nlb) % ((64 << 20) // 512)
                return build_sqe(opcode, nsid=1, prp1=buf, cdw10=slba, cdw12=cdw12)

            for _ in range(16):  # warm-up: first-touch paths, lazy state
                assert host.io(sqe()).ok
            # Count from here: start-up and queue creation are not commands.
            control("--zero")
            for _ in range(commands):
                c = host.io(sqe())
                assert c.ok, c
                # Let the worker go back to sleep before the next doorbell:
                # every command then takes it through the same cycle.
                time.sleep(0.005)
            control("--dump")
            kinds = [r.kind for r in ctrl.dma_regions()] if hasattr(ctrl, "dma_regions") else "n/a"
            print(f"regions {kinds}; {commands} commands", file=sys.stderr)


def control(what: str) -> None:
    """Asks the callgrind running this process to zero or dump its counters."""
    subprocess.run(["callgrind_control", what, str(os.getpid())], check=True, capture_output=True)


def worker_instructions(directory: str) -> int:
    """Instructions between the zero and the dump (the dump's part) of the
    busiest thread that runs the engine's worker loop (worker 0 serves the
    admin queue; the I/O worker is the busy one)."""
    best = 0
    for path in glob.glob(f"{directory}/cg.*.1-*"):
        ir, worker = 0, False
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("summary:"):
                    ir = int(line.split()[1])
                elif line.startswith(("fn=", "cfn=")) and "nvmefast::engine::worker::" in line:
                    worker = True
        if worker:
            best = max(best, ir)
    return best


def one_run(args: argparse.Namespace, commands: int) -> tuple[int, str]:
    """(I/O worker instructions, the regions' kinds) of one run of ``commands`` reads."""
    out = tempfile.mkdtemp(prefix="nvmefast-callgrind-")
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", "--compress-strings=no", f"--callgrind-out-file={out}/cg.%p",
        sys.executable, os.path.abspath(__file__), "--run", "--backend", args.backend,
        "--commands", str(commands), "--op", args.op, *(["--sealed"] if args.sealed else []),
        *(["--pi", str(args.pi), "--guard", args.guard] if args.pi is not None else []),
        *(["--zoned"] if args.zoned else []),
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        m = re.search(r"regions (.*); \d+ commands", r.stderr)
        if r.returncode != 0 or m is None:
            sys.exit(f"the run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return worker_instructions(out), m.group(1)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["null", "ram"], default="null")
    p.add_argument("--sealed", action="store_true", help="guest RAM is a sealed memfd (trusted, unguarded)")
    p.add_argument("--op", choices=["read", "write", "append"], default="read",
                   help="4 KiB reads (default), writes or Zone Appends (zoned)")
    p.add_argument("--zoned", action="store_true", help="serve the namespace zoned (4 MiB zones)")
    p.add_argument("--commands", type=int, default=2000, help="reads in the long run (the short one does a fifth)")
    p.add_argument("--pi", type=int, choices=[0, 1, 2, 3], default=None,
                   help="4096-byte LBAs, metadata all PI of this type (0: no metadata), PRACT + checks")
    p.add_argument("--guard", choices=["crc16", "crc64"], default="crc16", help="the guard with --pi")
    p.add_argument("--repeat", type=int, default=5, help="measurements (the median is printed)")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        if args.pi and (args.zoned or args.op == "append"):
            sys.exit("--pi and zones do not go together (a zoned namespace has no metadata)")
        workload(args.backend, args.sealed, args.commands, args.op, args.pi, args.guard, args.zoned)
        return
    short, long_ = args.commands // 5, args.commands
    per: list[float] = []
    for _ in range(args.repeat):
        ir_short, _ = one_run(args, short)
        ir_long, regions = one_run(args, long_)
        per.append((ir_long - ir_short) / (long_ - short))
        print(f"  I/O worker: {ir_short:,} for {short} reads, {ir_long:,} for {long_}: {per[-1]:,.1f} per command",
              file=sys.stderr)
    # A run now and then has a pass more (a wake-up the scheduler made):
    # the median of a few runs is the steady figure.
    pi = "" if args.pi is None else f" pi {args.pi} {args.guard}"
    pi += " zoned" if args.zoned or args.op == "append" else ""
    print(f"{args.backend}{pi} {args.op} regions {regions}: {statistics.median(per):,.1f} instructions per command "
          f"(median of {len(per)}; {min(per):,.1f}..{max(per):,.1f})")

if __name__ == "__main__":
    main()
