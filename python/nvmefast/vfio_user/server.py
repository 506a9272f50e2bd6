"""``VfioUserServer``: serves one controller to vfio-user clients over a UNIX socket.

One client at a time, as the protocol has it; when a client goes away the
function is reset, its mappings and interrupt routes dropped, and the next
client is accepted. The controller (and so the namespaces' data) lives as
long as the server.

Threads per connection: a *reader* that frames messages off the socket,
routing replies to server-initiated requests (DMA_READ/DMA_WRITE) to the
thread waiting for them, and a *handler* that runs the client's commands in
order. The split keeps a command that waits on the controller (CC.EN=0
waits for the workers) from stalling a worker that waits for a DMA reply.

A doorbell write (REGION_WRITE, or REGION_WRITE_MULTI, into BAR0's doorbell
range) that finds the handler idle runs on the reader itself: it only stores
a value and wakes a worker, and the hand-off to the handler thread cost more
than everything else a trapped doorbell does. Order is kept (the reader is
the only producer, so an idle handler has nothing older), and should that
write need a DMA reply (an event completed into memory without an fd), the
reader reads the socket for it itself.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import socket
import stat
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType

from nvmefast.config import ControllerConfig
from nvmefast.controller import Controller
from nvmefast.errors import ConfigError, NvmeFastError, StateError
from nvmefast.registers import DOORBELLS
from nvmefast.vfio_user import protocol as p
from nvmefast.vfio_user.device import Device, pack_region_info
from nvmefast.vfio_user.dma import DmaTable
from nvmefast.vfio_user.protocol import Header, MessageError, ProtocolError

__all__ = ["VfioUserServer", "socket_alive"]

log = logging.getLogger("nvmefast.vfio_user")

DOORBELL_MODES = ("mmap", "trap")


class _Connection:
    """One client: its socket, device view, DMA table and threads."""

    def __init__(self, server: VfioUserServer, sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self.controller = server.controller
        self.device = Device(self.controller, doorbells=server.doorbells)
        self.dma = DmaTable(self.controller, self)
        self.negotiated = False
        self.send_lock = threading.Lock()
        # Bounded (backpressure on the socket): see p.MAX_QUEUED.
        self.commands: queue.Queue[tuple[Header, bytes, list[int]] | None] = queue.Queue(p.MAX_QUEUED)
        self.replies: dict[int, tuple[threading.Event, list[tuple[Header, bytes]]]] = {}
        self.replies_lock = threading.Lock()
        self.next_id = 0x8000
        self.closed = threading.Event()
        # Messages by command name, logged at disconnect (how chatty a
        # client was: a doorbell per message, PBA reads, ...).
        self.messages: Counter[str] = Counter()
        self.inline_doorbells = 0
        """Doorbell writes run on the reader (the handler was idle)."""
        self.reader = threading.Thread(target=self._read_loop, name=f"vfio-user-reader-{number}", daemon=True)
        self.handler = threading.Thread(target=self._handle_loop, name=f"vfio-user-handler-{number}", daemon=True)
        self.spoke = False
        """A whole message arrived (the server's first-message deadline is met)."""

    def start(self) -> None:
        self.reader.start()
        self.handler.start()

    # -- sending -------------------------------------------------------------------

    def send(self, msg_id: int, command: int, payload: bytes = b"", **kw: object) -> None:
        with self.send_lock:
            p.send_message(self.sock, msg_id, command, payload, **kw)  # type: ignore[arg-type]

    def reply(self, hdr: Header, payload: bytes = b"", fds: list[int] | None = None) -> None:
        self.send(hdr.msg_id, hdr.command, payload, flags=p.TYPE_REPLY, fds=fds)

    def error_reply(self, hdr: Header, err: int) -> None:
        self.send(hdr.msg_id, hdr.command, b"", flags=p.TYPE_REPLY | p.FLAG_ERROR, error=err)

    def request(self, command: int, payload: bytes, timeout: float = 10.0) -> bytes:
        """Send a server-to-client request and wait for its reply's payload."""
        if self.closed.is_set():
            raise ProtocolError(errno.ENOTCONN, "the client is gone")
        event = threading.Event()
        box: list[tuple[Header, bytes]] = []
        with self.replies_lock:
            msg_id = self.next_id
            self.next_id = 0x8000 + (self.next_id + 1) % 0x8000
            self.replies[msg_id] = (event, box)
        try:
            self.send(msg_id, command, payload)
            wait = timeout
            if threading.current_thread() is self.reader:
                # A doorbell run on the reader needs a reply only the reader
                # can receive: read the socket until it comes (or the
                # connection ends, which leaves nothing to wait for).
                deadline = time.monotonic() + timeout
                while not event.is_set() and time.monotonic() < deadline:
                    if not self._receive_one(inline=False):
                        break
                wait = 0
            if not event.wait(wait) or not box:
                raise ProtocolError(errno.ETIMEDOUT, f"no reply to {p.COMMAND_NAMES[command]} within {timeout} s")
            hdr, body = box[0]
            if hdr.flags & p.FLAG_ERROR:
                raise ProtocolError(hdr.error or errno.EIO, f"the client refused {p.COMMAND_NAMES[command]}: errno {hdr.error}")
            return body
        finally:
            with self.replies_lock:
                self.replies.pop(msg_id, None)

    # -- reading ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while self._receive_one(inline=True):
                pass
        finally:
            self.closed.set()
            # Before anything waits for the workers (the handler may be in
            # the core already): a worker the client blocked in an eventfd
            # write goes on.
            self.device.unblock_interrupts()
            self.commands.put(None)
            with self.replies_lock:
                for event, _ in self.replies.values():
                    event.set()

    def _receive_one(self, inline: bool) -> bool:
        """Receive one message and route it: a reply to its waiter, a
        doorbell write (``inline``, handler idle) run here, any other command
        to the handler. False when the connection is over."""
        try:
            got = p.recv_message(self.sock)
        except MessageError as e:
            log.warning("client %d: %s; closing the connection", self.number, e)
            if e.header is not None and e.header.kind == p.TYPE_COMMAND and not e.header.no_reply:
                try:
                    self.error_reply(e.header, errno.E2BIG)
                except OSError:
                    pass
            return False
        except OSError as e:
            if not self.closed.is_set():
                log.info("client %d: socket error %s", self.number, e)
            return False
        if got is None:
            return False
        self.spoke = True
        hdr, payload, fds = got
        if hdr.kind == p.TYPE_REPLY:
            p.close_fds(fds)
            with self.replies_lock:
                waiter = self.replies.get(hdr.msg_id)
            if waiter is None:
                log.warning("client %d: reply %d matches no request; ignored", self.number, hdr.msg_id)
                return True
            waiter[1].append((hdr, payload))
            waiter[0].set()
            return True
        # unfinished_tasks is 0 only when the handler holds nothing and runs
        # nothing; only this thread adds to it, so it stays 0 meanwhile.
        if inline and not fds and self.commands.unfinished_tasks == 0 and _doorbell_write(hdr, payload):
            self.inline_doorbells += 1
            self._run(hdr, payload, fds)
            return True
        self.commands.put((hdr, payload, fds))
        return True

    def _run(self, hdr: Header, payload: bytes, fds: list[int]) -> None:
        try:
            self._dispatch(hdr, payload, fds)
        except OSError as e:
            log.info("client %d: reply failed: %s", self.number, e)
        finally:
            p.close_fds(fds)

    def _handle_loop(self) -> None:
        try:
            while True:
                item = self.commands.get()
                if item is None:
                    self.commands.task_done()
                    break
                self._run(*item)
                self.commands.task_done()
        finally:
            self._teardown()

    def _dispatch(self, hdr: Header, payload: bytes, fds: list[int]) -> None:
        self.messages[hdr.name] += 1
        if hdr.kind != p.TYPE_COMMAND:
            log.warning("client %d: message %d has type %d; refused", self.number, hdr.msg_id, hdr.kind)
            if not hdr.no_reply:
                self.error_reply(hdr, errno.EINVAL)
            return
        try:
            if hdr.size < p.HEADER.size:
                raise ProtocolError(errno.EINVAL, f"message size {hdr.size} < header size")
            if not self.negotiated and hdr.command != p.VERSION:
                raise ProtocolError(errno.EINVAL, f"{hdr.name} before VERSION")
            handler = self._handlers.get(hdr.command)
            if handler is None:
                raise ProtocolError(errno.ENOSYS, f"{hdr.name} is not supported")
            out = handler(self, hdr, payload, fds)
        except ProtocolError as e:
            self._refuse(hdr, e.errno, str(e))
            return
        except (NvmeFastError, ValueError, struct.error) as e:
            self._refuse(hdr, errno.EINVAL, str(e))
            return
        except Exception:  # noqa: BLE001 - a server bug must not take the server down
            log.exception("client %d: %s failed", self.number, hdr.name)
            self._refuse(hdr, errno.EIO, "internal error")
            return
        if hdr.no_reply:
            return
        body, reply_fds = out
        try:
            self.reply(hdr, body, reply_fds)
        finally:
            if reply_fds:
                p.close_fds(reply_fds)

    def _refuse(self, hdr: Header, err: int, why: str) -> None:
        # A posted message (NO_REPLY) gets no reply even for an error: QEMU
        # would take it for the reply to its next request.
        log.warning("client %d: %s refused (%s): %s", self.number, hdr.name, errno.errorcode.get(err, err), why)
        if not hdr.no_reply:
            self.error_reply(hdr, err)

    # -- commands ----------------------------------------------------------------------

    Result = tuple[bytes, list[int] | None]

    @staticmethod
    def _need(payload: bytes, layout: struct.Struct, what: str) -> tuple[int, ...]:
        if len(payload) < layout.size:
            raise ProtocolError(errno.EINVAL, f"{what} payload is {len(payload)} bytes, need {layout.size}")
        return layout.unpack_from(payload)

    def _version(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        if self.negotiated:
            raise ProtocolError(errno.EINVAL, "VERSION sent twice")
        major, minor = self._need(payload, p.VERSION_HEAD, "VERSION")
        if major != p.VERSION_MAJOR:
            raise ProtocolError(errno.ENOTSUP, f"protocol major version {major}; this server speaks {p.VERSION_MAJOR}")
        text = payload[p.VERSION_HEAD.size :].split(b"\0", 1)[0]
        client_caps: dict[str, object] = {}
        if text:
            try:
                parsed = json.loads(text)
            except ValueError as e:
                raise ProtocolError(errno.EINVAL, f"VERSION capabilities are not JSON: {e}") from e
            if not isinstance(parsed, dict) or not isinstance(parsed.get("capabilities", {}), dict):
                raise ProtocolError(errno.EINVAL, "VERSION capabilities must be a JSON object")
            client_caps = parsed.get("capabilities", {})
        self.client_caps = client_caps
        caps = {
            "capabilities": {
                "max_msg_fds": p.MAX_MSG_FDS,
                "max_data_xfer_size": p.MAX_DATA_XFER,
                "pgsizes": 4096,
                "max_dma_maps": p.MAX_DMA_MAPS,
                "write_multiple": True,
            }
        }
        self.negotiated = True
        log.info("client %d: protocol %d.%d, client capabilities %s", self.number, major, min(minor, p.VERSION_MINOR), json.dumps(client_caps))
        # Compact: QEMU refuses a reply larger than its request.
        text_out = json.dumps(caps, separators=(",", ":")).encode()
        body = p.VERSION_HEAD.pack(p.VERSION_MAJOR, min(minor, p.VERSION_MINOR)) + text_out + b"\0"
        return body, None

    def _dma_map(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, flags, offset, address, size = self._need(payload, p.DMA_MAP_ARGS, "DMA_MAP")
        if argsz < p.DMA_MAP_ARGS.size:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP argsz {argsz} < {p.DMA_MAP_ARGS.size}")
        if len(fds) > 1:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP carries {len(fds)} fds; at most one")
        self.dma.map(address, size, flags, fds[0] if fds else None, offset)
        return b"", None

    def _dma_unmap(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, flags, address, size = self._need(payload, p.DMA_UNMAP_ARGS, "DMA_UNMAP")
        if argsz < p.DMA_UNMAP_ARGS.size:
            raise ProtocolError(errno.EINVAL, f"DMA_UNMAP argsz {argsz} < {p.DMA_UNMAP_ARGS.size}")
        if flags & p.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
            raise ProtocolError(errno.ENOTSUP, "dirty page tracking is not supported (no migration)")
        if flags & ~p.DMA_UNMAP_FLAG_ALL:
            raise ProtocolError(errno.EINVAL, f"DMA_UNMAP flags {flags:#x} has unknown bits")
        if flags & p.DMA_UNMAP_FLAG_ALL:
            if address or size:
                raise ProtocolError(errno.EINVAL, "DMA_UNMAP with UNMAP_ALL must have address and size 0")
            self.dma.unmap_all()
        else:
            self.dma.unmap(address, size)
        return p.DMA_UNMAP_ARGS.pack(p.DMA_UNMAP_ARGS.size, flags, address, size), None

    def _device_info(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        (argsz, *_rest) = self._need(payload, p.DEVICE_INFO, "DEVICE_GET_INFO")
        if argsz < p.DEVICE_INFO.size:
            raise ProtocolError(errno.EINVAL, f"DEVICE_GET_INFO argsz {argsz} < {p.DEVICE_INFO.size}")
        flags = p.DEVICE_FLAGS_PCI | p.DEVICE_FLAGS_RESET
        return p.DEVICE_INFO.pack(p.DEVICE_INFO.size, flags, p.PCI_NUM_REGIONS, p.PCI_NUM_IRQS), None

    def _region_info(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, _flags, index, _cap, _size, _off = self._need(payload, p.REGION_INFO, "DEVICE_GET_REGION_INFO")
        if argsz < p.REGION_INFO.size:
            raise ProtocolError(errno.EINVAL, f"DEVICE_GET_REGION_INFO argsz {argsz} < {p.REGION_INFO.size}")
        flags, size, offset, caps, fd = self.device.region_info(index)
        body = pack_region_info(argsz, index, flags, size, offset, caps)
        if fd is not None and len(body) == p.REGION_INFO.size and caps:
            # The capabilities did not fit: the client asks again; no fd yet.
            os.close(fd)
            fd = None
        return body, [fd] if fd is not None else None

    def _region_io_fds(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, _flags, index, _count = self._need(payload, p.REGION_IO_FDS, "DEVICE_GET_REGION_IO_FDS")
        if not 0 <= index < p.PCI_NUM_REGIONS:
            raise ProtocolError(errno.EINVAL, f"region index {index} is not in 0..{p.PCI_NUM_REGIONS - 1}")
        # No ioeventfds are offered: the doorbells are mapped instead.
        return p.REGION_IO_FDS.pack(p.REGION_IO_FDS.size, 0, index, 0), None

    def _irq_info(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, _flags, index, _count = self._need(payload, p.IRQ_INFO, "DEVICE_GET_IRQ_INFO")
        if argsz < p.IRQ_INFO.size:
            raise ProtocolError(errno.EINVAL, f"DEVICE_GET_IRQ_INFO argsz {argsz} < {p.IRQ_INFO.size}")
        flags, count = self.device.irq_info(index)
        return p.IRQ_INFO.pack(p.IRQ_INFO.size, flags, index, count), None

    def _set_irqs(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        argsz, flags, index, start, count = self._need(payload, p.IRQ_SET, "DEVICE_SET_IRQS")
        if argsz < p.IRQ_SET.size or argsz > len(payload):
            raise ProtocolError(errno.EINVAL, f"DEVICE_SET_IRQS argsz {argsz} does not match the {len(payload)}-byte payload")
        data = payload[p.IRQ_SET.size : argsz]
        self.device.set_irqs(flags, index, start, count, data, fds)
        return b"", None

    def _region_read(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        offset, region, count = self._need(payload, p.REGION_ACCESS, "REGION_READ")
        data = self.device.region_read(region, offset, count)
        return p.REGION_ACCESS.pack(offset, region, count) + data, None

    def _region_write(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        offset, region, count = self._need(payload, p.REGION_ACCESS, "REGION_WRITE")
        data = payload[p.REGION_ACCESS.size :]
        if len(data) != count:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE count {count} but {len(data)} data bytes")
        self.device.region_write(region, offset, data)
        return p.REGION_ACCESS.pack(offset, region, count), None

    def _write_multi(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        (n,) = self._need(payload, p.WRITE_MULTI_COUNT, "REGION_WRITE_MULTI")
        if not 0 < n <= p.WRITE_MULTI_MAX:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI wr_cnt {n} is not in 1..{p.WRITE_MULTI_MAX}")
        need = p.WRITE_MULTI_COUNT.size + n * p.WRITE_MULTI_ENTRY.size
        if len(payload) != need:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI of {n} writes is {need} bytes, got {len(payload)}")
        writes = []
        for i in range(n):
            offset, region, count, data = p.WRITE_MULTI_ENTRY.unpack_from(payload, p.WRITE_MULTI_COUNT.size + i * p.WRITE_MULTI_ENTRY.size)
            if not 0 < count <= 8:
                raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI entry {i} count {count} is not in 1..8")
            writes.append((region, offset, data[:count]))
        for region, offset, data in writes:
            self.device.region_write(region, offset, data)
        return p.WRITE_MULTI_COUNT.pack(n), None

    def _reset(self, hdr: Header, payload: bytes, fds: list[int]) -> Result:
        log.info("client %d: device reset", self.number)
        self.device.function_reset()
        return b"", None

    _handlers: dict[int, Callable[[_Connection, Header, bytes, list[int]], Result]] = {
        p.VERSION: _version,
        p.DMA_MAP: _dma_map,
        p.DMA_UNMAP: _dma_unmap,
        p.DEVICE_GET_INFO: _device_info,
        p.DEVICE_GET_REGION_INFO: _region_info,
        p.DEVICE_GET_REGION_IO_FDS: _region_io_fds,
        p.DEVICE_GET_IRQ_INFO: _irq_info,
        p.DEVICE_SET_IRQS: _set_irqs,
        p.REGION_READ: _region_read,
        p.REGION_WRITE: _region_write,
        p.REGION_WRITE_MULTI: _write_multi,
        p.DEVICE_RESET: _reset,
    }

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Shut the socket down; the threads then tear the connection down."""
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _teardown(self) -> None:
        self.closed.set()
        self.device.unblock_interrupts()
        try:
            self.device.function_reset()
        except NvmeFastError:
            log.exception("client %d: reset after disconnect failed", self.number)
        self.device.detach()
        self.dma.unmap_all()
        try:
            self.sock.close()
        except OSError:
            pass
        log.info("client %d: disconnected; device reset, mappings and interrupts dropped", self.number)
        log.info("client %d: %d messages (%d doorbells run on the reader): %s", self.number,
                 sum(self.messages.values()), self.inline_doorbells,
                 ", ".join(f"{name} {n}" for name, n in self.messages.most_common()))
        c = self.controller.counters()
        log.info("controller: %s", ", ".join(f"{k} {c[k]}" for k in (
            "io_commands", "interrupts", "batches", "worker_sleeps", "worker_wakeups", "doorbell_writes")
            if k in c))
        self.server._connection_done(self)



def _doorbell_write(hdr: Header, payload: bytes) -> bool:
    """True for a REGION_WRITE (or REGION_WRITE_MULTI) all into BAR0's doorbells."""
    if hdr.command == p.REGION_WRITE:
        if len(payload) < p.REGION_ACCESS.size:
            return False
        offset, region, _count = p.REGION_ACCESS.unpack_from(payload)
        return bool(region == 0 and offset >= DOORBELLS)
    if hdr.command == p.REGION_WRITE_MULTI:
        if len(payload) < p.WRITE_MULTI_COUNT.size:
            return False
        (n,) = p.WRITE_MULTI_COUNT.unpack_from(payload)
        if not 0 < n <= p.WRITE_MULTI_MAX or len(payload) != p.WRITE_MULTI_COUNT.size + n * p.WRITE_MULTI_ENTRY.size:
            return False
        return all(
            region == 0 and offset >= DOORBELLS
            for offset, region, _c, _d in (
                p.WRITE_MULTI_ENTRY.unpack_from(payload, p.WRITE_MULTI_COUNT.size + i * p.WRITE_MULTI_ENTRY.size)
                for i in range(n)
            )
        )
    return False

class VfioUserServer:
    """Serve an NVMe controller to vfio-user clients on the UNIX socket ``path``.

    ``config`` builds the controller (or pass a built ``controller``, which
    the server then owns and closes). ``doorbells="trap"`` (the default)
    offers no mapping of the doorbells: a doorbell write is a REGION_WRITE
    message that wakes a worker, and idle workers sleep until one arrives.
    A guest with shadow doorbells (Linux) sends one only when a worker went
    to sleep: while workers poll, EventIdx keeps its writes in memory.
    ``doorbells="mmap"`` offers BAR0's doorbells as a sparse-mmap area of
    the controller's doorbell page, so the client's doorbell writes arrive
    with no message, and nothing wakes a sleeping worker: idle workers scan
    the page every ``doorbell_scan_us`` (backing off to 16x). It suits a
    polling client that does not use shadow doorbells (SPDK's driver, the
    `nvmefast bench --vfio-user` client). Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: ControllerConfig | None = None,
        *,
        controller: Controller | None = None,
        doorbells: str = "trap",
        doorbell_scan_us: int = 100,
    ) -> None:
        if doorbells not in DOORBELL_MODES:
            raise ConfigError(f"doorbells must be one of {DOORBELL_MODES}, got {doorbells!r}")
        if config is not None and controller is not None:
            raise ConfigError("pass either config or controller, not both")
        if not isinstance(doorbell_scan_us, int) or not 1 <= doorbell_scan_us <= 1_000_000:
            raise ConfigError(f"doorbell_scan_us must be an int in 1..1000000, got {doorbell_scan_us!r}")
        self.path = os.fspath(path)
        if len(self.path.encode()) >= 108:
            raise ConfigError(f"socket path {self.path!r} is longer than a UNIX socket address allows (107 bytes)")
        self.doorbells = doorbells
        self.controller = controller if controller is not None else Controller(config)
        self.doorbell_scan_us = doorbell_scan_us
        self.first_message_timeout = p.FIRST_MESSAGE_TIMEOUT
        """Seconds a new client has to send its first whole message before it is disconnected."""
        self.connections = 0
        """Clients accepted so far."""
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._current: _Connection | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._stop_requested = False

    def __enter__(self) -> VfioUserServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Bind and listen on the socket and serve clients on a background thread."""
        if self._listener is not None:
            raise StateError("the server is already started")
        if self.controller.closed:
            raise StateError("the server was stopped; build a new one")
        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ConfigError(f"{self.path} exists and is not a socket; choose another --socket path")
            if socket_alive(self.path):
                raise ConfigError(f"{self.path} is in use by a running server; choose another --socket path")
            os.unlink(self.path)  # a stale socket from a server that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            listener.listen(1)
        except OSError as e:
            listener.close()
            raise ConfigError(f"cannot listen on {self.path}: {e.strerror}") from e
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name="vfio-user-accept", daemon=True)
        self._acceptor.start()
        log.info("listening on %s (doorbells %s)", self.path, self.doorbells)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # stop() closed the listener
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                # One client at a time: the next waits in the backlog.
                while self._current is not None and not self._stopping:
                    self._idle.wait()
                if self._stopping:
                    sock.close()
                    return
                if self.doorbells == "mmap":
                    # The client may map the doorbell page: nothing wakes a worker then.
                    self.controller.set_doorbell_scan(self.doorbell_scan_us)
                self.connections += 1
                conn = _Connection(self, sock, self.connections)
                # Started under the lock: stop() joins the current
                # connection's threads, which must have started by then.
                conn.start()
                self._current = conn
            log.info("client %d connected", conn.number)
            with self._lock:
                # One client at a time: one that connects and never completes
                # a message would hold the server for ever.
                silent_until: float | None = time.monotonic() + self.first_message_timeout
                while self._current is conn and not self._stopping:
                    if conn.spoke or silent_until is None:
                        self._idle.wait()
                    elif (left := silent_until - time.monotonic()) > 0:
                        self._idle.wait(left)
                    else:
                        log.warning("client %d sent no message within %g s; closing the connection",
                                    conn.number, self.first_message_timeout)
                        conn.close()
                        silent_until = None

    def _connection_done(self, conn: _Connection) -> None:
        if not self.controller.closed:
            self.controller.set_doorbell_scan(0)  # no client, no page writes: sleep
        with self._lock:
            if self._current is conn:
                self._current = None
            self._idle.notify_all()

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler); :meth:`stop` still has to run."""
        self._stop_requested = True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` (True) or ``timeout`` seconds pass (False)."""
        # Polls the flag: a signal handler cannot take the lock.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._stopping or self._stop_requested):
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True

    def stop(self) -> None:
        """Disconnect the client, stop listening, remove the socket and close the controller."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            conn = self._current
            self._idle.notify_all()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if conn is not None:
            conn.close()
            conn.reader.join(5)
            conn.handler.join(5)
        if self._acceptor is not None:
            self._acceptor.join(5)
        if self._listener is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.controller.close()
        log.info("stopped")


def socket_alive(path: str) -> bool:
    """Whether a server accepts connections on the UNIX socket at ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()
