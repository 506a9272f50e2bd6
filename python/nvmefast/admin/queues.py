"""Create/Delete I/O Submission and Completion Queues (01h, 00h, 05h, 04h).

The admin layer checks each field the way NVMe 1.4 5.3-5.6 says and then
asks the core to build or tear down the queue; the core owns the rings. A
queue ID is valid when it lies within the queues granted by Number of Queues
(1..NSQA+1 or 1..NCQA+1). Only physically contiguous queues are supported
(CAP.CQR = 1), so PC = 0 is an invalid field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmefast.admin.command import CDW10, CDW11, PRP1, AdminCommand, Reject, Result, param_location
from nvmefast.status import Status

if TYPE_CHECKING:
    from nvmefast.admin import Admin

__all__ = ["create_io_cq", "create_io_sq", "delete_io_cq", "delete_io_sq"]

SQE_SIZE = 64
CQE_SIZE = 16


def _check_qsize(admin: Admin, qsize: int) -> None:
    # QSIZE is 0-based; a one-entry queue (QSIZE 0) can never hold a command.
    if qsize == 0 or qsize > admin.config.max_queue_entries - 1:
        raise Reject(Status.INVALID_QSIZE, param_location(CDW10 + 2))


def _check_base(admin: Admin, prp1: int, entries: int, entry_size: int) -> None:
    # A ring that runs past the top of the address space is an invalid base
    # (the core would refuse it too, as an internal error rather than a status).
    if prp1 == 0 or prp1 + entries * entry_size >= 1 << 64:
        raise Reject(Status.INVALID_FIELD, param_location(PRP1))
    # A contiguous queue starts on a memory page boundary (CC.MPS).
    if prp1 & (admin.page_size - 1):
        raise Reject(Status.INVALID_PRP_OFFSET, param_location(PRP1))


def create_io_cq(admin: Admin, cmd: AdminCommand) -> Result:
    """05h Create I/O Completion Queue."""
    qid, qsize = cmd.cdw10 & 0xFFFF, cmd.cdw10 >> 16
    pc, ien, iv = bool(cmd.cdw11 & 1), bool(cmd.cdw11 & 2), cmd.cdw11 >> 16
    with admin.lock:
        granted = admin.features.ncqa + 1
    if not 1 <= qid <= granted or admin.engine.cq_exists(qid):
        raise Reject(Status.INVALID_QID, param_location(CDW10))
    _check_qsize(admin, qsize)
    if iv >= admin.config.vectors:
        raise Reject(Status.INVALID_VECTOR, param_location(CDW11 + 2))
    if not pc:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11))
    _check_base(admin, cmd.prp1, qsize + 1, CQE_SIZE)
    admin.engine.create_cq(qid, cmd.prp1, qsize + 1, vector=iv, ien=ien)
    with admin.lock:
        admin.queues_created = True
    return (Status.SUCCESS, 0)


def create_io_sq(admin: Admin, cmd: AdminCommand) -> Result:
    """01h Create I/O Submission Queue."""
    qid, qsize = cmd.cdw10 & 0xFFFF, cmd.cdw10 >> 16
    pc, cqid = bool(cmd.cdw11 & 1), cmd.cdw11 >> 16
    # QPRIO (bits 2:1) only matters with weighted round robin; CAP.AMS is 0.
    with admin.lock:
        granted = admin.features.nsqa + 1
    if not 1 <= qid <= granted or admin.engine.sq_exists(qid):
        raise Reject(Status.INVALID_QID, param_location(CDW10))
    if cqid == 0 or not admin.engine.cq_exists(cqid):
        raise Reject(Status.INVALID_CQ, param_location(CDW11 + 2))
    _check_qsize(admin, qsize)
    if not pc:
        raise Reject(Status.INVALID_FIELD, param_location(CDW11))
    _check_base(admin, cmd.prp1, qsize + 1, SQE_SIZE)
    admin.engine.create_sq(qid, cmd.prp1, qsize + 1, cqid=cqid)
    with admin.lock:
        admin.queues_created = True
    return (Status.SUCCESS, 0)


def delete_io_sq(admin: Admin, cmd: AdminCommand) -> Result:
    """00h Delete I/O Submission Queue."""
    qid = cmd.cdw10 & 0xFFFF
    if qid == 0 or not admin.engine.sq_exists(qid):
        raise Reject(Status.INVALID_QID, param_location(CDW10))
    admin.engine.delete_sq(qid)
    return (Status.SUCCESS, 0)


def delete_io_cq(admin: Admin, cmd: AdminCommand) -> Result:
    """04h Delete I/O Completion Queue."""
    qid = cmd.cdw10 & 0xFFFF
    if qid == 0 or not admin.engine.cq_exists(qid):
        raise Reject(Status.INVALID_QID, param_location(CDW10))
    if admin.engine.cq_in_use(qid):
        # 5.4: every SQ that posts to it must be deleted first.
        raise Reject(Status.INVALID_QUEUE_DELETION, param_location(CDW10))
    admin.engine.delete_cq(qid)
    return (Status.SUCCESS, 0)
