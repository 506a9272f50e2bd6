"""A raw-socket vfio-user client for tests (the NVMe host on top: ``vfio_user_host``).

Written from QEMU ``docs/interop/vfio-user.rst`` (protocol 0.1) so the tests
check the server against the specification, not against its own tables. The
client plays QEMU's part: it connects to the server's UNIX socket, negotiates
the version, maps its "guest memory" for DMA (memfds passed with SCM_RIGHTS,
or plain buffers the server must reach through VFIO_USER_DMA_READ/WRITE),
reads region and IRQ info, and forwards register accesses as
VFIO_USER_REGION_READ/WRITE. While it waits for a reply it also serves the
server's DMA_READ/DMA_WRITE requests against that memory, as the protocol
requires of a client: in the specification's layout by default, or in
QEMU 10.x's (``dma_layout="qemu"``, see ``DMA_RW_QEMU``).

:class:`VfioUserClient` is the protocol layer (one method per message, plus
:meth:`VfioUserClient.send_raw` for malformed input). :class:`vfio_user_host.NvmeHost` is a
compact NVMe driver that uses only what the protocol offers: it finds the
MSI-X capability by walking PCI config space, finds the doorbells through
BAR0's sparse-mmap capability, and takes completions by CQ phase tag or by
the eventfds it gave the server with SET_IRQS.

All integers on the wire are little endian (the protocol says host endian;
our hosts are x86 and arm64).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import fcntl
import json
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from nvmefast import ControllerConfig
    from nvmefast.vfio_user import VfioUserServer

# -- protocol constants (vfio-user.rst "Commands", "Header") ---------------------

VFIO_USER_VERSION = 1
VFIO_USER_DMA_MAP = 2
VFIO_USER_DMA_UNMAP = 3
VFIO_USER_DEVICE_GET_INFO = 4
VFIO_USER_DEVICE_GET_REGION_INFO = 5
VFIO_USER_DEVICE_GET_REGION_IO_FDS = 6
VFIO_USER_DEVICE_GET_IRQ_INFO = 7
VFIO_USER_DEVICE_SET_IRQS = 8
VFIO_USER_REGION_READ = 9
VFIO_USER_REGION_WRITE = 10
VFIO_USER_DMA_READ = 11
VFIO_USER_DMA_WRITE = 12
VFIO_USER_DEVICE_RESET = 13
VFIO_USER_REGION_WRITE_MULTI = 15

HEADER = struct.Struct("<HHIII")
"""msg_id u16, command u16, message size u32 (header included), flags u32, error u32."""
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 16

FLAG_TYPE_MASK = 0xF
TYPE_COMMAND = 0x0
TYPE_REPLY = 0x1
FLAG_NO_REPLY = 1 << 4
FLAG_ERROR = 1 << 5

# VFIO_USER_DEVICE_GET_INFO flags.
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1

# VFIO PCI region indices (linux/vfio.h).
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9

VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS = 1 << 3
VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1
VFIO_REGION_INFO_CAP_TYPE = 2
REGION_INFO = struct.Struct("<IIIIQQ")
"""argsz, flags, index, cap_offset, size, offset: 32 bytes."""

# VFIO PCI IRQ indices.
VFIO_PCI_INTX_IRQ_INDEX = 0
VFIO_PCI_MSI_IRQ_INDEX = 1
VFIO_PCI_MSIX_IRQ_INDEX = 2
VFIO_PCI_ERR_IRQ_INDEX = 3
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5

VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_IRQ_INFO_MASKABLE = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
VFIO_IRQ_INFO_NORESIZE = 1 << 3

VFIO_IRQ_SET_DATA_NONE = 1 << 0
VFIO_IRQ_SET_DATA_BOOL = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
VFIO_IRQ_SET_ACTION_MASK = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
IRQ_SET = struct.Struct("<IIIII")
"""argsz, flags, index, start, count: 20 bytes, then data."""

DMA_MAP = struct.Struct("<IIQQQ")
"""argsz, flags, offset, address, size: 32 bytes."""
DMA_UNMAP = struct.Struct("<IIQQ")
"""argsz, flags, address, size: 24 bytes."""
VFIO_USER_F_DMA_REGION_READ = 1 << 0
VFIO_USER_F_DMA_REGION_WRITE = 1 << 1

REGION_RW = struct.Struct("<QII")
"""offset u64, region u32, count u32: 16 bytes, then data."""
DMA_RW = struct.Struct("<QQ")
"""address u64, count u64: 16 bytes, then data (DMA_READ/DMA_WRITE, as vfio-user.rst and
libvfio-user lay them out)."""
DMA_RW_QEMU = struct.Struct("<QI")
"""QEMU 10.x's ``VFIOUserDMARW``: address u64, count u32, data from payload byte 12,
and 4 bytes of tail padding (the C struct's size is 16 + 16). Its DMA_READ reply
and the DMA_WRITE request it accepts use this layout, not the specification's;
the DMA_READ request (16 bytes) reads the same either way for counts below 4 GiB."""
DMA_RW_QEMU_PAD = 4
WRITE_MULTI_ENTRY = struct.Struct("<QII8s")
"""offset u64, region u32, count u32, data 8 bytes: one write of a REGION_WRITE_MULTI."""

MAX_FDS = 16
PAGE_SIZE = 4096


# -- errors --------------------------------------------------------------------------


class VfioUserError(Exception):
    """The server answered a command with an error reply."""

    def __init__(self, command: int, error: int) -> None:
        self.command = command
        self.errno = error
        name = errno_mod.errorcode.get(error, str(error))
        super().__init__(f"vfio-user command {command} failed: errno {error} ({name})")


class ConnectionClosed(Exception):
    """The server closed the socket (EOF) while the client expected a message."""


class ProtocolViolation(Exception):
    """The server sent something the specification does not allow."""


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The 16-byte message header."""

    msg_id: int
    command: int
    size: int
    flags: int
    error: int

    @property
    def is_reply(self) -> bool:
        """Type field says reply."""
        return self.flags & FLAG_TYPE_MASK == TYPE_REPLY

    @property
    def is_error(self) -> bool:
        """Error bit set (the error field is then valid, possibly 0)."""
        return bool(self.flags & FLAG_ERROR)

    def pack(self) -> bytes:
        """Encode the header."""
        return HEADER.pack(self.msg_id, self.command, self.size, self.flags, self.error)


@dataclass
class Message:
    """One message received from the server: header, payload and any fds passed with it."""

    header: Header
    payload: bytes
    fds: list[int] = field(default_factory=list)


@dataclass
class Reply:
    """The reply to a command: its payload, the fds that came with it and the errno.

    ``error`` is the header's error field when the Error flag is set, else 0;
    ``failed`` is the Error flag itself (the spec allows errno 0 with it).
    """

    payload: bytes
    fds: list[int]
    error: int
    failed: bool
    header: Header

    def __iter__(self) -> Iterator[object]:
        # (payload, fds, error) unpacking, as the protocol layer is usually used.
        return iter((self.payload, self.fds, self.error))


def pack_header(msg_id: int, command: int, payload_len: int, flags: int = 0, error: int = 0) -> bytes:
    """A header for a message whose payload is ``payload_len`` bytes."""
    return HEADER.pack(msg_id & 0xFFFF, command, HEADER_SIZE + payload_len, flags, error)


# -- client memory -----------------------------------------------------------------------


@dataclass
class MemRegion:
    """One range of the client's memory: a bytearray, or a memfd mapped into the client."""

    iova: int
    size: int
    buf: bytearray | mmap.mmap
    fd: int | None = None

    def contains(self, iova: int, length: int) -> bool:
        """True if ``[iova, iova + length)`` lies inside this region."""
        return self.iova <= iova and iova + length <= self.iova + self.size


class ClientMemory:
    """The client's "guest memory": IOVA ranges the server may DMA into.

    The same memory is reached by the server either through the memfd (when
    the region was DMA_MAPped with it) or through DMA_READ/DMA_WRITE messages
    that :class:`VfioUserClient` serves from here.
    """

    def __init__(self) -> None:
        self.regions: dict[int, MemRegion] = {}

    def add_memfd(self, iova: int, size: int, *, sealed: bool = False) -> MemRegion:
        """A memfd of ``size`` bytes mapped into this process, at ``iova`` (with ``sealed``,
        sealed against resizing, as QEMU's memory-backend-memfd seals guest RAM)."""
        fd = os.memfd_create("vfio-user-client-guest", os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealed else 0))
        try:
            os.ftruncate(fd, size)
            if sealed:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return self._add(MemRegion(iova, size, buf, fd))

    def add_buffer(self, iova: int, size: int) -> MemRegion:
        """Plain process memory (no fd): the server can reach it only by DMA_READ/WRITE."""
        return self._add(MemRegion(iova, size, bytearray(size)))

    def _add(self, region: MemRegion) -> MemRegion:
        for other in self.regions.values():
            if region.iova < other.iova + other.size and other.iova < region.iova + region.size:
                self._release(region)
                raise ValueError(f"client memory at {region.iova:#x} overlaps {other.iova:#x}")
        self.regions[region.iova] = region
        return region

    @staticmethod
    def _release(region: MemRegion) -> None:
        if isinstance(region.buf, mmap.mmap):
            region.buf.close()
        if region.fd is not None:
            os.close(region.fd)

    def find(self, iova: int, length: int) -> MemRegion | None:
        """The region holding all of ``[iova, iova + length)``, or None."""
        for region in self.regions.values():
            if region.contains(iova, length):
                return region
        return None

    def read(self, iova: int, length: int) -> bytes:
        """Bytes at ``iova``; raises ValueError outside every region."""
        region = self.find(iova, length)
        if region is None:
            raise ValueError(f"read of {length} bytes at {iova:#x}: not client memory")
        start = iova - region.iova
        return bytes(region.buf[start : start + length])

    def write(self, iova: int, data: bytes) -> None:
        """Store ``data`` at ``iova``; raises ValueError outside every region."""
        region = self.find(iova, len(data))
        if region is None:
            raise ValueError(f"write of {len(data)} bytes at {iova:#x}: not client memory")
        start = iova - region.iova
        region.buf[start : start + len(data)] = data

    def close(self) -> None:
        """Unmap and close every region."""
        regions, self.regions = list(self.regions.values()), {}
        for region in regions:
            self._release(region)


# -- region and IRQ info -----------------------------------------------------------------------


@dataclass(frozen=True)
class SparseArea:
    """One mmappable area of a region (offset relative to the region)."""

    offset: int
    size: int


@dataclass
class RegionInfo:
    """A VFIO_USER_DEVICE_GET_REGION_INFO reply, with its capabilities parsed."""

    index: int
    flags: int
    size: int
    offset: int
    argsz: int
    cap_offset: int
    sparse_areas: list[SparseArea] | None = None
    """Areas of a VFIO_REGION_INFO_CAP_SPARSE_MMAP capability; None without one."""
    cap_type: tuple[int, int] | None = None
    """(type, subtype) of a VFIO_REGION_INFO_CAP_TYPE capability."""
    caps: list[tuple[int, int, bytes]] = field(default_factory=list)
    """Every capability as (id, version, body)."""
    fd: int | None = None
    """The fd sent with the reply (owned by the client; closed with it)."""
    raw: bytes = b""

    @property
    def mappable(self) -> bool:
        """VFIO_REGION_INFO_FLAG_MMAP."""
        return bool(self.flags & VFIO_REGION_INFO_FLAG_MMAP)


@dataclass(frozen=True)
class IrqInfo:
    """A VFIO_USER_DEVICE_GET_IRQ_INFO reply."""

    index: int
    flags: int
    count: int


@dataclass(frozen=True)
class DeviceInfo:
    """A VFIO_USER_DEVICE_GET_INFO reply."""

    flags: int
    num_regions: int
    num_irqs: int
    argsz: int


def parse_region_caps(raw: bytes, first: int) -> tuple[list[tuple[int, int, bytes]], str | None]:
    """Walk the capability chain of a region info reply.

    Offsets are relative to the start of the region info structure; ``next``
    0 ends the chain. Returns the capabilities and a description of the first
    malformation met (None if the chain is well formed).
    """
    caps: list[tuple[int, int, bytes]] = []
    seen: set[int] = set()
    offset = first
    while offset:
        if offset in seen:
            return caps, f"capability chain loops at {offset:#x}"
        seen.add(offset)
        if offset < REGION_INFO.size or offset + 8 > len(raw):
            return caps, f"capability at {offset:#x} outside the {len(raw)}-byte reply"
        cap_id, version, nxt = struct.unpack_from("<HHI", raw, offset)
        end = nxt if nxt > offset else len(raw)
        caps.append((cap_id, version, raw[offset + 8 : end]))
        offset = nxt
    return caps, None


# -- the client --------------------------------------------------------------------------------


class VfioUserClient:
    """A vfio-user client over a connected UNIX stream socket.

    Commands are sent synchronously: each method sends one command and waits
    for the reply with the same message ID, serving any DMA_READ/DMA_WRITE
    the server sends meanwhile. Error replies raise :class:`VfioUserError`
    unless ``check=False`` is passed to :meth:`request`. Every socket
    operation times out after ``timeout`` seconds, so a server that hangs
    fails a test quickly instead of hanging it.
    """

    def __init__(
        self, path: str, *, timeout: float = 5.0, memory: ClientMemory | None = None, dma_layout: str = "spec"
    ) -> None:
        if dma_layout not in ("qemu", "spec"):
            raise ValueError(f"dma_layout {dma_layout!r}: 'qemu' or 'spec'")
        self.dma_layout = dma_layout
        """How DMA_READ replies and DMA_WRITE requests are laid out: "spec" (vfio-user.rst,
        libvfio-user; the default) or "qemu" (QEMU 10.x's vfio-user-pci)."""
        self.path = path
        self.timeout = timeout
        self._owns_memory = memory is None
        self.memory = memory if memory is not None else ClientMemory()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self._next_id = 1
        self._owned_fds: list[int] = []
        self.dma_reads = 0
        """DMA_READ requests served."""
        self.dma_writes = 0
        """DMA_WRITE requests served."""
        self.dma_errors = 0
        """DMA requests answered with an error (outside client memory)."""
        self.unexpected: list[Message] = []
        """Messages that were neither our reply nor a DMA request (kept for tests to inspect)."""
        self.server_version: tuple[int, int, dict[str, object]] | None = None

    # lifecycle

    def close(self) -> None:
        """Close the socket, every fd the server sent, and the memory if we created it."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._owns_memory:
            self.memory.close()
        fds, self._owned_fds = self._owned_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> VfioUserClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # framing

    def new_id(self) -> int:
        """A fresh message ID."""
        msg_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFF or 1
        return msg_id

    def send_raw(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send ``data`` as is (for malformed-message tests), with ``fds`` as SCM_RIGHTS."""
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            sent = self.sock.sendmsg([data], ancillary)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def send(
        self,
        command: int,
        payload: bytes = b"",
        fds: Sequence[int] = (),
        *,
        no_reply: bool = False,
        flags: int = TYPE_COMMAND,
        msg_id: int | None = None,
        error: int = 0,
    ) -> int:
        """Send one well-framed message; returns its message ID."""
        if msg_id is None:
            msg_id = self.new_id()
        if no_reply:
            flags |= FLAG_NO_REPLY
        self.send_raw(pack_header(msg_id, command, len(payload), flags, error) + payload, fds)
        return msg_id

    def _recv_exact(self, length: int, fds: list[int]) -> bytes:
        chunks: list[bytes] = []
        remaining = length
        space = socket.CMSG_SPACE(MAX_FDS * 4)
        while remaining:
            data, ancdata, msg_flags, _ = self.sock.recvmsg(remaining, space)
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(cdata) // 4
                    received = list(struct.unpack(f"{count}i", cdata[: count * 4]))
                    fds.extend(received)
                    self._owned_fds.extend(received)
            if msg_flags & socket.MSG_CTRUNC:
                raise ProtocolViolation(f"server sent more than {MAX_FDS} fds in one message")
            if not data:
                raise ConnectionClosed(
                    f"server closed the connection ({length - remaining} of {length} bytes received)"
                )
            chunks.append(data)
            remaining -= len(data)
        return b"".join(chunks)

    def recv_message(self) -> Message:
        """Receive one whole message (header, payload, fds)."""
        fds: list[int] = []
        header = Header(*HEADER.unpack(self._recv_exact(HEADER_SIZE, fds)))
        if header.size < HEADER_SIZE:
            raise ProtocolViolation(f"server message size {header.size} is smaller than the header")
        payload = self._recv_exact(header.size - HEADER_SIZE, fds) if header.size > HEADER_SIZE else b""
        return Message(header, payload, fds)

    def wait_reply(self, msg_id: int, command: int | None = None) -> Message:
        """Receive until the reply to ``msg_id`` arrives, serving server requests meanwhile."""
        while True:
            msg = self.recv_message()
            if not msg.header.is_reply:
                self._serve(msg)
                continue
            if msg.header.msg_id == msg_id:
                if command is not None and msg.header.command != command:
                    raise ProtocolViolation(
                        f"reply to message {msg_id} names command {msg.header.command}, sent {command}"
                    )
                return msg
            self.unexpected.append(msg)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve server requests that arrive within ``timeout`` seconds; returns how many."""
        served = 0
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                return served
            msg = self.recv_message()
            if msg.header.is_reply:
                self.unexpected.append(msg)
            else:
                self._serve(msg)
                served += 1

    def _serve(self, msg: Message) -> None:
        """Answer one server->client command (DMA_READ/DMA_WRITE) in ``dma_layout``."""
        hdr = msg.header
        for fd in msg.fds:
            self._close_owned(fd)
        if hdr.command not in (VFIO_USER_DMA_READ, VFIO_USER_DMA_WRITE) or len(msg.payload) < DMA_RW.size:
            self.unexpected.append(msg)
            self._dma_error(hdr, errno_mod.EINVAL)
            return
        qemu = self.dma_layout == "qemu"
        if qemu:
            address, count = DMA_RW_QEMU.unpack_from(msg.payload)
            data_at = DMA_RW_QEMU.size
        else:
            address, count = DMA_RW.unpack_from(msg.payload)
            data_at = DMA_RW.size
        if hdr.command == VFIO_USER_DMA_READ:
            try:
                data = self.memory.read(address, count)
            except ValueError:
                self._dma_error(hdr, errno_mod.EFAULT)
                return
            self.dma_reads += 1
            if hdr.flags & FLAG_NO_REPLY:
                return
            if qemu:
                reply = DMA_RW_QEMU.pack(address, count) + data + bytes(DMA_RW_QEMU_PAD)
            else:
                reply = DMA_RW.pack(address, count) + data
            self.send(VFIO_USER_DMA_READ, reply, flags=TYPE_REPLY, msg_id=hdr.msg_id)
            return
        # DMA_WRITE: QEMU accepts count up to the message's data (it has 4
        # bytes of tail padding); the spec's layout has exactly count bytes.
        available = len(msg.payload) - DMA_RW.size
        if count > available or (not qemu and count != available):
            self._dma_error(hdr, errno_mod.E2BIG if qemu else errno_mod.EINVAL)
            return
        try:
            self.memory.write(address, msg.payload[data_at : data_at + count])
        except ValueError:
            self._dma_error(hdr, errno_mod.EFAULT)
            return
        self.dma_writes += 1
        if hdr.flags & FLAG_NO_REPLY:
            return
        # QEMU answers with the header alone; the spec's reply echoes address and count.
        self.send(VFIO_USER_DMA_WRITE, b"" if qemu else DMA_RW.pack(address, count),
                  flags=TYPE_REPLY, msg_id=hdr.msg_id)

    def _dma_error(self, hdr: Header, error: int) -> None:
        self.dma_errors += 1
        if not hdr.flags & FLAG_NO_REPLY:
            self.send(hdr.command, b"", flags=TYPE_REPLY | FLAG_ERROR, msg_id=hdr.msg_id, error=error)

    def _close_owned(self, fd: int) -> None:
        if fd in self._owned_fds:
            self._owned_fds.remove(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def request(
        self, command: int, payload: bytes = b"", fds: Sequence[int] = (), *, check: bool = True
    ) -> Reply:
        """Send a command and wait for its reply.

        Raises :class:`VfioUserError` for an error reply when ``check``.
        """
        msg_id = self.send(command, payload, fds)
        msg = self.wait_reply(msg_id, command)
        failed = msg.header.is_error
        reply = Reply(msg.payload, msg.fds, msg.header.error if failed else 0, failed, msg.header)
        if failed and check:
            raise VfioUserError(command, msg.header.error)
        return reply

    # commands

    def negotiate(self, major: int = 0, minor: int = 1, caps: dict[str, object] | None = None) -> Reply:
        """VFIO_USER_VERSION with JSON capabilities; records the server's answer."""
        if caps is None:
            caps = {"capabilities": {"max_msg_fds": MAX_FDS, "max_data_xfer_size": 1 << 20,
                                     "pgsizes": PAGE_SIZE, "write_multiple": True}}
        payload = struct.pack("<HH", major, minor) + json.dumps(caps).encode() + b"\0"
        reply = self.request(VFIO_USER_VERSION, payload)
        if len(reply.payload) < 4:
            raise ProtocolViolation(f"VERSION reply of {len(reply.payload)} bytes")
        smajor, sminor = struct.unpack_from("<HH", reply.payload)
        text = reply.payload[4:].rstrip(b"\0")
        server_caps: dict[str, object] = json.loads(text) if text else {}
        self.server_version = (smajor, sminor, server_caps)
        return reply

    def dma_map(
        self,
        iova: int,
        size: int,
        fd: int | None = None,
        offset: int = 0,
        flags: int = VFIO_USER_F_DMA_REGION_READ | VFIO_USER_F_DMA_REGION_WRITE,
        *,
        check: bool = True,
    ) -> Reply:
        """VFIO_USER_DMA_MAP of ``[iova, iova + size)``, backed by ``fd`` at ``offset`` if given."""
        payload = DMA_MAP.pack(DMA_MAP.size, flags, offset, iova, size)
        return self.request(VFIO_USER_DMA_MAP, payload, () if fd is None else (fd,), check=check)

    def map_region(self, region: MemRegion, *, with_fd: bool = True, check: bool = True) -> Reply:
        """DMA_MAP one of our memory regions, passing its memfd unless ``with_fd`` is False."""
        fd = region.fd if with_fd else None
        return self.dma_map(region.iova, region.size, fd, 0, check=check)

    def dma_unmap(self, iova: int, size: int, flags: int = 0, *, check: bool = True) -> Reply:
        """VFIO_USER_DMA_UNMAP of a previous mapping."""
        return self.request(VFIO_USER_DMA_UNMAP, DMA_UNMAP.pack(DMA_UNMAP.size, flags, iova, size),
                            check=check)

    def device_get_info(self) -> DeviceInfo:
        """VFIO_USER_DEVICE_GET_INFO."""
        reply = self.request(VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        if len(reply.payload) < 16:
            raise ProtocolViolation(f"DEVICE_GET_INFO reply of {len(reply.payload)} bytes")
        argsz, flags, num_regions, num_irqs = struct.unpack_from("<IIII", reply.payload)
        return DeviceInfo(flags, num_regions, num_irqs, argsz)

    def region_info_raw(self, index: int, argsz: int = REGION_INFO.size, *, check: bool = True) -> Reply:
        """One VFIO_USER_DEVICE_GET_REGION_INFO exchange, unparsed."""
        return self.request(VFIO_USER_DEVICE_GET_REGION_INFO,
                            REGION_INFO.pack(argsz, 0, index, 0, 0, 0), check=check)

    def region_info(self, index: int) -> RegionInfo:
        """Region info with capabilities: asks with the bare structure size, and if the
        reply's argsz says more is needed (capabilities), asks again with that argsz."""
        reply = self.region_info_raw(index)
        argsz = struct.unpack_from("<I", reply.payload)[0] if len(reply.payload) >= 4 else 0
        if argsz > REGION_INFO.size:
            for fd in reply.fds:
                self._close_owned(fd)
            reply = self.region_info_raw(index, argsz)
        raw = reply.payload
        if len(raw) < REGION_INFO.size:
            raise ProtocolViolation(f"REGION_INFO reply of {len(raw)} bytes")
        argsz, flags, rindex, cap_offset, size, offset = REGION_INFO.unpack_from(raw)
        info = RegionInfo(rindex, flags, size, offset, argsz, cap_offset, raw=raw)
        if len(reply.fds) > 1:
            raise ProtocolViolation(f"REGION_INFO({index}) sent {len(reply.fds)} fds")
        info.fd = reply.fds[0] if reply.fds else None
        if flags & VFIO_REGION_INFO_FLAG_CAPS:
            caps, problem = parse_region_caps(raw, cap_offset)
            if problem:
                raise ProtocolViolation(f"REGION_INFO({index}): {problem}")
            info.caps = caps
            for cap_id, _version, body in caps:
                if cap_id == VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                    nr_areas = struct.unpack_from("<I", body)[0]
                    info.sparse_areas = [
                        SparseArea(*struct.unpack_from("<QQ", body, 8 + 16 * i)) for i in range(nr_areas)
                    ]
                elif cap_id == VFIO_REGION_INFO_CAP_TYPE:
                    info.cap_type = struct.unpack_from("<II", body)
        return info

    def irq_info(self, index: int) -> IrqInfo:
        """VFIO_USER_DEVICE_GET_IRQ_INFO."""
        reply = self.request(VFIO_USER_DEVICE_GET_IRQ_INFO, struct.pack("<IIII", 16, 0, index, 0))
        if len(reply.payload) < 16:
            raise ProtocolViolation(f"IRQ_INFO reply of {len(reply.payload)} bytes")
        _argsz, flags, rindex, count = struct.unpack_from("<IIII", reply.payload)
        return IrqInfo(rindex, flags, count)

    def set_irqs(
        self,
        index: int,
        start: int,
        count: int,
        action: int,
        *,
        eventfds: Sequence[int | None] | None = None,
        bools: Sequence[bool] | None = None,
        check: bool = True,
    ) -> Reply:
        """VFIO_USER_DEVICE_SET_IRQS.

        ``eventfds`` selects DATA_EVENTFD: the fds go as SCM_RIGHTS and argsz
        is the bare 20-byte structure, as QEMU sends it; an all-None list
        sends no fds, which de-assigns. ``bools`` selects DATA_BOOL (one byte
        each in the data field); neither selects DATA_NONE.
        """
        data = b""
        fds: list[int] = []
        if eventfds is not None:
            flags = VFIO_IRQ_SET_DATA_EVENTFD | action
            given = [fd for fd in eventfds if fd is not None]
            if given and len(given) != len(eventfds):
                raise ValueError("send all eventfds or none in one SET_IRQS (as QEMU does)")
            fds = given
        elif bools is not None:
            flags = VFIO_IRQ_SET_DATA_BOOL | action
            data = bytes(int(b) for b in bools)
        else:
            flags = VFIO_IRQ_SET_DATA_NONE | action
        payload = IRQ_SET.pack(IRQ_SET.size + len(data), flags, index, start, count) + data
        return self.request(VFIO_USER_DEVICE_SET_IRQS, payload, fds, check=check)

    def region_read(self, index: int, offset: int, count: int, *, check: bool = True) -> bytes:
        """VFIO_USER_REGION_READ; returns the data (checked against the echoed header)."""
        reply = self.request(VFIO_USER_REGION_READ, REGION_RW.pack(offset, index, count), check=check)
        if reply.failed:
            return b""
        if len(reply.payload) < REGION_RW.size:
            raise ProtocolViolation(f"REGION_READ reply of {len(reply.payload)} bytes")
        roffset, rindex, rcount = REGION_RW.unpack_from(reply.payload)
        data = reply.payload[REGION_RW.size :]
        if (roffset, rindex, rcount) != (offset, index, count) or len(data) != count:
            raise ProtocolViolation(
                f"REGION_READ reply (offset {roffset:#x}, region {rindex}, count {rcount}, "
                f"{len(data)} data bytes) for a read of {count} at {offset:#x} of region {index}"
            )
        return data

    def region_write(
        self, index: int, offset: int, data: bytes, *, no_reply: bool = False, check: bool = True
    ) -> Reply | None:
        """VFIO_USER_REGION_WRITE; with ``no_reply`` the write is posted and None returned."""
        payload = REGION_RW.pack(offset, index, len(data)) + data
        if no_reply:
            self.send(VFIO_USER_REGION_WRITE, payload, no_reply=True)
            return None
        return self.request(VFIO_USER_REGION_WRITE, payload, check=check)

    def read32(self, index: int, offset: int) -> int:
        """A 4-byte little-endian region read."""
        return int.from_bytes(self.region_read(index, offset, 4), "little")

    def write32(self, index: int, offset: int, value: int, *, no_reply: bool = False) -> None:
        """A 4-byte little-endian region write."""
        self.region_write(index, offset, (value & 0xFFFFFFFF).to_bytes(4, "little"), no_reply=no_reply)

    def region_write_multi(
        self, writes: Sequence[tuple[int, int, bytes]], *, wr_cnt: int | None = None, check: bool = True
    ) -> Reply:
        """VFIO_USER_REGION_WRITE_MULTI of (region, offset, data <= 8 bytes) writes.

        ``wr_cnt`` overrides the count field (for bad-count tests).
        """
        body = b"".join(
            WRITE_MULTI_ENTRY.pack(offset, region, len(data), data.ljust(8, b"\0"))
            for region, offset, data in writes
        )
        count = len(writes) if wr_cnt is None else wr_cnt
        return self.request(VFIO_USER_REGION_WRITE_MULTI, struct.pack("<Q", count) + body, check=check)

    def device_reset(self, *, check: bool = True) -> Reply:
        """VFIO_USER_DEVICE_RESET."""
        return self.request(VFIO_USER_DEVICE_RESET, check=check)


def connect(path: str, *, timeout: float = 5.0, negotiate: bool = True, dma_layout: str = "spec") -> VfioUserClient:
    """A client connected to ``path`` and (by default) past version negotiation."""
    client = VfioUserClient(path, timeout=timeout, dma_layout=dma_layout)
    if negotiate:
        try:
            client.negotiate()
        except BaseException:
            client.close()
            raise
    return client
