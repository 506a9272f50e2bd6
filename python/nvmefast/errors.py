"""The nvmefast exception hierarchy.

Every error nvmefast raises derives from :class:`NvmeFastError`. The classes
that the Rust core can raise are defined there and re-exported here, so an
``except nvmefast.QueueError`` catches errors from either side of the
boundary. The Python side adds :class:`CommandError` and
:class:`HostTimeoutError`, which the host driver (``nvmefast.testing``) raises,
and the core's :class:`NamespaceError` and :class:`CapacityError` are
raised for namespace changes the controller's state refuses.
"""

from __future__ import annotations

from nvmefast._core import (
    CapacityError,
    ConfigError,
    DmaMapError,
    NamespaceError,
    NvmeFastError,
    QueueError,
    RegisterAccessError,
    StateError,
    VectorError,
)
from nvmefast.status import describe, dnr_of, sc_of, sct_of

__all__ = [
    "CapacityError",
    "CommandError",
    "ConfigError",
    "DmaMapError",
    "HostTimeoutError",
    "NamespaceError",
    "NvmeFastError",
    "QueueError",
    "RegisterAccessError",
    "StateError",
    "VectorError",
]


class CommandError(NvmeFastError):
    """A command completed with a non-zero status.

    ``status`` is the 15-bit CQE status field (DNR, M, CRD, SCT, SC);
    ``sct``, ``sc`` and ``dnr`` are its parts and ``opcode`` the command's
    opcode, so a test can assert on any of them.
    """

    status: int
    sct: int
    sc: int
    dnr: bool
    opcode: int

    def __init__(self, status: int, opcode: int, message: str | None = None) -> None:
        self.status = status
        self.sct = sct_of(status)
        self.sc = sc_of(status)
        self.dnr = dnr_of(status)
        self.opcode = opcode
        text = f"opcode {opcode:#04x} failed: {describe(status)}"
        if message:
            text = f"{text}: {message}"
        super().__init__(text)


class HostTimeoutError(NvmeFastError, TimeoutError):
    """The host driver waited too long for a completion or a register change."""
