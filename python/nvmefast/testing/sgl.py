"""Scatter Gather Lists (SGLs) for the host side (NVMe Base 2.0, section 4.1.2).

With PSDT = 01b in CDW0 the 16 bytes at SQE offsets 24-39 (where PRP1 and
PRP2 otherwise sit) are SGL1, one SGL descriptor::

    bytes 0-7   Address
    bytes 8-11  Length
    bytes 12-14 reserved
    byte  15    SGL Identifier: Descriptor Type 7:4, Descriptor Sub Type 3:0

A Data Block descriptor moves ``Length`` bytes at ``Address``; a Bit Bucket
(reads only) discards ``Length`` bytes of the transfer; a Segment descriptor
points to a list of ``Length / 16`` descriptors in host memory whose last
entry may be a Segment or Last Segment descriptor for the next list; a Last
Segment descriptor points to the final list, which holds no segment
descriptor at all.

:func:`build_sgl` lays out any list of data descriptors as SGL1 plus a chain
of segment lists, the way Linux ``nvme_pci_setup_sgls`` does for one list and
SPDK ``nvme_pcie_qpair_build_hw_sgl_request`` for chains. The functions here
build exactly what they are told, including invalid SGLs, so bad-input tests
use them too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nvmefast.testing.memory import PAGE_SIZE

SGL_DESCRIPTOR_SIZE = 16
"""Bytes per SGL descriptor."""

# SGL Descriptor Types (NVMe Base 2.0, Figure 37).
SGL_DATA_BLOCK = 0x0
SGL_BIT_BUCKET = 0x1
SGL_SEGMENT = 0x2
SGL_LAST_SEGMENT = 0x3
SGL_KEYED_DATA_BLOCK = 0x4
SGL_TRANSPORT_DATA_BLOCK = 0x5

# SGL Descriptor Sub Types (NVMe Base 2.0, Figure 38).
SGL_SUBTYPE_ADDRESS = 0x0
SGL_SUBTYPE_OFFSET = 0x1

# PRP or SGL for Data Transfer, CDW0 bits 15:14 (NVMe Base 2.0, Figure 87).
PSDT_PRP = 0b00
PSDT_SGL = 0b01
"""SGLs are used; MPTR (if any) addresses a contiguous metadata buffer."""
PSDT_SGL_MPTR_SGL = 0b10
"""SGLs are used; MPTR addresses an SGL segment for metadata."""

_DESCRIPTOR = struct.Struct("<QI3xB")
assert _DESCRIPTOR.size == SGL_DESCRIPTOR_SIZE

DESCRIPTORS_PER_PAGE = PAGE_SIZE // SGL_DESCRIPTOR_SIZE
"""Descriptors in one page-sized segment list."""


@dataclass(frozen=True)
class SglDescriptor:
    """One SGL descriptor: address, length and SGL Identifier (type, sub type)."""

    address: int
    length: int
    type: int
    subtype: int = SGL_SUBTYPE_ADDRESS

    def encode(self) -> bytes:
        """The 16 wire bytes of this descriptor."""
        identifier = (self.type & 0xF) << 4 | (self.subtype & 0xF)
        return _DESCRIPTOR.pack(self.address & (2**64 - 1), self.length & 0xFFFF_FFFF, identifier)

    @classmethod
    def decode(cls, raw: bytes) -> SglDescriptor:
        """Decode 16 wire bytes."""
        address, length, identifier = _DESCRIPTOR.unpack(raw)
        return cls(address, length, identifier >> 4, identifier & 0xF)

    @property
    def is_data(self) -> bool:
        """True for the descriptors that describe transfer bytes: Data Block and Bit Bucket."""
        return self.type in (SGL_DATA_BLOCK, SGL_BIT_BUCKET)


def data_block(address: int, length: int) -> SglDescriptor:
    """A Data Block descriptor: ``length`` bytes of data at ``address``."""
    return SglDescriptor(address, length, SGL_DATA_BLOCK)


def bit_bucket(length: int) -> SglDescriptor:
    """A Bit Bucket descriptor: ``length`` bytes of read data the controller discards."""
    return SglDescriptor(0, length, SGL_BIT_BUCKET)


def segment(address: int, count: int) -> SglDescriptor:
    """A Segment descriptor pointing to a list of ``count`` descriptors at ``address``."""
    return SglDescriptor(address, count * SGL_DESCRIPTOR_SIZE, SGL_SEGMENT)


def last_segment(address: int, count: int) -> SglDescriptor:
    """A Last Segment descriptor pointing to the final list of ``count`` descriptors."""
    return SglDescriptor(address, count * SGL_DESCRIPTOR_SIZE, SGL_LAST_SEGMENT)


def encode_list(descriptors: Sequence[SglDescriptor]) -> bytes:
    """The wire bytes of a segment list."""
    return b"".join(d.encode() for d in descriptors)


@dataclass
class SglSet:
    """SGL1 of one command plus the segment list pages that must be freed after it."""

    sgl1: SglDescriptor
    segment_lists: list[int] = field(default_factory=list)

    @property
    def prp1(self) -> int:
        """SQE dwords 6-7 (SGL1 bytes 0-7): the descriptor's address."""
        return int.from_bytes(self.sgl1.encode()[:8], "little")

    @property
    def prp2(self) -> int:
        """SQE dwords 8-9 (SGL1 bytes 8-15): length, reserved bytes and identifier."""
        return int.from_bytes(self.sgl1.encode()[8:], "little")

    def dptr(self) -> dict[str, int]:
        """Keyword arguments for :func:`~nvmefast.testing.build_sqe`: SGL1 and PSDT = 01b.

        ``build_sqe(0x02, nsid=1, cdw10=slba, **sgl.dptr())``.
        """
        return {"prp1": self.prp1, "prp2": self.prp2, "psdt": PSDT_SGL}


def sgl_dptr(descriptor: SglDescriptor) -> dict[str, int]:
    """:meth:`SglSet.dptr` for a bare SGL1 descriptor (no segment lists)."""
    return SglSet(descriptor).dptr()


def build_sgl(
    descriptors: Sequence[SglDescriptor],
    alloc: Callable[[int], int],
    write: Callable[[int, bytes], None],
    *,
    per_segment: int = DESCRIPTORS_PER_PAGE,
    inline_single: bool = True,
) -> SglSet:
    """SGL1 and, if needed, a chain of segment lists for ``descriptors``.

    ``descriptors`` are the Data Block / Bit Bucket descriptors of the
    transfer in order. One descriptor goes straight into SGL1 (unless
    ``inline_single`` is False). More go into segment lists of at most
    ``per_segment`` descriptors each: every list but the last ends with a
    Segment descriptor (or a Last Segment descriptor, for the one before the
    last list) pointing to the next list, so a list holds ``per_segment - 1``
    data descriptors plus that pointer. SGL1 is a Last Segment descriptor
    when one list suffices, a Segment descriptor otherwise.

    ``alloc(nbytes)`` returns guest memory for a list and ``write`` stores
    bytes in guest memory.
    """
    if not descriptors:
        raise ValueError("an SGL needs at least one descriptor")
    if per_segment < 2 and len(descriptors) > per_segment:
        raise ValueError("a chained segment list needs room for a descriptor and a pointer")
    if len(descriptors) == 1 and inline_single:
        return SglSet(descriptors[0])
    # Split into lists: all but the last hold per_segment - 1 data descriptors.
    chunks: list[list[SglDescriptor]] = []
    rest = list(descriptors)
    while len(rest) > per_segment:
        chunks.append(rest[: per_segment - 1])
        rest = rest[per_segment - 1 :]
    chunks.append(rest)
    addresses = [alloc(len(c) * SGL_DESCRIPTOR_SIZE + SGL_DESCRIPTOR_SIZE) for c in chunks]
    sgls = SglSet(SglDescriptor(0, 0, SGL_DATA_BLOCK), segment_lists=list(addresses))
    # Write from the last list back so each pointer knows its target's size.
    pointer: SglDescriptor | None = None
    for i in range(len(chunks) - 1, -1, -1):
        entries = list(chunks[i])
        if pointer is not None:
            entries.append(pointer)
        write(addresses[i], encode_list(entries))
        kind = SGL_LAST_SEGMENT if i == len(chunks) - 1 else SGL_SEGMENT
        pointer = SglDescriptor(addresses[i], len(entries) * SGL_DESCRIPTOR_SIZE, kind)
    assert pointer is not None
    sgls.sgl1 = pointer
    return sgls


def split_data_blocks(address: int, sizes: Sequence[int], gap: int = 0) -> list[SglDescriptor]:
    """Data Block descriptors of the given ``sizes`` laid out from ``address``,
    each ``gap`` bytes after the end of the one before (to show the controller
    does not assume one contiguous buffer)."""
    out = []
    for size in sizes:
        out.append(data_block(address, size))
        address += size + gap
    return out


def scatter(write: Callable[[int, bytes], None], descriptors: Sequence[SglDescriptor],
            data: bytes) -> None:
    """Write ``data`` into the buffers the Data Block descriptors describe, in order."""
    done = 0
    for d in descriptors:
        if d.type == SGL_BIT_BUCKET:
            raise ValueError("a Bit Bucket has no buffer to write data into")
        write(d.address, data[done : done + d.length])
        done += d.length
    if done < len(data):
        raise ValueError(f"descriptors hold {done} bytes, data is {len(data)}")


def gather(read: Callable[[int, int], bytes], descriptors: Sequence[SglDescriptor]) -> bytes:
    """The bytes the Data Block descriptors' buffers hold, in order; Bit Buckets contribute none."""
    return b"".join(read(d.address, d.length) for d in descriptors if d.type == SGL_DATA_BLOCK)


def transfer_length(descriptors: Sequence[SglDescriptor]) -> int:
    """Bytes of the transfer the data descriptors cover (Bit Buckets included)."""
    return sum(d.length for d in descriptors if d.is_data)


__all__ = [
    "DESCRIPTORS_PER_PAGE",
    "PSDT_PRP",
    "PSDT_SGL",
    "PSDT_SGL_MPTR_SGL",
    "SGL_BIT_BUCKET",
    "SGL_DATA_BLOCK",
    "SGL_DESCRIPTOR_SIZE",
    "SGL_KEYED_DATA_BLOCK",
    "SGL_LAST_SEGMENT",
    "SGL_SEGMENT",
    "SGL_SUBTYPE_ADDRESS",
    "SGL_SUBTYPE_OFFSET",
    "SGL_TRANSPORT_DATA_BLOCK",
    "SglDescriptor",
    "SglSet",
    "bit_bucket",
    "build_sgl",
    "data_block",
    "encode_list",
    "gather",
    "last_segment",
    "scatter",
    "segment",
    "sgl_dptr",
    "split_data_blocks",
    "transfer_length",
]
