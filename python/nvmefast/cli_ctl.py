"""``nvmefast ctl``: the client of ``nvmefast serve --control PATH``.

::

    nvmefast ctl PATH add-namespace ram:64M        # prints the new NSID
    nvmefast ctl PATH resize-namespace 2 2G
    nvmefast ctl PATH remove-namespace 2
    nvmefast ctl PATH list [--json]

Each runs one request of :mod:`nvmefast.control` and prints what happened;
an error reply is printed on stderr and the exit status is 1 (2 for a
command line that does not parse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from nvmefast.config import size_text
from nvmefast.control import ControlError, control_request
from nvmefast.namespace_spec import USAGE, parse_size

__all__ = ["ctl_parser", "format_list", "run_ctl"]


def ctl_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ctl`` and its commands to the ``nvmefast`` parser."""
    c = sub.add_parser(
        "ctl",
        help="add, resize, remove and list namespaces of a running `nvmefast serve --control PATH`",
        description="Talk to the control socket of a running `nvmefast serve --control PATH`: the guest sees "
        "a namespace added, resized or removed at once (a Namespace Attribute Changed notice; Linux rescans). "
        "See docs/namespaces.md.",
    )
    c.add_argument("control", metavar="PATH", help="the server's --control socket")
    ops = c.add_subparsers(dest="op", required=True)
    add = ops.add_parser("add-namespace", help="add a namespace; prints its NSID")
    add.add_argument("namespace", metavar="SPEC", help=f"as serve's --namespace: {USAGE}, e.g. ram:64M")
    resize = ops.add_parser("resize-namespace", help="grow or shrink a namespace")
    resize.add_argument("nsid", type=int, metavar="NSID")
    resize.add_argument("size", type=parse_size, metavar="SIZE", help="the new size, e.g. 2G")
    remove = ops.add_parser("remove-namespace", help="remove a namespace")
    remove.add_argument("nsid", type=int, metavar="NSID")
    lst = ops.add_parser("list", help="the namespaces and the capacity")
    lst.add_argument("--json", action="store_true", help="print the reply as JSON")


def format_list(reply: Mapping[str, Any]) -> str:
    """A ``list`` reply as a table."""
    rows = ["NSID  SIZE      LBA   BACKEND  ORIGIN      ATTACHED  PATH"]
    for ns in reply.get("namespaces", []):
        rows.append(
            f"{ns['nsid']:<5} {size_text(ns['size_bytes']):<9} {ns['lba_size']:<5} {ns['backend']:<8} "
            f"{ns['origin']:<11} {'yes' if ns['attached'] else 'no':<9} {ns.get('path') or ''}".rstrip()
        )
    cap = reply.get("capacity", {})
    rows.append(f"capacity {size_text(cap.get('total_bytes', 0))}, {size_text(cap.get('unallocated_bytes', 0))} unallocated")
    return "\n".join(rows)


def run_ctl(args: argparse.Namespace) -> int:
    """Run one ``nvmefast ctl`` command."""
    request: dict[str, Any] = {"op": args.op}
    if args.op == "add-namespace":
        request.update(namespace=args.namespace, cwd=os.getcwd())
    elif args.op == "resize-namespace":
        request.update(nsid=args.nsid, size=args.size)
    elif args.op == "remove-namespace":
        request.update(nsid=args.nsid)
    try:
        reply = control_request(args.control, request)
    except ControlError as e:
        print(f"nvmefast ctl: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"nvmefast ctl: {args.op}: {reply.get('error', reply)}", file=sys.stderr)
        return 1
    if args.op == "add-namespace":
        print(f"namespace {reply['nsid']} added")
    elif args.op == "resize-namespace":
        print(f"namespace {reply['nsid']} resized to {size_text(reply['size_bytes'])}")
    elif args.op == "remove-namespace":
        print(f"namespace {reply['nsid']} removed")
    elif args.json:
        print(json.dumps(reply, indent=1))
    else:
        print(format_list(reply))
    return 0
