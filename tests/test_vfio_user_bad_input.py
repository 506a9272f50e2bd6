"""Malformed and invalid vfio-user messages (DESIGN.md, "What bad input
gets": an error reply, the connection survives or closes cleanly, the server
survives).

A request that is well framed but invalid gets an error reply with a
non-zero errno and the same connection keeps working. A broken stream (a
short header, a size field that cannot be framed) may instead close the
connection; either way the next client is served.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from vfio_user_client import (
    DMA_MAP,
    FLAG_ERROR,
    HEADER_SIZE,
    IRQ_SET,
    REGION_INFO,
    REGION_RW,
    TYPE_REPLY,
    VFIO_IRQ_SET_ACTION_MASK,
    VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_USER_DEVICE_GET_INFO,
    VFIO_USER_DEVICE_GET_IRQ_INFO,
    VFIO_USER_DEVICE_GET_REGION_INFO,
    VFIO_USER_DEVICE_SET_IRQS,
    VFIO_USER_DMA_MAP,
    VFIO_USER_DMA_READ,
    VFIO_USER_REGION_READ,
    VFIO_USER_REGION_WRITE,
    VFIO_USER_VERSION,
    Message,
    Reply,
    VfioUserClient,
    connect,
    pack_header,
)
from vfio_user_host import (
    running_server,
    wait_closed_or_reply,
)

pytestmark = pytest.mark.timeout(10)

MSIX = VFIO_PCI_MSIX_IRQ_INDEX


@pytest.fixture
def server_path() -> Iterator[str]:
    with running_server() as (_server, path):
        yield path


@pytest.fixture
def client(server_path: str) -> Iterator[VfioUserClient]:
    with connect(server_path) as c:
        yield c


def assert_error(reply: Reply, *allowed: int) -> None:
    """An error reply with a non-zero errno (one of ``allowed`` if given) and only a header."""
    assert reply.failed, f"expected an error reply, got success with {reply.payload!r}"
    assert reply.error != 0, "the error reply must carry an errno"
    if allowed:
        assert reply.error in allowed, f"errno {reply.error} ({errno.errorcode.get(reply.error)}), want {allowed}"
    assert reply.payload == b"", "an error reply is the header only"


def assert_same_connection_works(client: VfioUserClient) -> None:
    info = client.device_get_info()
    assert info.num_regions >= 9
    assert client.unexpected == [], f"stray messages: {client.unexpected}"


def assert_fresh_connection_works(path: str) -> None:
    with connect(path) as fresh:
        assert fresh.device_get_info().num_regions >= 9


def assert_error_or_close(client: VfioUserClient, msg_id: int | None) -> Message | None:
    """The server either answers with an error (for ``msg_id`` when known) or closes."""
    msg = wait_closed_or_reply(client, 3.0)
    if msg is not None:
        assert msg.header.is_reply and msg.header.is_error, f"expected an error reply, got {msg.header}"
        assert msg.header.error != 0
        if msg_id is not None:
            assert msg.header.msg_id == msg_id
    return msg


def request(client: VfioUserClient, command: int, payload: bytes, fds: tuple[int, ...] = ()) -> Reply:
    return client.request(command, payload, fds, check=False)


# -- framing ----------------------------------------------------------------------------------------


def test_truncated_header_then_close(server_path: str) -> None:
    with connect(server_path) as c:
        c.send_raw(pack_header(c.new_id(), VFIO_USER_DEVICE_GET_INFO, 16)[:10])
        c.sock.shutdown(socket.SHUT_WR)
        assert_error_or_close(c, None)
    assert_fresh_connection_works(server_path)


def test_three_bytes_then_disconnect(server_path: str) -> None:
    # The client vanishes inside a header without half-closing first: the
    # server, which serves one client at a time, must notice and take the next.
    c = connect(server_path)
    c.send_raw(b"\x01\x00\x04")
    c.close()
    assert_fresh_connection_works(server_path)


def test_size_smaller_than_header(server_path: str) -> None:
    with connect(server_path) as c:
        msg_id = c.new_id()
        c.send_raw(struct.pack("<HHIII", msg_id, VFIO_USER_DEVICE_GET_INFO, 8, 0, 0) + b"\0" * 16)
        assert_error_or_close(c, msg_id)
    # The server serves one client at a time: it must have let go of that one.
    assert_fresh_connection_works(server_path)


def test_size_larger_than_sent_then_close(server_path: str) -> None:
    with connect(server_path) as c:
        payload = struct.pack("<IIII", 16, 0, 0, 0)
        c.send_raw(pack_header(c.new_id(), VFIO_USER_DEVICE_GET_INFO, 64)[:16] + payload)
        c.sock.shutdown(socket.SHUT_WR)
        assert_error_or_close(c, None)
    assert_fresh_connection_works(server_path)


def test_absurd_message_size(server_path: str) -> None:
    with connect(server_path) as c:
        msg_id = c.new_id()
        c.send_raw(struct.pack("<HHIII", msg_id, VFIO_USER_REGION_WRITE, 0xFFFF_FFF0, 0, 0))
        # It must not wait for 4 GiB; an error or a close is the answer.
        assert_error_or_close(c, msg_id)
    assert_fresh_connection_works(server_path)


# -- session --------------------------------------------------------------------------------------


def test_command_before_version(server_path: str) -> None:
    c = VfioUserClient(server_path)
    try:
        msg_id = c.send(VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        assert_error_or_close(c, msg_id)
    finally:
        c.close()
    assert_fresh_connection_works(server_path)


def test_version_twice(client: VfioUserClient) -> None:
    payload = struct.pack("<HH", 0, 1) + json.dumps({"capabilities": {}}).encode() + b"\0"
    assert_error(request(client, VFIO_USER_VERSION, payload))
    assert_same_connection_works(client)


@pytest.mark.parametrize("major", [1, 0xFFFF])
def test_version_unsupported_major(server_path: str, major: int) -> None:
    c = VfioUserClient(server_path)
    try:
        msg_id = c.send(VFIO_USER_VERSION, struct.pack("<HH", major, 0) + b"{}\0")
        msg = wait_closed_or_reply(c, 3.0)
        if msg is not None:
            # Either refused, or a reply that must keep the proposed major.
            assert msg.header.msg_id == msg_id
            if not msg.header.is_error:
                assert struct.unpack_from("<H", msg.payload)[0] == major
            else:
                assert msg.header.error != 0
    finally:
        c.close()
    assert_fresh_connection_works(server_path)


@pytest.mark.parametrize("body", [b"{not json\0", b'{"capabilities": 5}\0', b"\xff\xfe\0", b"[1, 2]\0"])
def test_version_with_bad_json(server_path: str, body: bytes) -> None:
    c = VfioUserClient(server_path)
    try:
        msg_id = c.send(VFIO_USER_VERSION, struct.pack("<HH", 0, 1) + body)
        assert_error_or_close(c, msg_id)
    finally:
        c.close()
    assert_fresh_connection_works(server_path)


def test_version_payload_too_short(server_path: str) -> None:
    c = VfioUserClient(server_path)
    try:
        msg_id = c.send(VFIO_USER_VERSION, b"\0")
        assert_error_or_close(c, msg_id)
    finally:
        c.close()
    assert_fresh_connection_works(server_path)


@pytest.mark.parametrize("command", [0, 14, 99, 0xFFFF])
def test_unknown_command(client: VfioUserClient, command: int) -> None:
    assert_error(request(client, command, b"\0" * 16))
    assert_same_connection_works(client)


def test_server_to_client_command_sent_by_client(client: VfioUserClient) -> None:
    # DMA_READ goes server -> client only.
    assert_error(request(client, VFIO_USER_DMA_READ, struct.pack("<QQ", 0, 8)))
    assert_same_connection_works(client)


def test_reply_typed_message_from_client(client: VfioUserClient) -> None:
    stray_id = client.new_id()
    client.send(VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), flags=TYPE_REPLY,
                msg_id=stray_id)
    info = client.device_get_info()  # a later, normal command still works
    assert info.num_regions >= 9
    # No reply with the stray message's ID may have been a successful one: the
    # server must not execute a reply as if it were a command.
    for msg in client.unexpected:
        assert msg.header.msg_id == stray_id
        assert msg.header.is_error and msg.header.error != 0
    assert_same_connection_works_allowing(client, stray_id)


def assert_same_connection_works_allowing(client: VfioUserClient, stray_id: int) -> None:
    client.unexpected = [m for m in client.unexpected if m.header.msg_id != stray_id]
    assert_same_connection_works(client)


def test_command_with_error_flag_set(client: VfioUserClient) -> None:
    # A command that sets the Error flag is malformed (Error is for replies only)
    # or simply executed; it must not kill the connection either way.
    msg_id = client.send(VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), flags=FLAG_ERROR)
    client.wait_reply(msg_id)
    assert_same_connection_works(client)


# -- argsz ------------------------------------------------------------------------------------------


def test_device_info_argsz_too_small(client: VfioUserClient) -> None:
    assert_error(request(client, VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 8, 0, 0, 0)), errno.EINVAL)
    assert_same_connection_works(client)


def test_device_info_payload_short(client: VfioUserClient) -> None:
    assert_error(request(client, VFIO_USER_DEVICE_GET_INFO, struct.pack("<I", 16)))
    assert_same_connection_works(client)


def test_region_info_argsz_too_small(client: VfioUserClient) -> None:
    payload = REGION_INFO.pack(16, 0, VFIO_PCI_BAR0_REGION_INDEX, 0, 0, 0)
    assert_error(request(client, VFIO_USER_DEVICE_GET_REGION_INFO, payload), errno.EINVAL)
    assert_same_connection_works(client)


def test_region_info_small_argsz_reports_needed_size(client: VfioUserClient) -> None:
    # argsz of the bare structure: the reply fits what was asked and says in
    # argsz how much the capabilities need (the client then asks again).
    reply = client.region_info_raw(VFIO_PCI_BAR0_REGION_INDEX, REGION_INFO.size)
    assert len(reply.payload) <= REGION_INFO.size
    argsz = struct.unpack_from("<I", reply.payload)[0]
    full = client.region_info(VFIO_PCI_BAR0_REGION_INDEX)
    assert argsz == full.argsz
    assert len(full.raw) == full.argsz


def test_irq_info_argsz_too_small(client: VfioUserClient) -> None:
    payload = struct.pack("<IIII", 4, 0, MSIX, 0)
    assert_error(request(client, VFIO_USER_DEVICE_GET_IRQ_INFO, payload), errno.EINVAL)
    assert_same_connection_works(client)


@pytest.mark.parametrize("argsz", [0, 16, 31])
def test_dma_map_bad_argsz(client: VfioUserClient, argsz: int) -> None:
    payload = DMA_MAP.pack(argsz, 3, 0, 0x10_0000, 0x1000)
    assert_error(request(client, VFIO_USER_DMA_MAP, payload))
    assert_same_connection_works(client)


def test_set_irqs_argsz_smaller_than_header(client: VfioUserClient) -> None:
    payload = IRQ_SET.pack(8, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, MSIX, 0, 1)
    assert_error(request(client, VFIO_USER_DEVICE_SET_IRQS, payload), errno.EINVAL)
    assert_same_connection_works(client)


# -- regions ----------------------------------------------------------------------------------------


def test_region_info_index_out_of_range(client: VfioUserClient) -> None:
    num = client.device_get_info().num_regions
    for index in (num, num + 1, 0xFFFF_FFFF):
        assert_error(client.region_info_raw(index, check=False), errno.EINVAL)
    assert_same_connection_works(client)


@pytest.mark.parametrize("index", [9, 200, 0xFFFF_FFFF])
def test_region_read_index_out_of_range(client: VfioUserClient, index: int) -> None:
    assert_error(request(client, VFIO_USER_REGION_READ, REGION_RW.pack(0, index, 4)))
    assert_same_connection_works(client)


def test_region_read_past_the_end(client: VfioUserClient) -> None:
    for index in (VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_BAR0_REGION_INDEX):
        size = client.region_info(index).size
        for offset, count in ((size - 2, 4), (size, 4), (0xFFFF_FFFF_FFFF_FFFC, 8), (size - 4, 0x1_0000)):
            reply = request(client, VFIO_USER_REGION_READ, REGION_RW.pack(offset, index, count))
            assert_error(reply)
    assert_same_connection_works(client)


def test_region_write_past_the_end(client: VfioUserClient) -> None:
    size = client.region_info(VFIO_PCI_BAR0_REGION_INDEX).size
    reply = request(client, VFIO_USER_REGION_WRITE,
                    REGION_RW.pack(size - 2, VFIO_PCI_BAR0_REGION_INDEX, 4) + b"\0" * 4)
    assert_error(reply)
    assert_same_connection_works(client)


@pytest.mark.parametrize("count,data_len", [(4, 2), (2, 4), (0x1000, 4)])
def test_region_write_count_disagrees_with_payload(client: VfioUserClient, count: int, data_len: int) -> None:
    payload = REGION_RW.pack(0x24, VFIO_PCI_BAR0_REGION_INDEX, count) + b"\x11" * data_len
    assert_error(request(client, VFIO_USER_REGION_WRITE, payload))
    assert client.read32(VFIO_PCI_BAR0_REGION_INDEX, 0x24) != 0x1111_1111
    assert_same_connection_works(client)


def test_region_read_beyond_max_data_xfer(client: VfioUserClient) -> None:
    payload = REGION_RW.pack(0, VFIO_PCI_BAR0_REGION_INDEX, (1 << 20) + 4096)
    assert_error(request(client, VFIO_USER_REGION_READ, payload))
    assert_same_connection_works(client)


def test_region_write_multi_bad_count(client: VfioUserClient) -> None:
    one = [(VFIO_PCI_BAR0_REGION_INDEX, 0x24, struct.pack("<I", 0x0003_0003))]
    assert_error(client.region_write_multi(one, wr_cnt=3, check=False))
    assert_error(client.region_write_multi(one, wr_cnt=0, check=False))
    assert_error(client.region_write_multi(one * 201, check=False))  # QEMU's maximum is 200
    assert client.read32(VFIO_PCI_BAR0_REGION_INDEX, 0x24) != 0x0003_0003, "a rejected batch wrote"
    assert_same_connection_works(client)


def test_region_write_multi_count_smaller_than_entries_sent(client: VfioUserClient) -> None:
    # The message size must match wr_cnt, as a REGION_WRITE's must match its
    # count: two entries sent with wr_cnt 1 is a malformed message, not "one
    # write and some padding".
    two = [(VFIO_PCI_BAR0_REGION_INDEX, 0x24, struct.pack("<I", 0x0003_0003)),
           (VFIO_PCI_BAR0_REGION_INDEX, 0x28, struct.pack("<I", 0x0000_5000))]
    assert_error(client.region_write_multi(two, wr_cnt=1, check=False), errno.EINVAL)
    assert client.read32(VFIO_PCI_BAR0_REGION_INDEX, 0x24) != 0x0003_0003, "a rejected batch wrote"
    assert_same_connection_works(client)


def test_region_write_multi_entry_larger_than_eight_bytes(client: VfioUserClient) -> None:
    entry = struct.pack("<QII8s", 0x24, VFIO_PCI_BAR0_REGION_INDEX, 16, b"\0" * 8)
    reply = client.request(15, struct.pack("<Q", 1) + entry, check=False)
    assert_error(reply)
    assert_same_connection_works(client)


# -- DMA_MAP ----------------------------------------------------------------------------------------


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("bad-input", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 20)
    yield fd
    os.close(fd)


def test_dma_map_overlapping(client: VfioUserClient, memfd: int) -> None:
    client.dma_map(0x10_0000, 0x10_0000, memfd)
    assert_error(client.dma_map(0x10_0000, 0x10_0000, memfd, check=False), errno.EEXIST)
    assert_error(client.dma_map(0x18_0000, 0x10_0000, memfd, check=False))
    assert_error(client.dma_map(0x0F_F000, 0x2000, memfd, check=False))
    # Without an fd the range overlaps just the same.
    assert_error(client.dma_map(0x10_0000, 0x1000, None, check=False))
    # Adjacent is fine.
    client.dma_map(0x20_0000, 0x1000, memfd)
    assert_same_connection_works(client)


@pytest.mark.parametrize("iova,size,offset", [
    (0x10_0001, 0x1000, 0), (0x10_0000, 0x1001, 0), (0x10_0000, 0, 0),
    (0xFFFF_FFFF_FFFF_F000, 0x2000, 0),
])
def test_dma_map_unaligned_or_empty(client: VfioUserClient, memfd: int, iova: int, size: int,
                                    offset: int) -> None:
    assert_error(client.dma_map(iova, size, memfd, offset, check=False))
    assert_same_connection_works(client)


def test_dma_map_offset_without_fd(client: VfioUserClient) -> None:
    # "offset ... or zero if the region is not mappable": an fd-less map with
    # a file offset is missing its fd.
    assert_error(client.dma_map(0x10_0000, 0x1000, None, 0x1000, check=False))
    assert_same_connection_works(client)


def test_dma_map_two_fds(client: VfioUserClient, memfd: int) -> None:
    payload = DMA_MAP.pack(DMA_MAP.size, 3, 0, 0x10_0000, 0x1000)
    assert_error(request(client, VFIO_USER_DMA_MAP, payload, (memfd, memfd)))
    assert_same_connection_works(client)


def test_dma_map_fd_too_small(client: VfioUserClient, memfd: int) -> None:
    # The memfd is 1 MiB; a map past its end cannot be backed.
    assert_error(client.dma_map(0x10_0000, 0x20_0000, memfd, 0, check=False))
    assert_error(client.dma_map(0x10_0000, 0x1000, memfd, 1 << 20, check=False))
    assert_same_connection_works(client)


def test_dma_map_spanning_hugepage_files_names_spdk_without_g(
    client: VfioUserClient, caplog: pytest.LogCaptureFixture
) -> None:
    # SPDK's driver without -g: DPDK keeps a file per 2 MiB hugepage, and one
    # DMA_MAP covers three pages contiguous in the client's address space,
    # sent with the first page's file.
    pages = [os.memfd_create(f"spdk-page-{i}", os.MFD_CLOEXEC) for i in range(3)]
    try:
        for fd in pages:
            os.ftruncate(fd, 2 << 20)
        with caplog.at_level(logging.WARNING, logger="nvmefast.vfio_user"):
            assert_error(client.dma_map(0x2000_0000, 6 << 20, pages[0], 0, check=False), errno.EINVAL)
        refusal = [r.getMessage() for r in caplog.records if "DMA_MAP" in r.getMessage()]
        assert len(refusal) == 1, refusal
        assert "mapped 6291456 bytes at IOVA 0x20000000 with an fd of 2097152 bytes" in refusal[0]
        assert "SPDK" in refusal[0] and "run it with -g" in refusal[0]
        # One mapping per file (what -g leads to) is what the server takes.
        for i, fd in enumerate(pages):
            client.dma_map(0x2000_0000 + (i << 21), 2 << 20, fd)
    finally:
        for fd in pages:
            os.close(fd)
    assert_same_connection_works(client)


def test_dma_map_fd_not_mappable(client: VfioUserClient) -> None:
    rd, wr = os.pipe()
    try:
        assert_error(client.dma_map(0x10_0000, 0x1000, rd, 0, check=False))
    finally:
        os.close(rd)
        os.close(wr)
    assert_same_connection_works(client)


def test_dma_unmap_of_nothing(client: VfioUserClient, memfd: int) -> None:
    assert_error(client.dma_unmap(0x10_0000, 0x1000, check=False))
    client.dma_map(0x10_0000, 0x2000, memfd)
    # Must match a mapping exactly.
    assert_error(client.dma_unmap(0x10_0000, 0x1000, check=False))
    assert_error(client.dma_unmap(0x10_1000, 0x1000, check=False))
    client.dma_unmap(0x10_0000, 0x2000)
    assert_same_connection_works(client)


# -- SET_IRQS ---------------------------------------------------------------------------------------


def irq_count(client: VfioUserClient) -> int:
    return client.irq_info(MSIX).count


@pytest.mark.parametrize("index", [5, 9, 0xFFFF_FFFF])
def test_set_irqs_bad_index(client: VfioUserClient, index: int) -> None:
    assert_error(client.set_irqs(index, 0, 1, VFIO_IRQ_SET_ACTION_MASK, check=False), errno.EINVAL)
    assert_same_connection_works(client)


def test_irq_info_bad_index(client: VfioUserClient) -> None:
    payload = struct.pack("<IIII", 16, 0, 0x1234, 0)
    assert_error(request(client, VFIO_USER_DEVICE_GET_IRQ_INFO, payload), errno.EINVAL)
    assert_same_connection_works(client)


def test_set_irqs_bad_start_or_count(client: VfioUserClient) -> None:
    n = irq_count(client)
    for start, count in ((n, 1), (0, n + 1), (n - 1, 2), (0xFFFF_FFFF, 2), (1, 0xFFFF_FFFF)):
        reply = client.set_irqs(MSIX, start, count, VFIO_IRQ_SET_ACTION_MASK, check=False)
        assert_error(reply, errno.EINVAL)
    assert_same_connection_works(client)


def test_set_irqs_eventfd_count_mismatch(client: VfioUserClient) -> None:
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        assert_error(client.set_irqs(MSIX, 0, 2, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[fd], check=False))
        fd2 = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            assert_error(client.set_irqs(MSIX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER, eventfds=[fd, fd2],
                                         check=False))
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
    assert_same_connection_works(client)


def test_set_irqs_flags_not_exactly_one_data_and_one_action(client: VfioUserClient) -> None:
    bad_flags = (
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK,
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK,
        VFIO_IRQ_SET_ACTION_MASK,  # no data type
        VFIO_IRQ_SET_DATA_NONE,  # no action
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK | 1 << 6,  # undefined bit
    )
    for flags in bad_flags:
        payload = IRQ_SET.pack(IRQ_SET.size, flags, MSIX, 0, 1)
        assert_error(request(client, VFIO_USER_DEVICE_SET_IRQS, payload), errno.EINVAL)
    assert_same_connection_works(client)


def test_set_irqs_bool_data_short(client: VfioUserClient) -> None:
    flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK
    payload = IRQ_SET.pack(IRQ_SET.size + 1, flags, MSIX, 0, 3) + b"\x01"
    assert_error(request(client, VFIO_USER_DEVICE_SET_IRQS, payload), errno.EINVAL)
    assert_same_connection_works(client)


def test_set_irqs_unmask_bad_range(client: VfioUserClient) -> None:
    n = irq_count(client)
    assert_error(client.set_irqs(MSIX, n, 1, VFIO_IRQ_SET_ACTION_UNMASK, check=False), errno.EINVAL)
    assert_same_connection_works(client)


def test_fds_on_a_command_that_takes_none_are_not_kept(client: VfioUserClient) -> None:
    # fds sent with GET_INFO are refused or ignored, but must not leak in the
    # server: after the server closes its copy, the pipe's write end is
    # the only one left, so closing ours makes the read end see EOF.
    rd, wr = os.pipe()
    try:
        reply = request(client, VFIO_USER_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), (wr,))
        os.close(wr)
        wr = -1
        assert reply.failed or len(reply.payload) == 16
        os.set_blocking(rd, False)
        client.device_get_info()  # a round trip after: the server is done with the message
        try:
            assert os.read(rd, 1) == b""
        except BlockingIOError:
            pytest.fail("the server kept the fd sent with DEVICE_GET_INFO")
    finally:
        os.close(rd)
        if wr >= 0:
            os.close(wr)
    assert_same_connection_works(client)


def test_header_only_size_for_a_command_with_payload(client: VfioUserClient) -> None:
    for command in (VFIO_USER_DEVICE_GET_REGION_INFO, VFIO_USER_REGION_READ, VFIO_USER_DEVICE_SET_IRQS,
                    VFIO_USER_DMA_MAP):
        assert_error(request(client, command, b""))
    assert HEADER_SIZE == 16
    assert_same_connection_works(client)
