"""The vfio-user wire format (QEMU ``docs/interop/vfio-user.rst``, version 0.1).

Every message is a 16-byte header followed by a command-specific payload,
all little endian; file descriptors travel beside it as ``SCM_RIGHTS``. This
module holds the constants (vfio-user's and the Linux VFIO ones it reuses),
the header and payload layouts, and the socket framing. It knows nothing of
NVMe.
"""

from __future__ import annotations

import array
import dataclasses
import errno
import os
import socket
import struct

__all__ = [
    "HEADER",
    "Header",
    "MessageError",
    "ProtocolError",
    "recv_message",
    "send_message",
]

# -- header ------------------------------------------------------------------------

HEADER = struct.Struct("<HHIII")
"""msg_id u16, command u16, message_size u32 (header included), flags u32, error u32."""

FLAG_TYPE_MASK = 0xF
TYPE_COMMAND = 0
TYPE_REPLY = 1
FLAG_NO_REPLY = 1 << 4
FLAG_ERROR = 1 << 5

# -- commands ----------------------------------------------------------------------

VERSION = 1
DMA_MAP = 2
DMA_UNMAP = 3
DEVICE_GET_INFO = 4
DEVICE_GET_REGION_INFO = 5
DEVICE_GET_REGION_IO_FDS = 6
DEVICE_GET_IRQ_INFO = 7
DEVICE_SET_IRQS = 8
REGION_READ = 9
REGION_WRITE = 10
DMA_READ = 11
DMA_WRITE = 12
DEVICE_RESET = 13
DIRTY_PAGES = 14
REGION_WRITE_MULTI = 15
DEVICE_FEATURE = 16
MIG_DATA_READ = 17
MIG_DATA_WRITE = 18

COMMAND_NAMES = {
    VERSION: "VERSION",
    DMA_MAP: "DMA_MAP",
    DMA_UNMAP: "DMA_UNMAP",
    DEVICE_GET_INFO: "DEVICE_GET_INFO",
    DEVICE_GET_REGION_INFO: "DEVICE_GET_REGION_INFO",
    DEVICE_GET_REGION_IO_FDS: "DEVICE_GET_REGION_IO_FDS",
    DEVICE_GET_IRQ_INFO: "DEVICE_GET_IRQ_INFO",
    DEVICE_SET_IRQS: "DEVICE_SET_IRQS",
    REGION_READ: "REGION_READ",
    REGION_WRITE: "REGION_WRITE",
    DMA_READ: "DMA_READ",
    DMA_WRITE: "DMA_WRITE",
    DEVICE_RESET: "DEVICE_RESET",
    DIRTY_PAGES: "DIRTY_PAGES",
    REGION_WRITE_MULTI: "REGION_WRITE_MULTI",
    DEVICE_FEATURE: "DEVICE_FEATURE",
    MIG_DATA_READ: "MIG_DATA_READ",
    MIG_DATA_WRITE: "MIG_DATA_WRITE",
}

VERSION_MAJOR = 0
VERSION_MINOR = 1

# -- payloads ----------------------------------------------------------------------

VERSION_HEAD = struct.Struct("<HH")  # major, minor; then NUL-terminated JSON
DMA_MAP_ARGS = struct.Struct("<IIQQQ")  # argsz, flags, offset, address, size
DMA_UNMAP_ARGS = struct.Struct("<IIQQ")  # argsz, flags, address, size
DEVICE_INFO = struct.Struct("<IIII")  # argsz, flags, num_regions, num_irqs
REGION_INFO = struct.Struct("<IIIIQQ")  # argsz, flags, index, cap_offset, size, offset
IRQ_INFO = struct.Struct("<IIII")  # argsz, flags, index, count
IRQ_SET = struct.Struct("<IIIII")  # argsz, flags, index, start, count
REGION_ACCESS = struct.Struct("<QII")  # offset, region, count; then data
DMA_ACCESS = struct.Struct("<QQ")  # address, count; then data (DMA_READ reply, DMA_WRITE request)
"""The spec's layout, which QEMU 11.1 speaks too. (QEMU 10.x's
``VFIOUserDMARW`` had a u32 count with the data at payload byte 12: a
server speaking that layout to QEMU 11 corrupts guest memory by 4 bytes.)"""
WRITE_MULTI_COUNT = struct.Struct("<Q")  # wr_cnt
WRITE_MULTI_ENTRY = struct.Struct("<QII8s")  # offset, region, count, data[8]
REGION_IO_FDS = struct.Struct("<IIII")  # argsz, flags, index, count

CAP_HEADER = struct.Struct("<HHI")  # id, version, next
SPARSE_MMAP_HEAD = struct.Struct("<II")  # nr_areas, reserved
SPARSE_MMAP_AREA = struct.Struct("<QQ")  # offset, size

WRITE_MULTI_MAX = 200
"""Largest wr_cnt a REGION_WRITE_MULTI may carry (QEMU's VFIO_USER_MULTI_MAX)."""

# DMA_MAP / DMA_UNMAP flags
DMA_MAP_FLAG_READ = 1 << 0
DMA_MAP_FLAG_WRITE = 1 << 1
DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
DMA_UNMAP_FLAG_ALL = 1 << 1

# -- the Linux VFIO constants vfio-user reuses ------------------------------------------

DEVICE_FLAGS_RESET = 1 << 0
DEVICE_FLAGS_PCI = 1 << 1

REGION_INFO_FLAG_READ = 1 << 0
REGION_INFO_FLAG_WRITE = 1 << 1
REGION_INFO_FLAG_MMAP = 1 << 2
REGION_INFO_FLAG_CAPS = 1 << 3
REGION_INFO_CAP_SPARSE_MMAP = 1

PCI_BAR0_REGION_INDEX = 0
PCI_BAR5_REGION_INDEX = 5
PCI_ROM_REGION_INDEX = 6
PCI_CONFIG_REGION_INDEX = 7
PCI_VGA_REGION_INDEX = 8
PCI_NUM_REGIONS = 9

PCI_INTX_IRQ_INDEX = 0
PCI_MSI_IRQ_INDEX = 1
PCI_MSIX_IRQ_INDEX = 2
PCI_ERR_IRQ_INDEX = 3
PCI_REQ_IRQ_INDEX = 4
PCI_NUM_IRQS = 5

IRQ_INFO_EVENTFD = 1 << 0
IRQ_INFO_MASKABLE = 1 << 1
IRQ_INFO_AUTOMASKED = 1 << 2
IRQ_INFO_NORESIZE = 1 << 3

IRQ_SET_DATA_NONE = 1 << 0
IRQ_SET_DATA_BOOL = 1 << 1
IRQ_SET_DATA_EVENTFD = 1 << 2
IRQ_SET_ACTION_MASK = 1 << 3
IRQ_SET_ACTION_UNMASK = 1 << 4
IRQ_SET_ACTION_TRIGGER = 1 << 5
IRQ_SET_DATA_TYPE_MASK = IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD
IRQ_SET_ACTION_TYPE_MASK = IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER

MAX_MESSAGE_SIZE = HEADER.size + REGION_ACCESS.size + (1 << 20)
"""The largest message accepted: a REGION/DMA access of max_data_xfer_size."""
MAX_DATA_XFER = 1 << 20
MAX_MSG_FDS = 16  # QEMU refuses more than 16
MAX_DMA_MAPS = 65535
"""DMA mappings one client may hold (advertised as max_dma_maps, and enforced)."""
MAX_QUEUED = 64
"""Messages a client may have waiting for the handler thread: past it the
reader stops reading the socket (the client's sends block) until one is
done, so a client that sends without waiting for replies holds at most
this many messages (each at most MAX_MESSAGE_SIZE bytes) in the server."""
FIRST_MESSAGE_TIMEOUT = 10.0
"""Seconds a new connection has to send its first whole message (VERSION):
a client that connects and stays silent (or trickles bytes) would
otherwise hold the server, which serves one client at a time, for ever."""


class ProtocolError(Exception):
    """A request the server refuses: sent back as an error reply with ``errno``."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class MessageError(Exception):
    """The byte stream itself is broken (short, oversized or unframed): the
    connection cannot continue, since the next header's position is unknown.
    ``header`` is the offending message's header when it was read whole (an
    error reply can still name it)."""

    def __init__(self, message: str, header: Header | None = None) -> None:
        super().__init__(message)
        self.header = header


@dataclasses.dataclass
class Header:
    """A decoded message header."""

    msg_id: int
    command: int
    size: int
    flags: int
    error: int

    @property
    def kind(self) -> int:
        """TYPE_COMMAND or TYPE_REPLY."""
        return self.flags & FLAG_TYPE_MASK

    @property
    def no_reply(self) -> bool:
        """The sender wants no reply (a posted write)."""
        return bool(self.flags & FLAG_NO_REPLY)

    @property
    def name(self) -> str:
        """The command's name, for logs."""
        return COMMAND_NAMES.get(self.command, f"command {self.command}")


def _recv_exact(sock: socket.socket, n: int, fds: list[int]) -> bytes | None:
    """Read exactly ``n`` bytes, collecting any fds that arrive; None on EOF at a message boundary."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        fd_space = socket.CMSG_SPACE(MAX_MSG_FDS * 4)
        data, anc, flags, _ = sock.recvmsg(n - got, fd_space)
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - len(payload) % 4])
                fds.extend(arr)
        if flags & socket.MSG_CTRUNC:
            raise MessageError("control data truncated: too many fds in one message")
        if not data:
            if got == 0 and not chunks:
                return None
            raise MessageError(f"connection closed {got} bytes into a {n}-byte read")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> tuple[Header, bytes, list[int]] | None:
    """Receive one message: header, payload and fds (owned by the caller).

    None when the peer closed the connection between messages. Raises
    :class:`MessageError` when the stream cannot be framed; fds received
    before that are closed.
    """
    fds: list[int] = []
    try:
        raw = _recv_exact(sock, HEADER.size, fds)
        if raw is None:
            return None
        hdr = Header(*HEADER.unpack(raw))
        if hdr.size < HEADER.size:
            # The header was read whole and nothing follows it: the stream is
            # still framed, the receiver refuses this message and goes on.
            return hdr, b"", fds
        if hdr.size > MAX_MESSAGE_SIZE:
            raise MessageError(f"message size {hdr.size} exceeds the {MAX_MESSAGE_SIZE}-byte maximum", hdr)
        payload = b""
        if hdr.size > HEADER.size:
            body = _recv_exact(sock, hdr.size - HEADER.size, fds)
            if body is None:
                raise MessageError("connection closed inside a message")
            payload = body
        return hdr, payload, fds
    except BaseException:
        close_fds(fds)
        raise


def send_message(
    sock: socket.socket,
    msg_id: int,
    command: int,
    payload: bytes = b"",
    *,
    flags: int = TYPE_COMMAND,
    error: int = 0,
    fds: list[int] | None = None,
) -> None:
    """Send one message (fds, borrowed, ride on its first byte)."""
    data = HEADER.pack(msg_id, command, HEADER.size + len(payload), flags, error) + payload
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sent = sock.sendmsg([data], anc)
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def close_fds(fds: list[int]) -> None:
    """Close every fd in ``fds`` (received and not kept), ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def error_reply_code(exc: BaseException) -> int:
    """The errno an error reply carries for ``exc``."""
    if isinstance(exc, ProtocolError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EINVAL
