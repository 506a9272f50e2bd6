"""BAR0 register offsets and bits the host driver programs (NVMe Base 2.0, §3.1.3).

Written from the spec rather than imported from ``nvmefast.registers`` so
the host checks the device against the spec, not against itself.
"""

from __future__ import annotations

REG_CAP = 0x00
REG_VS = 0x08
REG_CC = 0x14
REG_CSTS = 0x1C
REG_AQA = 0x24
REG_ASQ = 0x28
REG_ACQ = 0x30
DOORBELL_BASE = 0x1000

CC_EN = 1 << 0
CC_SHN_NORMAL = 0b01 << 14
CC_SHN_MASK = 0b11 << 14
# CSS 000b (NVM), MPS 0 (4 KiB), AMS 000b (round robin), SHN 00b, IOSQES 6 (64 B),
# IOCQES 4 (16 B): the value Linux nvme_enable_ctrl programs on x86 (CSS aside: see cc_linux).
CC_LINUX = (0 << 4) | (0 << 7) | (0 << 11) | (6 << 16) | (4 << 20)
CC_CSS_SHIFT = 4
CC_CSS_MASK = 0b111 << CC_CSS_SHIFT
CSS_NVM = 0b000
"""CC.CSS: the NVM Command Set only."""
CSS_ALL = 0b110
"""CC.CSS: all supported I/O Command Sets (needs CAP.CSS bit 6)."""
CSS_ADMIN_ONLY = 0b111
"""CC.CSS: the Admin Command Set only (needs CAP.CSS bit 7)."""
CAP_CSS_SHIFT = 37
"""CAP.CSS is bits 44:37."""


def cc_linux(cap: int) -> int:
    """CC as Linux ``nvme_enable_ctrl`` programs it: CSS 110b when CAP.CSS bit 6
    says the controller supports I/O Command Set selection, else 000b."""
    css = CSS_ALL if (cap >> CAP_CSS_SHIFT) & (1 << 6) else CSS_NVM
    return CC_LINUX | css << CC_CSS_SHIFT

CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_SHIFT = 2
CSTS_SHST_MASK = 0b11 << CSTS_SHST_SHIFT
CSTS_SHST_COMPLETE = 0b10


def sq_tail_doorbell(qid: int, dstrd: int) -> int:
    """BAR0 offset of SQ ``qid``'s tail doorbell: 1000h + (2y) * (4 << CAP.DSTRD)."""
    return DOORBELL_BASE + (2 * qid) * (4 << dstrd)


def cq_head_doorbell(qid: int, dstrd: int) -> int:
    """BAR0 offset of CQ ``qid``'s head doorbell: 1000h + (2y + 1) * (4 << CAP.DSTRD)."""
    return DOORBELL_BASE + (2 * qid + 1) * (4 << dstrd)
