"""The ``nvmefast`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nvmefast import __version__
from nvmefast.cli_ctl import ctl_parser, run_ctl
from nvmefast.cli_terms import BENCH_TERMS, SERVE_TERMS, Terms, in_cli_terms, namespace_terms
from nvmefast.config import BACKENDS, CACHE_MODES, IO_PATHS, LBA_SIZES, NamespaceConfig, ZoneConfig
from nvmefast.errors import ConfigError, NvmeFastError
from nvmefast.faults import FaultRule, FaultRuleError
from nvmefast.lba_format import NamespaceFormat
from nvmefast.namespace_spec import USAGE, NamespaceSpec, options_help, parse_namespace, parse_size

__all__ = ["NamespaceSpec", "describe_namespace", "main", "parse_size"]

log = logging.getLogger("nvmefast.cli")
_TERMS: Mapping[str, Terms] = {"serve": SERVE_TERMS, "bench": BENCH_TERMS}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: queue depths must be positive integers")
    return vals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvmefast", description="An emulated NVMe controller with a Rust hot path.")
    p.add_argument("--version", action="version", version=f"nvmefast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "bench",
        help="measure KIOPS and latency at several queue depths",
        description="4 KiB random reads against an in-memory namespace (or, with --backend file, random "
        "reads and writes on a file beside fio on the same file), driven by a Rust host thread; "
        "prints KIOPS, mean/p50/p99 latency and the floors measured in the same run.",
    )
    b.add_argument("--qd", type=_int_list, default=(1, 4, 16, 64), help="queue depths, comma separated (default 1,4,16,64)")
    b.add_argument("--seconds", type=float, default=2.0, help="seconds per point (default 2)")
    b.add_argument(
        "--mode",
        choices=("irq", "poll", "both"),
        help="completions by interrupt (eventfd), by polling the CQ, or both (default: both; irq with --backend file)",
    )
    b.add_argument(
        "--backend", choices=tuple(dict.fromkeys((*BACKENDS, "file"))), default="ram", help="namespace backend (default ram)"
    )
    _bench_file_arguments(b)
    z = b.add_argument_group("--zoned")
    z.add_argument(
        "--zoned",
        action="store_true",
        help="sequential writes and Zone Appends on a zoned RAM namespace beside sequential writes on a "
        "conventional one, and the zone Finish/Reset rates",
    )
    z.add_argument("--zone-size", type=parse_size, default=16 << 20, help="zone size with --zoned (default 16M)")
    b.add_argument("--size", type=parse_size, default=1 << 30, help="namespace size, e.g. 256M or 1G (default 1G)")
    b.add_argument("--lba-size", type=int, choices=LBA_SIZES, default=512, help="LBA size (default 512)")
    b.add_argument("--poll-us", type=int, default=50, help="worker polling window after work, in us (default 50)")
    b.add_argument(
        "--doorbell",
        choices=("mmio", "shadow", "page", "ioeventfd", "trap"),
        help="how the host rings doorbells: MMIO writes, shadow doorbells with EventIdx, "
        "the shared doorbell page (workers poll), or page + ioeventfd (default mmio); with --vfio-user: "
        "page, shadow or trap (a REGION_WRITE message each) (default: all three)",
    )
    b.add_argument(
        "--iothreads",
        type=int,
        default=1,
        help="I/O worker threads; more than one runs a queue pair and a host thread per iothread (default 1)",
    )
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    b.add_argument(
        "--plot",
        metavar="PATH",
        help="also draw KIOPS and mean latency against QD, one line per mode, the floors as reference "
        "lines, to PATH (.png, .svg or .pdf; needs matplotlib: pip install 'nvmefast[plot]')",
    )
    b.add_argument(
        "--fault",
        metavar="RULE",
        action="append",
        type=_fault_rule,
        help="install a fault rule on the benchmarked controller (docs/faults.md); "
        "'nsid=99 -> cfs' never fires and measures what an armed rule table costs",
    )
    v = b.add_argument_group("--vfio-user")
    v.add_argument(
        "--vfio-user",
        nargs="?",
        const="",
        metavar="SOCKET",
        help="instead: the server path, through a vfio-user client (Rust) connected to the server at SOCKET, "
        "or to a spawned `nvmefast serve` when SOCKET is left out; the in-process poll figure beside it",
    )
    v.add_argument("--client-cpu", type=int, help="CPU for the client's host thread (default: the first CPU)")
    v.add_argument(
        "--server-cpus", type=_int_list, help="CPUs of the spawned server, comma separated (default: the last CPU)"
    )
    v.add_argument("--no-compare", action="store_true", help="skip the in-process points")
    v.add_argument("--verify-blocks", type=int, default=64, help="blocks written and read back first (default 64)")
    b.add_argument(
        "--irq",
        action="store_true",
        help="instead: the cost of one interrupt by eventfd, KVM irqfd, KVM_SIGNAL_MSI and a Python "
        "callback, its end-to-end effect at QD 1 and 64, and interrupt coalescing",
    )
    b.add_argument(
        "--pi",
        type=int,
        choices=(1, 2, 3),
        help="instead: 4 KiB reads with PRCHK and writes with PRACT on a namespace with protection "
        "information of this type, against the same without, the guard's GB/s as the floor",
    )
    b.add_argument("--guard", choices=("crc16", "crc64"), default="crc16", help="the PI guard of --pi (default crc16)")
    _serve_parser(sub)
    ctl_parser(sub)
    pl = sub.add_parser(
        "plot",
        help="draw an earlier `nvmefast bench --json` result",
        description="Draw the figure `nvmefast bench --plot` draws, from the JSON `nvmefast bench --json` wrote.",
    )
    pl.add_argument("result", metavar="RESULT.json", help="what `nvmefast bench --json` wrote")
    pl.add_argument("-o", "--output", metavar="PATH", required=True, help="the image to write (.png, .svg or .pdf)")
    return p


def _bench_file_arguments(b: argparse.ArgumentParser) -> None:
    f = b.add_argument_group("--backend file")
    f.add_argument(
        "--file",
        metavar="PATH",
        help="the image file or block device; a missing or empty file is created at --size and filled with "
        "random data; the write points overwrite its blocks (block devices: --rw randread only)",
    )
    f.add_argument("--rw", choices=("randread", "randwrite", "both"), default="both", help="default both")
    f.add_argument(
        "--cache", choices=("auto", "direct", "buffered"), default="auto", help="O_DIRECT or the page cache (default auto)"
    )
    f.add_argument(
        "--io",
        choices=("auto", "io_uring", "threads", "inline"),
        default="auto",
        help="io_uring, the preadv2/pwritev2 thread pool, or those calls on the worker itself "
        "(default auto: inline for files with no asynchronous path, such as tmpfs)",
    )
    f.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate ours and the floor this many times per point, --seconds each, and combine "
        "(noisy machines; default 1)",
    )


def _bench_file(args: argparse.Namespace) -> int:
    from nvmefast.bench_file import FileBenchConfig, failed, file_json, format_file_table, parse_workloads, run_file_bench

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if not args.file:
        print("nvmefast bench: --backend file needs --file PATH", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 100:
        print("nvmefast bench: --rounds must be in 1..100", file=sys.stderr)
        return 2
    mode = args.mode or "irq"
    cfg = FileBenchConfig(
        path=args.file,
        qds=args.qd,
        workloads=parse_workloads(args.rw),
        modes=("irq", "poll") if mode == "both" else (mode,),
        seconds=args.seconds,
        size_bytes=args.size,
        lba_size=args.lba_size,
        cache=args.cache,
        io=args.io,
        poll_us=args.poll_us,
        rounds=args.rounds,
    )
    res = run_file_bench(cfg, progress)
    print(format_file_table(res))
    _write_results(args, file_json(res), progress)
    return 1 if failed(res) else 0


def _cpu_list(text: str) -> tuple[int, ...]:
    from nvmefast.config import CpuListError, parse_cpu_list

    try:
        return parse_cpu_list(text)
    except CpuListError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "serve",
        help="serve the controller to a vfio-user client (QEMU's vfio-user-pci)",
        description="Listen on a UNIX socket and serve an emulated NVMe controller over vfio-user, "
        "one client at a time; namespace data lives as long as the server. Attach QEMU with "
        "-device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"PATH\",\"type\":\"unix\"}}' "
        "and share guest RAM (-object memory-backend-memfd,id=mem,size=1G,share=on "
        "-machine q35,memory-backend=mem). Stop with Ctrl-C or SIGTERM.",
    )
    s.add_argument("--socket", required=True, metavar="PATH", help="UNIX socket path to listen on")
    s.add_argument(
        "--namespace",
        action="append",
        type=_namespace,
        metavar="SPEC",
        help=f"a namespace: {USAGE}. SIZE like 64M or 1G, LBA 512 or 4096; file: a raw image file or "
        "block device, of its own size unless size= says otherwise. Options, in any order: "
        f"{options_help()}. E.g. ram:64M, null:1G:4096, file:disk.img:4096:ro, file:new.img:size=1G. "
        "Repeat for more (default: one ram:1G)",
    )
    n = s.add_argument_group("namespaces while serving (docs/namespaces.md)")
    n.add_argument(
        "--capacity",
        type=parse_size,
        metavar="SIZE",
        help="the NVM capacity (Identify TNVMCAP) that --namespace namespaces and those a guest creates "
        "(nvme create-ns) or `nvmefast ctl` adds draw on, e.g. 1G; with it, no --namespace means none "
        "(default: what the --namespace namespaces take)",
    )
    n.add_argument(
        "--namespace-dir",
        metavar="DIR",
        help="keep namespaces a guest creates as image files in DIR, with a manifest a restarted server "
        "reads to find them again, NSIDs and attachment included (default: in RAM, gone with the server)",
    )
    n.add_argument(
        "--control",
        metavar="PATH",
        help="serve a control socket at PATH (JSON lines) for `nvmefast ctl PATH add-namespace ram:64M | "
        "resize-namespace NSID SIZE | remove-namespace NSID | list`",
    )
    s.add_argument(
        "--cache",
        choices=CACHE_MODES,
        default="auto",
        help="file namespaces: direct (O_DIRECT), buffered (page cache) or auto: direct where the file "
        "allows it (default auto)",
    )
    s.add_argument(
        "--io",
        choices=IO_PATHS,
        default="auto",
        help="file namespaces: io_uring, threads (preadv2/pwritev2 thread pool) or auto: io_uring unless "
        "the kernel or seccomp refuses it (default auto; NVMEFAST_FILE_IO=threads overrides auto)",
    )
    s.add_argument("--iothreads", type=int, default=1, help="I/O worker threads (default 1)")
    s.add_argument("--queues", type=int, default=8, help="I/O queue pairs offered (default 8)")
    s.add_argument("--serial", default="NVMEFAST0001", help="Identify serial number (default NVMEFAST0001)")
    s.add_argument("--model", default="nvmefast emulated NVMe", help="Identify model number")
    s.add_argument(
        "--doorbells",
        choices=("mmap", "trap"),
        default="trap",
        help="trap: a doorbell write is a message that wakes a worker (with shadow doorbells, as "
        "Linux uses them, only when a worker sleeps; idle workers use no CPU); mmap: the client maps "
        "the doorbell page, idle workers scan it (for polling clients without shadow doorbells) "
        "(default trap)",
    )
    s.add_argument(
        "--doorbell-scan-us",
        type=int,
        default=100,
        help="with --doorbells mmap, how often an idle worker looks at the doorbells, in us; it backs "
        "off to 16x while idle (default 100)",
    )
    s.add_argument(
        "--polling",
        choices=("adaptive", "interrupt", "poll"),
        default="adaptive",
        help="I/O worker polling after work (default adaptive)",
    )
    s.add_argument(
        "--cpus",
        type=_cpu_list,
        default=None,
        metavar="LIST",
        help="pin the I/O worker threads to these CPUs, round robin, e.g. 1 or 0-1 "
        "(default: no pinning; the scheduler places them)",
    )
    s.add_argument(
        "--multi-controller",
        action="store_true",
        help="claim CMIC/NMIC (more controllers, shared namespaces): Linux then adds a multipath layer",
    )
    s.add_argument(
        "--trace",
        metavar="PATH",
        help="record every command and register write (Controller.trace) and append them to PATH as JSON Lines",
    )
    s.add_argument(
        "--fault",
        metavar="RULE",
        action="append",
        type=_fault_rule,
        help="a fault rule, e.g. 'read lba=0..7 count=1 -> status unrecovered-read-error dnr' "
        "(docs/faults.md); repeat for more; hits are logged at exit",
    )
    s.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="what to log to stderr: connects, DMA maps, IRQ setup, resets, disconnects at info (default)",
    )


def _namespace(text: str) -> NamespaceSpec:
    """``--namespace``: the grammar is :mod:`nvmefast.namespace_spec`'s (argparse reports a bad one)."""
    return parse_namespace(text)


def _namespace_config(spec: NamespaceSpec, args: argparse.Namespace) -> NamespaceConfig:
    try:
        return spec.config(cache=args.cache, io=args.io)
    except ConfigError as e:
        # Name the argument, and the fix in its own grammar (size=, :ro).
        raise ConfigError(f"--namespace {spec.text}: {in_cli_terms(str(e), namespace_terms(spec.text))}") from None


def describe_namespace(
    nsid: int, info: Mapping[str, object], fmt: NamespaceFormat | None = None, zones: ZoneConfig | None = None
) -> str:
    """One line saying how namespace ``nsid`` is served (the serve log's): ``fmt`` its format, and its
    zones if it is zoned."""
    size = info["size_bytes"]
    assert isinstance(size, int)
    text = f"namespace {nsid}: {info['backend']} {_format_size(size)}"
    if fmt is not None and fmt.metadata_size:
        text += f", {fmt.describe()}"
    if info["backend"] == "file":
        mode = "read-only" if info["readonly"] else "read-write"
        text += f" {info['path']}, io {info['io']}, cache {info['cache']}, {mode}"
    if zones is not None:
        text += f", zoned: {size // zones.size_bytes} zones of {_format_size(zones.size_bytes)}"
        if zones.capacity != zones.size_bytes:
            text += f" ({_format_size(zones.capacity)} writable)"
        limits = [f"{n} {name}" for name, n in (("open", zones.max_open), ("active", zones.max_active)) if n]
        text += f", at most {' and '.join(limits)}" if limits else ", no open or active limit"
        if zones.append_size_limit is not None:
            text += f", appends up to {_format_size(zones.append_size_limit)}"
    return text


def _format_size(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"


def _fault_rule(text: str) -> FaultRule:
    """``--fault``: a rule in its text form (argparse reports a bad one)."""
    try:
        return FaultRule.parse(text)
    except FaultRuleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _serve(args: argparse.Namespace) -> int:
    import signal

    from nvmefast.config import ControllerConfig
    from nvmefast.vfio_user import VfioUserServer

    # Everything serve says goes through logging: one format, one --log-level.
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s.%(msecs)03d nvmefast %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # With a capacity or a namespace directory there may be no namespace until one is created.
    managed = args.capacity is not None or args.namespace_dir is not None
    specs: list[NamespaceSpec] = args.namespace or ([] if managed else [parse_namespace("ram:1G")])
    config = ControllerConfig(
        namespaces=tuple(_namespace_config(spec, args) for spec in specs),
        capacity_bytes=args.capacity,
        namespace_dir=args.namespace_dir,
        serial=args.serial,
        model=args.model,
        iothreads=args.iothreads,
        max_io_queue_pairs=args.queues,
        polling=args.polling,
        multi_controller=args.multi_controller,
        cpus=args.cpus,
    )
    server = VfioUserServer(
        args.socket, config, doorbells=args.doorbells, doorbell_scan_us=args.doorbell_scan_us
    )

    def _stop(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        server.request_stop()

    if args.trace:
        try:
            open(args.trace, "a", encoding="utf-8").close()
        except OSError as e:
            server.controller.close()
            print(f"nvmefast serve: --trace {args.trace}: {e.strerror}", file=sys.stderr)
            return 2
        server.controller.trace.start(1 << 20)
    # Rules go in before the socket listens: the first client meets them.
    faults = [server.controller.faults.add(rule) for rule in args.fault or ()]
    for nsid, ns in server.controller.namespaces().items():
        fmt = NamespaceFormat.of_engine(server.controller.engine.namespace_format(nsid))
        log.info("%s", describe_namespace(nsid, server.controller.namespace_info(nsid), fmt, ns.zones))
    total, unallocated = server.controller.capacity()
    log.info("NVM capacity %s, %s unallocated%s", _format_size(total), _format_size(unallocated),
             f", namespaces created in {args.namespace_dir}" if args.namespace_dir else "")  # fmt: skip
    log.info("%d iothread(s), up to %d I/O queue pairs, polling %s", args.iothreads, args.queues, args.polling)
    for fault in faults:
        log.info("fault rule %d: %s", fault.id, fault.rule)
    control = None
    try:
        if args.control:
            from nvmefast.control import ControlServer

            control = ControlServer(args.control, server.controller)
            control.start()
        # Before the socket listens: a client may stop the server as soon as it
        # sees the socket (request_stop only sets a flag wait() reads).
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        server.start()
    except BaseException:
        if control is not None:
            control.stop()
        server.controller.close()
        raise
    try:
        while not server.wait(0.5):
            if args.trace:
                server.controller.trace.write_jsonl(args.trace)
    finally:
        for fault in faults:
            log.info("fault rule %d: %d hits of %d matches (%s)", fault.id, fault.hits, fault.matched, fault.rule)
        if args.trace and not server.controller.closed:
            server.controller.trace.write_jsonl(args.trace)
        if control is not None:
            control.stop()
        server.stop()
    return 0


def _bench(args: argparse.Namespace) -> int:
    from nvmefast.bench import BenchConfig, format_table, run_bench, to_json

    if not 1 <= args.iothreads <= 64:
        print("nvmefast bench: --iothreads must be in 1..64", file=sys.stderr)
        return 2
    if not 0 < args.seconds <= 600:
        print("nvmefast bench: --seconds must be in (0, 600]", file=sys.stderr)
        return 2
    if args.plot and (why := _cannot_plot(args.plot)):
        print(f"nvmefast bench: --plot {args.plot}: {why}", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.irq:
        from nvmefast.bench_irq import format_irq_table, irq_json, run_irq_bench

        result = run_irq_bench(args.seconds, progress)
        print(format_irq_table(result))
        _write_results(args, irq_json(result), progress)
        return 1 if any(r["errors"] for r in result.end_to_end + result.coalescing) else 0
    if args.pi is not None:
        from nvmefast.bench_pi import format_pi_table, pi_json, run_pi_bench

        res = run_pi_bench(args.pi, args.guard, args.seconds, progress=progress)
        print(format_pi_table(res))
        _write_results(args, pi_json(res), progress)
        return 1 if any(row["errors"] for row in res.rows) else 0
    if args.vfio_user is not None:
        return _bench_vfio_user(args, progress)
    if args.zoned:
        return _bench_zoned(args, progress)
    if args.doorbell == "trap":
        print("nvmefast bench: --doorbell trap is a vfio-user mode: add --vfio-user", file=sys.stderr)
        return 2
    if args.backend == "file":
        return _bench_file(args)
    if args.file:
        print("nvmefast bench: --file needs --backend file", file=sys.stderr)
        return 2
    mode = args.mode or "both"
    modes = ("irq", "poll") if mode == "both" else (mode,)
    cfg = BenchConfig(
        qds=args.qd,
        modes=modes,
        seconds=args.seconds,
        backend=args.backend,
        size_bytes=args.size,
        lba_size=args.lba_size,
        poll_us=args.poll_us,
        doorbell=args.doorbell or "mmio",
        iothreads=args.iothreads,
        faults=tuple(str(rule) for rule in args.fault or ()),
    )
    floors, points = run_bench(cfg, progress)
    print(format_table(cfg, floors, points))
    _write_results(args, to_json(cfg, floors, points), progress)
    return 1 if any(p.errors for p in points) else 0


def _bench_zoned(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    from nvmefast.bench import BenchConfig
    from nvmefast.bench_zoned import failed, format_zoned_table, run_zoned_bench, zoned_json
    from nvmefast.config import ZoneConfig

    if args.backend != "ram" or args.doorbell not in (None, "mmio"):
        print("nvmefast bench: --zoned measures RAM namespaces with MMIO doorbells: drop --backend and --doorbell",
              file=sys.stderr)
        return 2
    try:
        ZoneConfig(size_bytes=args.zone_size).check(args.lba_size, args.size)
    except ConfigError as e:
        print(f"nvmefast bench: --zone-size: {e}", file=sys.stderr)
        return 2
    mode = args.mode or "both"
    cfg = BenchConfig(
        qds=args.qd,
        modes=("irq", "poll") if mode == "both" else (mode,),
        seconds=args.seconds,
        size_bytes=args.size,
        lba_size=args.lba_size,
        poll_us=args.poll_us,
    )
    result = run_zoned_bench(cfg, args.zone_size, progress)
    print(format_zoned_table(cfg, result))
    _write_results(args, zoned_json(cfg, result), progress)
    return 1 if failed(result) else 0


def _bench_vfio_user(args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    from nvmefast.bench_vfio_user import DOORBELLS, VfioBenchConfig, format_vfio_table, run_vfio_bench, vfio_json

    if args.backend != "ram" or args.iothreads != 1:
        print("nvmefast bench: --vfio-user measures one RAM namespace with one I/O queue pair: "
              "drop --backend and --iothreads (pass server options to your own `nvmefast serve`)", file=sys.stderr)
        return 2
    if args.doorbell not in (None, *DOORBELLS):
        print(f"nvmefast bench: --vfio-user rings by {', '.join(DOORBELLS)}, not {args.doorbell}", file=sys.stderr)
        return 2
    mode = args.mode or "both"
    cfg = VfioBenchConfig(
        socket=args.vfio_user or None,
        qds=args.qd,
        modes=("poll", "irq") if mode == "both" else (mode,),
        doorbells=None if args.doorbell is None else (args.doorbell,),
        seconds=args.seconds,
        size_bytes=args.size,
        compare=not args.no_compare,
        verify_blocks=args.verify_blocks,
        client_cpu=args.client_cpu,
        server_cpus=tuple(args.server_cpus) if args.server_cpus else None,
    )
    res = run_vfio_bench(cfg, progress)
    print(format_vfio_table(cfg, res))
    _write_results(args, vfio_json(cfg, res), progress)
    return 1 if res.mismatched_blocks or any(p.errors for p in res.points) else 0


def _cannot_plot(path: str) -> str | None:
    """Why ``--plot PATH`` could not be drawn after the run, or None: asked before measuring."""
    from nvmefast.plot import PlotUnavailableError, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailableError as e:
        return str(e)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"directory {parent} does not exist"
    return None


def _write_results(args: argparse.Namespace, doc: dict[str, Any], progress: Callable[[str], None]) -> None:
    """``--json`` and ``--plot``: the same document written and drawn."""
    from nvmefast.bench import write_json

    if args.json:
        write_json(args.json, doc)
        progress(f"wrote {args.json}")
    if args.plot:
        from nvmefast.plot import plot_result

        plot_result(doc, args.plot)
        progress(f"drew {args.plot}")


def _plot(args: argparse.Namespace) -> int:
    from nvmefast.plot import PlotUnavailableError, load_result, plot_result

    doc = load_result(args.result)
    try:
        plot_result(doc, args.output)
    except PlotUnavailableError as e:
        print(f"nvmefast plot: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"nvmefast plot: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"drew {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nvmefast`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            return _bench(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "plot":
            return _plot(args)
        if args.command == "ctl":
            return run_ctl(args)
    except NvmeFastError as e:
        message = str(e)
        if isinstance(e, ConfigError) and args.command in _TERMS:
            # Name what the user typed (--iothreads), not the API's field.
            message = in_cli_terms(message, _TERMS[args.command])
        print(f"nvmefast {args.command}: {message}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
