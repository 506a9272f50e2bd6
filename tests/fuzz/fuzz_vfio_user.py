"""Coverage-guided fuzzing of the vfio-user server's message parsing and
dispatch, with atheris (libFuzzer for Python).

Run (from the repository root, with the extension built in place)::

    python3 tests/fuzz/fuzz_vfio_user.py -max_total_time=600 /tmp/vfio-corpus tests/fuzz/corpus/vfio_user

An input is a client's byte stream: byte 0 says which of the first messages
carry file descriptors (bits 0-3: message 0-3 carries a 64 KiB memfd; bits
4-7: message 0-3 carries an eventfd), the rest is sent as-is over a
socketpair, split at the message boundaries the header sizes give. The
server side runs the real framing (``protocol.recv_message``) and dispatch
(``_Connection._dispatch``) in this thread, with the connection's sends
captured and its server-to-client requests (DMA_READ/DMA_WRITE for remote
memory) answered by a fake client.

The oracle (an ``AssertionError`` or any escaping exception is a crash):

- nothing but the protocol's own refusals: no error logged (the dispatcher's
  catch-all for server bugs logs one), no exception out of framing other
  than ``MessageError``;
- every command not marked NO_REPLY gets exactly one reply, a posted one
  none; a reply names the command's msg_id and command, and an error reply
  carries a non-zero errno and no payload;
- the server stays serviceable: if the stream stayed framed, VERSION (or
  its refusal when already negotiated) and DEVICE_GET_INFO still get
  correct replies on the same connection; after the connection is torn
  down, a fresh one negotiates, reads PCI config space and BAR0 CAP as on
  the first, and finds CC and CSTS reset.

``run_one`` is importable without atheris, for replaying the corpus
(``tests/test_fuzz_replay.py``).
"""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "python"))

if __name__ == "__main__":
    import atheris  # noqa: F401  (imported first: _import_server instruments under it)

FDS_PER_KIND = 4
MEMFD_SIZE = 64 << 10


def _import_server() -> Any:
    """Import the server modules, instrumented for coverage under atheris."""
    if "atheris" in sys.modules:
        import atheris

        with atheris.instrument_imports(include=["nvmefast"]):
            from nvmefast.vfio_user import server
    else:
        from nvmefast.vfio_user import server
    return server


server_mod = _import_server()
from nvmefast.config import ControllerConfig, NamespaceConfig  # noqa: E402
from nvmefast.vfio_user import protocol as p  # noqa: E402


@dataclass
class Sent:
    """One message the server sent (captured instead of written to the socket)."""

    msg_id: int
    command: int
    payload: bytes
    flags: int
    error: int


class _ErrorLog(logging.Handler):
    """Collects ERROR records of the server's logger: each one is a finding."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class _Harness:
    """One server (and controller) per process; one connection per input."""

    server: Any
    errors: _ErrorLog
    baseline: tuple[bytes, bytes] = (b"", b"")
    sent: list[Sent] = field(default_factory=list)


def _setup() -> _Harness:
    errors = _ErrorLog()
    log = logging.getLogger("nvmefast.vfio_user")
    log.addHandler(errors)
    log.setLevel(logging.ERROR)
    log.propagate = False
    config = ControllerConfig(namespaces=(NamespaceConfig(size_bytes=1 << 20),), max_io_queue_pairs=2)
    path = os.path.join(tempfile.gettempdir(), f"nvmefast-fuzz-{os.getpid()}.sock")
    h = _Harness(server_mod.VfioUserServer(path, config, doorbells="trap"), errors)
    conn, peer = _connect(h)
    try:
        h.baseline = _fresh_state(h, conn)
    finally:
        conn._teardown()
        peer.close()
    return h


_H: _Harness | None = None


def _harness() -> _Harness:
    global _H
    if _H is None:
        _H = _setup()
    return _H


def _fake_request(command: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """The client's side of DMA_READ/DMA_WRITE: zeroes in, anything out."""
    address, count = p.DMA_ACCESS.unpack_from(payload)
    if command == p.DMA_READ:
        return p.DMA_ACCESS.pack(address, count) + bytes(count)
    return p.DMA_ACCESS.pack(address, count)


def _connect(h: _Harness) -> tuple[Any, socket.socket]:
    """A connection on one end of a socketpair, its sends captured."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    conn = server_mod._Connection(h.server, ours, 0)

    def send(msg_id: int, command: int, payload: bytes = b"", **kw: Any) -> None:
        h.sent.append(Sent(msg_id, command, payload, int(kw.get("flags", 0)), int(kw.get("error", 0))))

    conn.send = send
    conn.request = _fake_request
    return conn, peer


def _frames(stream: bytes) -> list[bytes]:
    """Split ``stream`` where the server's framing will (the last may be short)."""
    out = []
    at = 0
    while at < len(stream):
        size = p.HEADER.size
        if len(stream) - at >= p.HEADER.size:
            size = max(p.HEADER.unpack_from(stream, at)[2], p.HEADER.size)
        out.append(stream[at : at + size])
        at += size
    return out


def _make_fds(plan: int, i: int) -> list[int]:
    fds = []
    if i < FDS_PER_KIND and plan >> i & 1:
        fd = os.memfd_create("nvmefast-fuzz-dma")
        os.ftruncate(fd, MEMFD_SIZE)
        fds.append(fd)
    if i < FDS_PER_KIND and plan >> (FDS_PER_KIND + i) & 1:
        fds.append(os.eventfd(0))
    return fds


def _send_stream(peer: socket.socket, plan: int, stream: bytes) -> None:
    for i, frame in enumerate(_frames(stream)):
        fds = _make_fds(plan, i)
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                peer.sendmsg([frame], anc)
            else:
                peer.sendall(frame)
        finally:
            for fd in fds:
                os.close(fd)
    peer.shutdown(socket.SHUT_WR)


def _check_replies(hdr: p.Header, replies: list[Sent]) -> None:
    # A command gets its reply, anything else (a stray type) a refusal;
    # a posted message (NO_REPLY) neither.
    wants_reply = not hdr.no_reply
    assert len(replies) == (1 if wants_reply else 0), f"{len(replies)} replies to {hdr}"
    for r in replies:
        assert (r.msg_id, r.command) == (hdr.msg_id, hdr.command), f"reply {r} to {hdr}"
        assert r.flags & p.FLAG_TYPE_MASK == p.TYPE_REPLY, f"reply {r} is not a reply"
        if r.flags & p.FLAG_ERROR:
            assert r.error != 0 and r.payload == b"", f"bad error reply {r} to {hdr}"


def _call(h: _Harness, conn: Any, command: int, payload: bytes) -> Sent:
    """Dispatch a well-formed command and return its one reply."""
    hdr = p.Header(0x7777, command, p.HEADER.size + len(payload), p.TYPE_COMMAND, 0)
    h.sent.clear()
    conn._dispatch(hdr, payload, [])
    _check_replies(hdr, h.sent)
    return h.sent[0]


def _version(h: _Harness, conn: Any) -> Sent:
    return _call(h, conn, p.VERSION, p.VERSION_HEAD.pack(0, 1) + b'{"capabilities":{}}\0')


def _check_device_info(h: _Harness, conn: Any) -> None:
    r = _call(h, conn, p.DEVICE_GET_INFO, p.DEVICE_INFO.pack(p.DEVICE_INFO.size, 0, 0, 0))
    assert not r.flags & p.FLAG_ERROR, f"DEVICE_GET_INFO refused: {r}"
    _, flags, regions, irqs = p.DEVICE_INFO.unpack(r.payload)
    assert (regions, irqs) == (p.PCI_NUM_REGIONS, p.PCI_NUM_IRQS), r
    assert flags & p.DEVICE_FLAGS_PCI, r


def _region_read(h: _Harness, conn: Any, region: int, offset: int, count: int) -> bytes:
    r = _call(h, conn, p.REGION_READ, p.REGION_ACCESS.pack(offset, region, count))
    assert not r.flags & p.FLAG_ERROR, f"REGION_READ {region}:{offset:#x}+{count} refused: {r}"
    return r.payload[p.REGION_ACCESS.size :]


def _fresh_state(h: _Harness, conn: Any) -> tuple[bytes, bytes]:
    """Negotiate on a new connection; return config space's first 64 bytes and BAR0 CAP."""
    r = _version(h, conn)
    assert not r.flags & p.FLAG_ERROR, f"VERSION refused on a fresh connection: {r}"
    assert p.VERSION_HEAD.unpack_from(r.payload)[0] == p.VERSION_MAJOR
    _check_device_info(h, conn)
    config = b"".join(_region_read(h, conn, p.PCI_CONFIG_REGION_INDEX, o, 4) for o in range(0, 64, 4))
    cap = _region_read(h, conn, p.PCI_BAR0_REGION_INDEX, 0, 8)
    cc, csts = struct.unpack("<II", _region_read(h, conn, p.PCI_BAR0_REGION_INDEX, 0x14, 4) + _region_read(h, conn, p.PCI_BAR0_REGION_INDEX, 0x1C, 4))
    assert cc == 0 and csts & 1 == 0, f"controller not reset on a fresh connection: CC {cc:#x} CSTS {csts:#x}"
    return config, cap


def _serve(h: _Harness, conn: Any, sock: socket.socket) -> bool:
    """The reader and handler loops, inline. True when the stream stayed framed."""
    while True:
        try:
            got = p.recv_message(sock)
        except p.MessageError as e:
            hdr = e.header
            h.sent.clear()
            if hdr is not None and hdr.kind == p.TYPE_COMMAND and not hdr.no_reply:
                conn.error_reply(hdr, 7)  # E2BIG, as the reader sends
            return False
        if got is None:
            return True
        hdr, payload, fds = got
        if hdr.kind == p.TYPE_REPLY:
            # No request of ours is outstanding: the reader drops it.
            p.close_fds(fds)
            continue
        h.sent.clear()
        # The reader's test for running a doorbell itself parses any payload:
        # it must never raise.
        server_mod._doorbell_write(hdr, payload)
        try:
            conn._dispatch(hdr, payload, fds)
        finally:
            p.close_fds(fds)
        _check_replies(hdr, h.sent)


def run_one(data: bytes) -> None:
    """Feed one input to a new connection and check the oracle."""
    if not data:
        return
    h = _harness()
    h.errors.records.clear()
    conn, peer = _connect(h)
    try:
        _send_stream(peer, data[0], data[1:])
        framed = _serve(h, conn, conn.sock)
        if framed:
            r = _version(h, conn)
            if conn.negotiated and r.flags & p.FLAG_ERROR:
                pass  # negotiated by the stream: a second VERSION is refused
            else:
                assert not r.flags & p.FLAG_ERROR, f"VERSION refused: {r}"
            _check_device_info(h, conn)
    finally:
        conn._teardown()
        peer.close()
    assert not h.errors.records, "server logged an error: " + "; ".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in h.errors.records
    )
    conn, peer = _connect(h)
    try:
        assert _fresh_state(h, conn) == h.baseline, "a fresh connection sees a different device"
    finally:
        conn._teardown()
        peer.close()


def main() -> None:
    """atheris entry point (libFuzzer flags and corpus directories in argv)."""
    import atheris

    atheris.Setup(sys.argv, run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
