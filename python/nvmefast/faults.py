"""Fault injection: commands that fail on cue, completions that come late or
never, interrupts that go missing, a controller that fails or loses power.

A :class:`FaultRule` says which fetched commands it matches (queue, opcode,
NSID, LBA range) and what happens to the ones it fires on; ``count``,
``skip``, ``probability`` and ``seed`` say how often it fires. Rules live in
the core and are consulted by the workers as they fetch, so they apply to
whatever drives the controller (a test's host, a guest through vfio-user);
they can be added and removed while I/O runs, and each counts its matches and
hits. With no rule installed a worker pays one relaxed load per pass and a
few branches per command.

Rules have a one-line text form, used by :meth:`FaultRule.parse`,
``nvmefast serve --fault`` and the ``nvme_faults`` pytest marker::

    read nsid=1 lba=0..99 count=1 -> status unrecovered-read-error dnr
    write p=0.01 seed=7 -> delay 50ms
    admin identify -> never abortable
    io -> drop-irq count=3
    write skip=100 count=1 -> power-loss
    zone-append nsid=1 zone=3 count=1 -> zone-offline

The grammar, the actions and their exact effects are in ``docs/faults.md``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from nvmefast.errors import ConfigError
from nvmefast.status import DNR, MORE, Status

if TYPE_CHECKING:
    from nvmefast._core import Engine, FaultTable

__all__ = ["ACTIONS", "FaultRule", "FaultRuleError", "Faults", "InjectedFault"]

ACTIONS = (
    "status",
    "transfer-error",
    "delay",
    "never",
    "corrupt",
    "corrupt-pi",
    "drop-irq",
    "delay-irq",
    "cfs",
    "power-loss",
    "zone-readonly",
    "zone-offline",
    "zone-finish-recommended",
    "zone-reset-recommended",
)
"""The actions a rule can take, by name."""

Action = Literal[
    "status", "transfer-error", "delay", "never", "corrupt", "corrupt-pi", "drop-irq", "delay-irq", "cfs",
    "power-loss", "zone-readonly", "zone-offline", "zone-finish-recommended", "zone-reset-recommended",
]

PI_FIELDS = ("guard", "app", "ref")
"""The protection information fields ``corrupt-pi`` can corrupt."""

ZONE_ACTIONS = ("zone-readonly", "zone-offline", "zone-finish-recommended", "zone-reset-recommended")
"""The controller's own zone transitions (Read Only, Offline, Finish/Reset Recommended)."""

IO_OPCODES: dict[str, int] = {
    "flush": 0x00,
    "write": 0x01,
    "read": 0x02,
    "write-uncorrectable": 0x04,
    "compare": 0x05,
    "write-zeroes": 0x08,
    "dsm": 0x09,
    "verify": 0x0C,
    "copy": 0x19,
    "zone-mgmt-send": 0x79,
    "zone-mgmt-recv": 0x7A,
    "zone-append": 0x7D,
}
"""I/O command opcodes by the names the rule language uses."""

ADMIN_OPCODES: dict[str, int] = {
    "delete-sq": 0x00,
    "create-sq": 0x01,
    "get-log-page": 0x02,
    "delete-cq": 0x04,
    "create-cq": 0x05,
    "identify": 0x06,
    "abort": 0x08,
    "set-features": 0x09,
    "get-features": 0x0A,
    "async-event": 0x0C,
    "keep-alive": 0x18,
    "doorbell-buffer-config": 0x7C,
    "format-nvm": 0x80,
}
"""Admin command opcodes by the names the rule language uses."""

# Per second: dividing by these rounds as the literal would (100us is 0.0001).
_PER_SECOND = {"ns": 1e9, "us": 1e6, "ms": 1e3, "s": 1.0}
_MAX_DELAY_S = 3600.0


class FaultRuleError(ConfigError):
    """A fault rule that cannot be built: the message says what to change."""


def _status_names() -> dict[str, int]:
    return {s.name.lower().replace("_", "-"): int(s) for s in Status if s != Status.SUCCESS}


STATUS_NAMES: dict[str, int] = _status_names()
"""Status names the rule language accepts (``Status`` members, kebab-case)."""


@dataclasses.dataclass(frozen=True)
class FaultRule:
    """One fault rule: what it matches, what it does, how often.

    Matching (``None``: anything):

    - ``queue``: ``"io"`` (every I/O queue, the default), ``"admin"``, or a
      queue ID (0 is the admin queue);
    - ``opcode``: the command's opcode (of the queue's command set);
    - ``nsid``: the command's NSID;
    - ``lba``: ``(first, last)``, inclusive; matches commands with an LBA
      range (Read, Write, Compare, Write Zeroes, Verify) that overlaps it.
    - ``zone``: a zone index of a zoned namespace; matches commands that
      touch it (an LBA range in it, Zone Append or Zone Management naming
      it; Zone Management Send with Select All touches every zone).

    Action (``action`` and its parameters):

    - ``"status"``: not executed; completes with ``status`` (the 15-bit
      status field: ``DNR << 14 | M << 13 | CRD << 11 | SCT << 8 | SC``);
    - ``"transfer-error"``: not executed; Data Transfer Error;
    - ``"delay"``: executed; completion posted ``delay`` seconds later;
    - ``"never"``: not executed, never completed (until a controller reset,
      Delete SQ, or an Abort when ``abortable``);
    - ``"corrupt"``: a Read executed, then byte ``byte`` of its data XORed
      with ``xor``;
    - ``"corrupt-pi"``: a Read executed, then the last byte of the
      protection information field ``pi_field`` (``"guard"``, ``"app"``,
      ``"ref"``) of its first block XORed with ``xor`` in what it returns
      (when PRACT strips the PI, before the controller's own check);
    - ``"drop-irq"`` / ``"delay-irq"``: posted; the interrupt of its batch
      dropped, or sent ``delay`` seconds late;
    - ``"cfs"``: CSTS.CFS, nothing more fetched, this command never
      completes (a controller reset recovers);
    - ``"power-loss"``: surprise power loss (see :meth:`Faults.power_loss`);
    - ``"zone-readonly"``, ``"zone-offline"``, ``"zone-finish-recommended"``,
      ``"zone-reset-recommended"``: the controller's own change to the zone
      (``zone``, else the zone of the command's first LBA), with the Changed
      Zone List entry and Zone Descriptor Changed notice; then the command
      runs, meeting the zone as it now is.

    Firing: the first ``skip`` matches pass; then each match fires with
    ``probability`` (a repeatable draw from ``seed``) until ``count`` hits
    (0: no limit).
    """

    action: Action
    queue: int | Literal["io", "admin"] = "io"
    opcode: int | None = None
    nsid: int | None = None
    lba: tuple[int, int] | None = None
    zone: int | None = None
    status: int | None = None
    delay: float = 0.0
    abortable: bool = False
    byte: int = 0
    xor: int = 0xFF
    count: int = 0
    skip: int = 0
    probability: float = 1.0
    seed: int = 0
    pi_field: str | None = None

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        def bad(message: str) -> FaultRuleError:
            return FaultRuleError(f"fault rule {self.action!r}: {message}")

        if self.action not in ACTIONS:
            raise FaultRuleError(f"unknown fault action {self.action!r}; use one of {', '.join(ACTIONS)}")
        if isinstance(self.queue, str):
            if self.queue not in ("io", "admin"):
                raise bad(f'queue {self.queue!r} must be "io", "admin" or a queue ID')
        elif not isinstance(self.queue, int) or isinstance(self.queue, bool) or not 0 <= self.queue <= 0xFFFF:
            raise bad(f"queue {self.queue!r} must be a queue ID in 0..65535")
        for name, value, top in (
            ("opcode", self.opcode, 0xFF),
            ("nsid", self.nsid, 0xFFFFFFFF),
        ):
            if value is not None and (not isinstance(value, int) or not 0 <= value <= top):
                raise bad(f"{name} {value!r} must be an int in 0..{top:#x}")
        if self.zone is not None and (
            not isinstance(self.zone, int) or isinstance(self.zone, bool) or not 0 <= self.zone < 1 << 32
        ):
            raise bad(f"zone {self.zone!r} must be a zone index in 0..2**32-1")
        if self.lba is not None:
            if len(self.lba) != 2 or not all(isinstance(x, int) and 0 <= x < 1 << 64 for x in self.lba):
                raise bad(f"lba {self.lba!r} must be (first, last), LBAs in 0..2**64-1")
            if self.lba[0] > self.lba[1]:
                raise bad(f"lba range {self.lba[0]}..{self.lba[1]} is empty: first must not exceed last")
        if self.action == "status":
            if self.status is None:
                raise bad("status needs status=: the 15-bit status field, e.g. nvmefast.status.Status.WRITE_FAULT")
            if not isinstance(self.status, int) or not 0 < self.status & 0x7FFF or self.status >> 15:
                raise bad(f"status {self.status!r} must be a non-zero 15-bit status field (0 is success)")
            if not self.status & 0x7FF:
                raise bad(f"status {self.status:#x} has SCT 0 and SC 0 (Successful Completion)")
        elif self.status is not None:
            raise bad("status= belongs to the status action only")
        if self.action in ("delay", "delay-irq"):
            if not isinstance(self.delay, (int, float)) or not 0 < self.delay <= _MAX_DELAY_S:
                raise bad(f"delay {self.delay!r} must be in (0, 3600] seconds; a command that never completes is 'never'")
        elif self.delay:
            raise bad("delay= belongs to delay and delay-irq only")
        if self.abortable and self.action not in ("delay", "never"):
            raise bad("abortable belongs to delay and never only")
        if self.action == "corrupt-pi":
            if self.pi_field not in PI_FIELDS:
                raise bad(f"corrupt-pi needs pi_field, one of {', '.join(PI_FIELDS)} (text: corrupt-pi=guard)")
        elif self.pi_field is not None:
            raise bad("pi_field belongs to corrupt-pi only")
        if self.action in ("corrupt", "corrupt-pi"):
            if self.opcode not in (None, IO_OPCODES["read"]):
                raise bad(f"{self.action} changes what a Read returns; opcode {self.opcode:#04x} is not read (02h)")
            if not isinstance(self.byte, int) or not 0 <= self.byte < 1 << 32:
                raise bad(f"byte {self.byte!r} must be an offset in 0..2**32-1")
            if not isinstance(self.xor, int) or not 1 <= self.xor <= 0xFF:
                raise bad(f"xor {self.xor!r} must be in 1..255 (0 would change nothing)")
        if self.admin:
            if self.action in ("corrupt", "corrupt-pi"):
                raise bad(f'{self.action} applies to I/O commands only; match queue "io" or an I/O queue ID')
            if self.lba is not None:
                raise bad("admin commands have no LBA range; drop lba or match I/O queues")
            if self.zone is not None:
                raise bad("admin commands touch no zone; drop zone or match I/O queues")
            if self.action in ZONE_ACTIONS:
                raise bad(f'{self.action} applies to I/O commands only; match queue "io" or an I/O queue ID')
        for name, value in (("count", self.count), ("skip", self.skip), ("seed", self.seed)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                raise bad(f"{name} {value!r} must be an int in 0..2**64-1")
        if not isinstance(self.probability, (int, float)) or not 0 < self.probability <= 1:
            raise bad(f"probability {self.probability!r} must be in (0, 1]")

    @property
    def admin(self) -> bool:
        """True when the rule matches the admin queue."""
        return self.queue in ("admin", 0)

    # -- the text form -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """A rule from its text form (``docs/faults.md``), e.g.
        ``"read lba=0..7 count=1 -> status unrecovered-read-error dnr"``."""
        if "->" not in text:
            raise FaultRuleError(f"fault rule {text!r}: needs '->' between what it matches and what it does")
        lhs, rhs = text.split("->", 1)
        fields: dict[str, object] = {}
        words = rhs.split()
        if not words:
            raise FaultRuleError(f"fault rule {text!r}: no action after '->'; use one of {', '.join(ACTIONS)}")
        action = words[0]
        if action.startswith("corrupt-pi="):
            action, fields["pi_field"] = action.split("=", 1)
        if action not in ACTIONS:
            raise FaultRuleError(f"fault rule {text!r}: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        fields["action"] = action
        rest = _action_args(text, action, words[1:], fields)
        for word in lhs.split() + rest:
            _match_word(text, word, fields)
        return cls(**fields)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts: list[str] = []
        if self.queue != "io":
            parts.append("admin" if self.queue == "admin" else f"queue={self.queue}")
        if self.opcode is not None:
            names = ADMIN_OPCODES if self.admin else IO_OPCODES
            name = next((n for n, o in names.items() if o == self.opcode), None)
            parts.append(name if name is not None else f"opcode={self.opcode:#04x}")
        if self.nsid is not None:
            parts.append(f"nsid={self.nsid}")
        if self.lba is not None:
            first, last = self.lba
            parts.append(f"lba={first}" if first == last else f"lba={first}..{last}")
        if self.zone is not None:
            parts.append(f"zone={self.zone}")
        for name, value, default in (
            ("count", self.count, 0),
            ("skip", self.skip, 0),
            ("p", self.probability, 1.0),
            ("seed", self.seed, 0),
        ):
            if value != default:
                parts.append(f"{name}={value}")
        if not parts:
            parts.append("io")
        action: list[str] = [self.action]
        if self.action == "status" and self.status is not None:
            code = self.status & 0x7FF
            name = next((n for n, v in STATUS_NAMES.items() if v == code), None)
            action.append(name if name is not None else f"{code >> 8}/{code & 0xFF:#04x}")
            action += [flag for bit, flag in ((DNR, "dnr"), (MORE, "more")) if self.status & bit]
            if crd := self.status >> 11 & 3:
                action.append(f"crd={crd}")
        if self.action in ("delay", "delay-irq"):
            action.append(_duration_text(self.delay))
        if self.abortable:
            action.append("abortable")
        if self.action == "corrupt":
            action += [f"byte={self.byte}", f"xor={self.xor:#04x}"]
        if self.action == "corrupt-pi":
            action = [f"corrupt-pi={self.pi_field}"]
            if self.xor != 0xFF:
                action.append(f"xor={self.xor:#04x}")
        return " ".join(parts) + " -> " + " ".join(action)


def _duration_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        value = seconds / scale
        if value >= 1 and abs(value - round(value)) < 1e-9:
            return f"{round(value)}{unit}"
    return f"{round(seconds * 1e9)}ns"


def _int(text: str, word: str, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise FaultRuleError(f"fault rule {text!r}: {word!r} needs an integer (decimal or 0x hex)") from None


def _duration(text: str, word: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s)", word)
    if m is None:
        raise FaultRuleError(f"fault rule {text!r}: {word!r} is not a duration; write 50ms, 2s, 100us or 500ns")
    return float(m.group(1)) / _PER_SECOND[m.group(2)]


def _action_args(text: str, action: str, words: list[str], fields: dict[str, object]) -> list[str]:
    """Consumes the action's own arguments; returns the words left (matchers
    and firing options may follow the action)."""
    rest: list[str] = []
    status: int | None = None
    flags = 0
    for word in words:
        if action == "status" and status is None and "=" not in word:
            if m := re.fullmatch(r"(\w+)/(\w+)", word):
                sct, sc = _int(text, word, m.group(1)), _int(text, word, m.group(2))
                if not (0 <= sct <= 7 and 0 <= sc <= 0xFF):
                    raise FaultRuleError(f"fault rule {text!r}: status {word}: SCT is 0..7 and SC 0..0xff")
                status = sct << 8 | sc
            elif word in STATUS_NAMES:
                status = STATUS_NAMES[word]
            else:
                raise FaultRuleError(
                    f"fault rule {text!r}: status {word!r} is neither SCT/SC (like 2/0x81) nor a name "
                    f"(like unrecovered-read-error, write-fault, internal, data-transfer-error)"
                )
        elif action == "status" and word in ("dnr", "more"):
            flags |= DNR if word == "dnr" else MORE
        elif action == "status" and word.startswith("crd="):
            crd = _int(text, word, word[4:])
            if not 0 <= crd <= 3:
                raise FaultRuleError(f"fault rule {text!r}: crd is 0..3")
            flags |= crd << 11
        elif action in ("delay", "delay-irq") and "delay" not in fields and "=" not in word and word[0].isdigit():
            fields["delay"] = _duration(text, word)
        elif action in ("delay", "never") and word == "abortable":
            fields["abortable"] = True
        elif action == "corrupt" and word.startswith(("byte=", "xor=")):
            key, value = word.split("=", 1)
            fields[key] = _int(text, word, value)
        elif action == "corrupt-pi" and word.startswith("xor="):
            fields["xor"] = _int(text, word, word[4:])
        elif action == "corrupt-pi" and "pi_field" not in fields and word in PI_FIELDS:
            fields["pi_field"] = word
        else:
            rest.append(word)
    if action == "status":
        if status is None:
            raise FaultRuleError(f"fault rule {text!r}: status needs a status: SCT/SC (2/0x81) or a name")
        fields["status"] = status | flags
    if action in ("delay", "delay-irq") and "delay" not in fields:
        raise FaultRuleError(f"fault rule {text!r}: {action} needs a duration, e.g. {action} 50ms")
    return rest


def _match_word(text: str, word: str, fields: dict[str, object]) -> None:
    if word in ("io", "admin"):
        fields["queue"] = word
        return
    if "=" not in word:
        names = ADMIN_OPCODES if fields.get("queue") in ("admin", 0) else IO_OPCODES
        if word in names:
            fields["opcode"] = names[word]
            return
        other = IO_OPCODES if names is ADMIN_OPCODES else ADMIN_OPCODES
        hint = " (an admin opcode: put 'admin' before it)" if word in other and names is IO_OPCODES else ""
        raise FaultRuleError(
            f"fault rule {text!r}: {word!r} is not a matcher{hint}; use io, admin, an opcode name "
            f"({', '.join(sorted(names))}), or key=value (queue, opcode, nsid, lba, zone, count, skip, p, seed)"
        )
    key, value = word.split("=", 1)
    if key == "queue":
        fields["queue"] = value if value in ("io", "admin") else _int(text, word, value)
    elif key in ("opcode", "nsid", "zone", "count", "skip", "seed"):
        fields[key] = _int(text, word, value)
    elif key == "lba":
        first, sep, last = value.partition("..")
        a = _int(text, word, first)
        fields["lba"] = (a, _int(text, word, last) if sep else a)
    elif key in ("p", "probability"):
        try:
            fields["probability"] = float(value)
        except ValueError:
            raise FaultRuleError(f"fault rule {text!r}: {word!r} needs a number in (0, 1]") from None
    else:
        raise FaultRuleError(
            f"fault rule {text!r}: unknown key {key!r}; use queue, opcode, nsid, lba, zone, count, skip, p or seed"
        )


class InjectedFault:
    """A rule installed in a controller: its live counters, and removal."""

    def __init__(self, table: Faults, rule_id: int, rule: FaultRule) -> None:
        self._table = table
        self.id = rule_id
        """The core's rule id."""
        self.rule = rule
        """The rule as added."""
        self._last = (0, 0)

    def _counters(self) -> tuple[int, int]:
        # Once removed, the counters it had when last seen.
        c = self._table._counters().get(self.id)
        if c is not None:
            self._last = c
        return self._last

    @property
    def installed(self) -> bool:
        """True until removed."""
        return self.id in self._table._counters()

    @property
    def hits(self) -> int:
        """Times the rule fired (after removal: as last seen)."""
        return self._counters()[1]

    @property
    def matched(self) -> int:
        """Commands that matched it, fired on or not (after removal: as last seen)."""
        return self._counters()[0]

    def wait(self, hits: int = 1, timeout: float = 10.0) -> None:
        """Block until the rule has fired ``hits`` times; raise
        :class:`~nvmefast.errors.HostTimeoutError` after ``timeout`` seconds."""
        from nvmefast.errors import HostTimeoutError

        deadline = time.monotonic() + timeout
        while self.hits < hits:
            if time.monotonic() >= deadline:
                raise HostTimeoutError(f"fault rule '{self.rule}' fired {self.hits} of {hits} times in {timeout} s")
            time.sleep(0.001)

    def remove(self) -> None:
        """Take the rule out (idempotent). Commands it holds stay held."""
        self._counters()
        self._table._core().remove(self.id)

    def __repr__(self) -> str:
        return f"<InjectedFault {self.id} '{self.rule}' hits={self.hits}>"


class Faults:
    """A controller's fault rules (``Controller.faults``) and its
    controller-level faults: CSTS.CFS by rule, and power loss."""

    def __init__(self, engine: Engine, power_on: Callable[[], None]) -> None:
        self._table: FaultTable = engine.faults()
        # The controller's side of power-on: registers and MSI-X state.
        self._power_on = power_on

    def _core(self) -> FaultTable:
        return self._table

    def _counters(self) -> dict[int, tuple[int, int]]:
        return {r["id"]: (r["matched"], r["hits"]) for r in self._table.rules()}

    def add(self, rule: FaultRule | str) -> InjectedFault:
        """Install ``rule`` (a :class:`FaultRule` or its text form) after the
        rules already there; it applies from the workers' next pass. A
        ``power-loss`` rule starts tracking unflushed writes (see
        :meth:`track_unflushed`) so the power loss has something to drop."""
        if isinstance(rule, str):
            rule = FaultRule.parse(rule)
        elif not isinstance(rule, FaultRule):
            raise FaultRuleError(f"add() takes a FaultRule or its text form, not {type(rule).__name__}")
        if rule.action == "power-loss":
            self.track_unflushed()
        queue: int | str = rule.queue
        try:
            rule_id = self._table.add(
                queue=queue,
                opcode=rule.opcode,
                nsid=rule.nsid,
                lba=rule.lba,
                zone=rule.zone,
                action=rule.action,
                status=rule.status or 0,
                delay_ns=round(rule.delay * 1e9),
                abortable=rule.abortable,
                byte=rule.byte,
                xor=rule.xor,
                count=rule.count,
                skip=rule.skip,
                probability=float(rule.probability),
                seed=rule.seed,
                pi_field=rule.pi_field or "",
            )
        except ConfigError as e:
            raise FaultRuleError(f"fault rule '{rule}': {e}") from None
        return InjectedFault(self, rule_id, rule)

    def remove(self, fault: InjectedFault) -> None:
        """Take ``fault`` out (idempotent)."""
        fault.remove()

    def clear(self) -> None:
        """Take every rule out. Commands already held stay held."""
        self._table.clear()

    def __iter__(self) -> Iterator[dict[str, int]]:
        """The installed rules in order, as ``{"id", "matched", "hits"}``."""
        return iter(self._table.rules())

    def __len__(self) -> int:
        return len(self._table.rules())

    @property
    def held(self) -> int:
        """Commands a rule holds back now (delayed, never completed, CFS)."""
        return self._table.held()

    # -- power ---------------------------------------------------------------

    def track_unflushed(self, on: bool = True) -> None:
        """Keep the pre-images of writes no Flush has made durable, so a
        power loss can drop them (memory and file namespaces; a namespace
        of a storage object keeps its own durability). Writes made before
        tracking started are treated as durable. Costs a copy of each block
        on its first write after a Flush; off, one relaxed load per write."""
        self._table.track_unflushed(on)

    @property
    def unflushed_blocks(self) -> int:
        """Blocks holding writes that no Flush has made durable (while tracked)."""
        return self._table.unflushed_blocks()

    def power_loss(self) -> int:
        """Surprise power loss now: every command in flight is lost, writes
        not made durable (by Flush, FUA, or with the Volatile Write Cache off)
        since tracking began are rolled back, and the controller is off:
        BAR0 reads return all ones, writes are ignored, nothing is fetched.
        Returns the blocks rolled back. :meth:`power_on` brings it back."""
        return self._table.power_loss()

    @property
    def powered_off(self) -> bool:
        """True while the controller is off after a power loss (by rule or call)."""
        return self._table.powered_off

    def power_on(self) -> None:
        """Power the controller back on: its registers and MSI-X state as at
        power-on (CC.EN clear), namespaces holding what was durable."""
        self._table.power_on()
        self._power_on()
