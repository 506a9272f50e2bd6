"""Embedder mistakes raise the nvmefast.NvmeFastError hierarchy with a message that helps.

Each case asserts the exception class and that the message names the
offending value or field, so a user can tell what to change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nvmefast
from nvmefast import (
    ConfigError,
    Controller,
    ControllerConfig,
    DmaMapError,
    NamespaceConfig,
    NvmeFastError,
    RegisterAccessError,
    StateError,
    VectorError,
)
from nvmefast.testing import Host

MiB = 1 << 20


def raises(kind: type[NvmeFastError], call: Callable[[], Any], *mentions: str) -> NvmeFastError:
    """Assert ``call`` raises ``kind`` whose message contains one of ``mentions`` (a regex each)."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, nvmefast.NvmeFastError)
    assert message.strip(), f"{kind.__name__} without a message"
    if mentions:
        assert any(re.search(m, message, re.IGNORECASE) for m in mentions), (
            f"message {message!r} mentions none of {mentions}"
        )
    return info.value


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("misuse", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 * MiB)
    yield fd
    os.close(fd)


@pytest.mark.parametrize(
    ("kwargs", "mention"),
    [
        ({"max_io_queue_pairs": 0}, "max_io_queue_pairs"),
        ({"max_io_queue_pairs": 65536}, "max_io_queue_pairs"),
        ({"msix_vectors": 0}, "msix_vectors"),
        ({"msix_vectors": 2049}, "msix_vectors"),
        ({"max_queue_entries": 1}, "max_queue_entries"),
        ({"max_queue_entries": 65537}, "max_queue_entries"),
        ({"mdts": 16}, "mdts"),
        ({"doorbell_stride": 16}, "doorbell_stride"),
        ({"aerl": 256}, "aerl"),
        ({"poll_us": -1}, "poll_us"),
        ({"serial": "S" * 21}, "serial"),
        ({"model": "M" * 41}, "model"),
        ({"firmware": "F" * 9}, "firmware"),
        ({"model": "caf\u00e9"}, "model"),
        ({"namespaces": []}, "namespaces"),
        ({"max_io_queue_pairs": "8"}, "max_io_queue_pairs"),
    ],
)
def test_bad_controller_config(kwargs: dict[str, Any], mention: str) -> None:
    error = raises(ConfigError, lambda: ControllerConfig(**kwargs), mention)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "mention"),
    [
        ({"lba_size": 1024}, "lba_size"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": 4096 + 512, "lba_size": 4096}, "size_bytes"),
        ({"backend": "disk"}, "backend"),
    ],
)
def test_bad_namespace_config(kwargs: dict[str, Any], mention: str) -> None:
    raises(ConfigError, lambda: NamespaceConfig(**kwargs), mention)


def test_map_dma_overlap(bare_host: Host, controller: Controller, memfd: int) -> None:
    base = bare_host.mem.regions[0].iova
    raises(DmaMapError, lambda: controller.map_dma(base + 0x1000, 0x1000, memfd), "overlap", hex(base + 0x1000))
    raises(DmaMapError, lambda: controller.map_dma(base - 0x1000, 0x2000, memfd), "overlap", hex(base - 0x1000))
    # the same range again is also an overlap
    raises(DmaMapError, lambda: controller.map_dma(base, 0x1000, memfd), "overlap", hex(base))


def test_map_dma_bad_arguments(controller: Controller, memfd: int) -> None:
    raises(DmaMapError, lambda: controller.map_dma(0x10_0000, 0, memfd), "size")
    raises(DmaMapError, lambda: controller.map_dma(0x10_0000, 0x1000, -1), "fd", "descriptor")
    closed = os.memfd_create("closed")
    os.close(closed)
    raises(DmaMapError, lambda: controller.map_dma(0x10_0000, 0x1000, closed), "fd", "descriptor")
    # offset (and offset + size) past the end of the 1 MiB memfd
    raises(DmaMapError, lambda: controller.map_dma(0x10_0000, 0x1000, memfd, offset=2 * MiB), "offset", "size", "past")
    raises(DmaMapError, lambda: controller.map_dma(0x10_0000, 2 * MiB, memfd), "size", "past", "end")
    # an IOVA range that wraps around the 64-bit address space
    raises(DmaMapError, lambda: controller.map_dma(2**64 - 0x1000, 0x2000, memfd), "iova", "overflow", "wrap")
    # nothing of the above was mapped
    controller.map_dma(0x10_0000, 0x1000, memfd)
    controller.unmap_dma(0x10_0000, 0x1000)


def test_unmap_not_mapped(controller: Controller, memfd: int) -> None:
    raises(DmaMapError, lambda: controller.unmap_dma(0x20_0000, 0x1000), hex(0x20_0000), "not mapped")
    controller.map_dma(0x20_0000, 0x4000, memfd)
    # part of a mapping is not a mapping
    raises(DmaMapError, lambda: controller.unmap_dma(0x20_0000, 0x1000), hex(0x20_0000), "not mapped", "exact")
    raises(DmaMapError, lambda: controller.unmap_dma(0x20_1000, 0x3000), hex(0x20_1000), "not mapped", "exact")
    controller.unmap_dma(0x20_0000, 0x4000)
    raises(DmaMapError, lambda: controller.unmap_dma(0x20_0000, 0x4000), hex(0x20_0000), "not mapped")


@pytest.mark.parametrize("size", [0, 3, 5, 16])
def test_bar0_bad_size(controller: Controller, size: int) -> None:
    raises(RegisterAccessError, lambda: controller.bar0_read(0x0, size), "size")
    raises(RegisterAccessError, lambda: controller.bar0_write(0x14, 0, size), "size")


def test_bar0_past_end(controller: Controller) -> None:
    end = controller.bar0_size
    assert end >= 0x1000 + 2 * 9 * 4  # registers plus the doorbells of 8 I/O queue pairs
    raises(RegisterAccessError, lambda: controller.bar0_read(end, 4), hex(end), str(end), "offset")
    raises(RegisterAccessError, lambda: controller.bar0_write(end - 2, 0, 4), "offset")
    raises(RegisterAccessError, lambda: controller.bar0_read(2**40, 4), "offset")


def test_vector_out_of_range(controller: Controller, config: ControllerConfig) -> None:
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        vectors = config.vectors
        raises(VectorError, lambda: controller.set_vector_eventfd(vectors, efd), str(vectors))
        raises(VectorError, lambda: controller.mask_vector(vectors, True), str(vectors))
        raises(VectorError, lambda: controller.set_vector_eventfd(-1, efd), "-1", "vector")
        controller.set_vector_eventfd(vectors - 1, efd)  # the last one is fine
    finally:
        os.close(efd)


def test_bad_vector_fd(controller: Controller) -> None:
    raises(VectorError, lambda: controller.set_vector_eventfd(1, -1), "fd", "descriptor")
    closed = os.eventfd(0)
    os.close(closed)
    raises(VectorError, lambda: controller.set_vector_eventfd(1, closed), "fd", "descriptor")


def test_a_vector_fd_must_be_an_eventfd(controller: Controller) -> None:
    # A worker writes it: any other kind of fd (a pipe nobody reads) could
    # block it for ever.
    r, w = os.pipe()
    try:
        for fd in (r, w):
            e = raises(VectorError, lambda fd=fd: controller.set_vector_eventfd(1, fd), "not an eventfd")
            assert "pipe:[" in str(e) and "os.eventfd" in str(e), str(e)
            raises(VectorError, lambda fd=fd: controller.set_intx_eventfds(fd, None), "not an eventfd")
            raises(VectorError, lambda fd=fd: controller.set_intx_eventfds(None, fd), "not an eventfd")
    finally:
        os.close(r)
        os.close(w)


def test_a_vector_eventfd_is_made_non_blocking(controller: Controller) -> None:
    # The flag belongs to the open file, so the caller's copy shows it.
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        assert os.get_blocking(efd)
        controller.set_vector_eventfd(1, efd)
        assert not os.get_blocking(efd)
    finally:
        os.close(efd)


def test_calls_after_close(config: ControllerConfig, memfd: int) -> None:
    controller = Controller(config)
    controller.close()
    controller.close()  # idempotent
    calls: list[Callable[[], Any]] = [
        lambda: controller.bar0_read(0, 4),
        lambda: controller.bar0_write(0x14, 1, 4),
        lambda: controller.map_dma(0, 0x1000, memfd),
        lambda: controller.unmap_dma(0, 0x1000),
        lambda: controller.set_vector_eventfd(0, None),
        lambda: controller.mask_vector(0, True),
        lambda: controller.pending_vectors(),
        lambda: controller.counters(),
    ]
    for call in calls:
        raises(StateError, call, "closed")
    with pytest.raises(StateError):
        with controller:
            pass


def test_host_close_after_controller_close(config: ControllerConfig) -> None:
    # Tearing down in the "wrong" order must not raise: the controller dropped its maps.
    controller = Controller(config)
    host = Host(controller, memory_bytes=1 * MiB)
    host.enable()
    controller.close()
    host.close()
