"""The features whose value travels in a data buffer: Timestamp (0Eh) and
Host Behavior Support (16h), NVMe Base 2.0 5.27.1.10 and 5.27.1.17."""

from __future__ import annotations

import dataclasses
import struct
import time

from nvmefast.admin.command import CDW10, Reject, param_location
from nvmefast.status import Status

__all__ = ["HostBehavior", "Timestamp"]

_TIMESTAMP_MASK = (1 << 48) - 1


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Timestamp:
    """The controller's millisecond clock: ``value`` at monotonic ms ``since``.

    Origin (byte 6 bits 3:1) is 000b after a Controller Level Reset (counting
    from 0) and 001b once the host set it; Synch (bit 0) stays 0 because the
    clock never stops while the controller runs.
    """

    SIZE = 8
    """Bytes in the data buffer."""
    ORIGIN_RESET = 0b000
    """Timestamp Origin: set to 0 by a Controller Level Reset."""
    ORIGIN_SET_FEATURES = 0b001
    """Timestamp Origin: set by the host with Set Features."""

    value: int = 0
    since: int = dataclasses.field(default_factory=_now_ms)
    origin: int = ORIGIN_RESET

    @classmethod
    def from_host(cls, data: bytes) -> Timestamp:
        """The clock a Set Features data buffer starts: bytes 5:0 in ms; the
        attribute byte is the controller's to report, so it is ignored."""
        value = int.from_bytes(data[:6], "little")
        return cls(value=value, since=_now_ms(), origin=cls.ORIGIN_SET_FEATURES)

    def to_bytes(self) -> bytes:
        """The 8-byte Get Features data: the running timestamp and its attributes."""
        now = (self.value + _now_ms() - self.since) & _TIMESTAMP_MASK
        return struct.pack("<Q", now | (self.origin << 1) << 48)


@dataclasses.dataclass(frozen=True)
class HostBehavior:
    """Host Behavior Support: ACRE (byte 0), ETDAS (byte 1), LBAFEE (byte 2).

    Each is one bit wide; a value with reserved bits set is an Invalid Field.
    ACRE and ETDAS change nothing here (no command retry delay, CRDT 0; no
    telemetry). LBAFEE enables the extended LBA formats: Format NVM to a
    format with the 64-bit guard needs it, and only with it does Format NVM
    read LBAFU (:mod:`nvmefast.admin.format_nvm`).
    """

    SIZE = 512
    """Bytes in the data buffer."""

    acre: int = 0
    etdas: int = 0
    lbafee: int = 0

    @classmethod
    def from_host(cls, data: bytes) -> HostBehavior:
        """Decode a Set Features data buffer."""
        acre, etdas, lbafee = data[0], data[1], data[2]
        if acre > 1 or etdas > 1 or lbafee > 1:
            raise Reject(Status.INVALID_FIELD, param_location(CDW10))
        return cls(acre, etdas, lbafee)

    def to_bytes(self) -> bytes:
        """The 512-byte Get Features data."""
        buf = bytearray(self.SIZE)
        buf[0:3] = bytes((self.acre, self.etdas, self.lbafee))
        return bytes(buf)
