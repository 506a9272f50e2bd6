"""``NamespaceConfig(backend=obj)``: a namespace whose blocks come from Python.

The oracle is the object's own record of calls and its block store: one
call per Read/Write command whatever the PRPs, exactly the command's LBAs,
Internal Error (never a dead worker) for an exception, a wrong length or a
wrong type, the optional methods used when present and replaced when not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from nvmefast import CommandError, ConfigError, Controller, ControllerConfig, NamespaceConfig, Status, Storage
from nvmefast.testing import Host
from nvmefast.testing import nvm

LBA = 512
BLOCKS = 2048


class Blocks:
    """A dict of blocks, recording every call."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.fail_read: BaseException | None = None
        self.read_result: object = None
        self.gate: threading.Event | None = None

    def read(self, lba: int, nlb: int) -> bytes:
        self.calls.append(("read", lba, nlb))
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_read is not None:
            raise self.fail_read
        if self.read_result is not None:
            return self.read_result  # type: ignore[return-value]
        return b"".join(self.blocks.get(lba + i, bytes(LBA)) for i in range(nlb))

    def write(self, lba: int, data: bytes) -> None:
        assert len(data) % LBA == 0
        self.calls.append(("write", lba, len(data) // LBA))
        for i in range(len(data) // LBA):
            self.blocks[lba + i] = data[i * LBA:(i + 1) * LBA]


class WithExtras(Blocks):
    """Blocks with the optional methods."""

    def flush(self) -> None:
        self.calls.append(("flush", 0, 0))

    def write_zeroes(self, lba: int, nlb: int) -> None:
        self.calls.append(("write_zeroes", lba, nlb))
        for i in range(nlb):
            self.blocks.pop(lba + i, None)

    def deallocate(self, lba: int, nlb: int) -> None:
        self.calls.append(("deallocate", lba, nlb))
        for i in range(nlb):
            self.blocks.pop(lba + i, None)


def _host(store: object) -> Iterator[tuple[Controller, Host]]:
    cfg = ControllerConfig(namespaces=[NamespaceConfig(size_bytes=BLOCKS * LBA, backend=store)])  # type: ignore[arg-type]
    with Controller(cfg) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        yield ctrl, host


@pytest.fixture
def store() -> Blocks:
    return Blocks()


@pytest.fixture
def host(store: Blocks) -> Iterator[tuple[Controller, Host]]:
    yield from _host(store)


def test_storage_protocol_is_runtime_checkable(store: Blocks) -> None:
    assert isinstance(store, Storage)
    assert not isinstance(object(), Storage)


def test_one_call_per_command_with_the_commands_lbas(store: Blocks, host: tuple[Controller, Host]) -> None:
    ctrl, h = host
    assert ctrl.namespace_info(1)["backend"] == "custom"
    data = bytes(range(256)) * 64  # 16 KiB: a PRP list of four pages
    h.write(1, 100, data)
    assert store.calls == [("write", 100, 32)]
    assert b"".join(store.blocks[100 + i] for i in range(32)) == data
    assert h.read(1, 100, 32) == data
    assert store.calls[-1] == ("read", 100, 32)
    # Blocks never written read as the store says (here: zeroes).
    assert h.read(1, 0, 2) == bytes(2 * LBA)
    counters = ctrl.counters()
    assert counters["storage_calls"] == 3 and counters["storage_errors"] == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda s: setattr(s, "fail_read", RuntimeError("disk on fire")), "disk on fire"),
        (lambda s: setattr(s, "read_result", b"short"), "returned 5 bytes"),
        (lambda s: setattr(s, "read_result", "not bytes"), "must return bytes"),
    ],
    ids=["raises", "wrong-length", "wrong-type"],
)
def test_a_failing_read_is_an_internal_error_logged_and_counted(
    store: Blocks, host: tuple[Controller, Host], caplog: pytest.LogCaptureFixture, setup: object, message: str
) -> None:
    ctrl, h = host
    setup(store)  # type: ignore[operator]
    with caplog.at_level(logging.ERROR, logger="nvmefast.backend"):
        with pytest.raises(CommandError) as e:
            h.read(1, 7, 1)
    assert e.value.status & 0x7FF == Status.INTERNAL
    assert any(message in (r.getMessage() + str(r.exc_info)) for r in caplog.records), caplog.records
    assert ctrl.counters()["storage_errors"] == 1
    # The worker lives on: the next command works.
    store.fail_read, store.read_result = None, None
    h.write(1, 7, b"k" * LBA)
    assert h.read(1, 7, 1) == b"k" * LBA


def test_a_blocking_read_holds_its_command_until_it_returns(store: Blocks, host: tuple[Controller, Host]) -> None:
    _ctrl, h = host
    h.write(1, 9, b"b" * LBA)
    store.gate = threading.Event()
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(h.read(1, 9, 1, timeout=10)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not got  # the read waits for the store
    store.gate.set()
    t.join(10)
    assert got == [b"b" * LBA]


def test_optional_methods_are_used_when_present() -> None:
    store = WithExtras()
    for _ctrl, h in _host(store):
        h.write(1, 10, b"w" * (4 * LBA))
        c = nvm.write_zeroes(h, 1, 10, 2)
        assert c.status == 0
        assert ("write_zeroes", 10, 2) in store.calls
        c = nvm.dataset_management(h, 1, [(12, 2)])
        assert c.status == 0 and ("deallocate", 12, 2) in store.calls
        assert h.read(1, 10, 4) == bytes(4 * LBA)
        h.flush(1)
        assert ("flush", 0, 0) in store.calls


def test_without_optional_methods_zero_blocks_are_written(store: Blocks, host: tuple[Controller, Host]) -> None:
    _ctrl, h = host
    h.write(1, 20, b"q" * (3 * LBA))
    assert nvm.write_zeroes(h, 1, 20, 3).status == 0
    assert store.calls[-1] == ("write", 20, 3)
    assert h.read(1, 20, 3) == bytes(3 * LBA)
    assert nvm.dataset_management(h, 1, [(21, 1)]).status == 0
    assert store.calls[-1] == ("write", 21, 1)
    h.flush(1)  # no flush(): nothing to call, success


def test_compare_reads_the_store(store: Blocks, host: tuple[Controller, Host]) -> None:
    _ctrl, h = host
    h.write(1, 30, b"c" * LBA)
    assert nvm.compare(h, 1, 30, b"c" * LBA).status == 0
    assert nvm.compare(h, 1, 30, b"d" * LBA).status != 0


def test_objects_without_read_and_write_are_config_errors() -> None:
    class ReadOnly:
        def read(self, lba: int, nlb: int) -> bytes:
            return b""

    with pytest.raises(ConfigError, match=r"ReadOnly has no write\(\)"):
        NamespaceConfig(size_bytes=1 << 20, backend=ReadOnly())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="apply to backend 'file' only"):
        NamespaceConfig(size_bytes=1 << 20, backend=Blocks(), path="x.img")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiple of lba_size"):
        NamespaceConfig(size_bytes=1000, backend=Blocks())  # type: ignore[arg-type]
