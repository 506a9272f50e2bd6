"""What zoned namespaces cost conventional ones, in I/O-worker instructions
per command, counted by callgrind (the method of docs/performance.md "What
the hooks cost"): wall-clock runs on a shared machine swing by tens of
percent, instruction counts repeat within a percent.

    python bench/callgrind_zoned_cost.py --op read --backend null
    python bench/callgrind_zoned_cost.py --op write --backend ram [--zoned]
    python bench/callgrind_zoned_cost.py --op append --backend ram   (always zoned)

runs itself twice under ``valgrind --tool=callgrind --separate-threads=yes``
with an interrupt-mode worker and QD 1 4 KiB commands submitted one at a
time by ``nvmefast.testing.Host``, each after the worker went back to
sleep (so every command takes the same cycle: woken by the doorbell, a
pass that serves it, an empty pass, a sleep), and prints the I/O worker
thread's instructions per command: the difference between a long and a
short run divided by the difference in commands, so what is not per
command cancels out. Run it with two builds (before and after a change)
and compare the medians. ``--zoned`` serves the namespace zoned (4 MiB
zones; writes go sequentially, zone after zone) to show what the zone
rules themselves cost.
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


def workload(op: str, backend: str, zoned: bool, commands: int) -> None:
    """Runs the commands (under valgrind)."""
    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    from nvmefast.testing import Host, build_sqe

    kw = {}
    zoned = zoned or op == "append"
    if zoned:
        from nvmefast import ZoneConfig  # type: ignore[attr-defined]

        kw["zones"] = ZoneConfig(size_bytes=4 << 20)
    ns = NamespaceConfig(size_bytes=64 << 20, lba_size=512, backend=backend, **kw)
    cfg = ControllerConfig(namespaces=[ns], polling="interrupt", max_io_queue_pairs=1)
    opcode = {"read": 0x02, "write": 0x01, "append": 0x7D}[op]
    with Controller(cfg) as ctrl, Host(ctrl, memory_bytes=4 << 20) as host:
        host.enable()
        host.create_io_queue_pair(1, entries=16)
        buf = host.alloc(4096)
        lba = 0
        zone_lbas = (4 << 20) // 512

        def one() -> None:
            nonlocal lba
            # A Zone Append names its zone's start; the blocks go to its write pointer.
            slba = lba - lba % zone_lbas if op == "append" else lba
            c = host.io(build_sqe(opcode, nsid=1, prp1=buf, cdw10=slba, cdw12=7))
            assert c.ok, c
            if op != "read":
                lba = (lba + 8) % (64 << 11)

        for _ in range(16):  # warm-up: first-touch paths, lazy state
            one()
        control("--zero")
        for _ in range(commands):
            one()
            # Let the worker go back to sleep before the next doorbell.
            time.sleep(0.005)
        control("--dump")
        print(f"done; {commands} commands", file=sys.stderr)


def control(what: str) -> None:
    """Asks the callgrind running this process to zero or dump its counters."""
    subprocess.run(["callgrind_control", what, str(os.getpid())], check=True, capture_output=True)


def worker_instructions(directory: str) -> int:
    """Instructions between the zero and the dump of the busiest thread
    running the engine's worker loop (the I/O worker)."""
    best = 0
    for path in glob.glob(f"{directory}/cg.*.1-*"):
        ir, worker = 0, False
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("summary:"):
                    ir = int(line.split()[1])
                elif line.startswith(("fn=", "cfn=")) and "worker_loop" in line:
                    worker = True
        if worker:
            best = max(best, ir)
    return best


def one_run(args: argparse.Namespace, commands: int) -> int:
    """I/O worker instructions of one run of ``commands`` commands."""
    out = tempfile.mkdtemp(prefix="nvmefast-callgrind-")
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}/cg.%p",
        sys.executable, os.path.abspath(__file__), "--run", "--op", args.op, "--backend", args.backend,
        "--commands", str(commands), *(["--zoned"] if args.zoned else []),
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0 or not re.search(r"done; \d+ commands", r.stderr):
            sys.exit(f"the run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return worker_instructions(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=["read", "write", "append"], default="read")
    p.add_argument("--backend", choices=["null", "ram"], default="null")
    p.add_argument("--zoned", action="store_true", help="serve the namespace zoned")
    p.add_argument("--commands", type=int, default=1000, help="commands in the long run (the short one does a fifth)")
    p.add_argument("--repeat", type=int, default=3, help="measurements (the median is printed)")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        workload(args.op, args.backend, args.zoned, args.commands)
        return
    short, long_ = args.commands // 5, args.commands
    per: list[float] = []
    for _ in range(args.repeat):
        ir_short, ir_long = one_run(args, short), one_run(args, long_)
        per.append((ir_long - ir_short) / (long_ - short))
        print(f"  I/O worker: {ir_short:,} for {short}, {ir_long:,} for {long_}: {per[-1]:,.1f} per command",
              file=sys.stderr)
    what = f"{args.op} {args.backend}{' zoned' if args.zoned else ''}"
    print(f"{what}: {statistics.median(per):,.1f} instructions per command "
          f"(median of {len(per)}; {min(per):,.1f}..{max(per):,.1f})")


if __name__ == "__main__":
    main()
