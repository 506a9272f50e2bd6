"""File namespaces: configuration, data in the file at the right offsets,
read-only namespaces, Flush/FUA/write cache against the page cache, holes
from Write Zeroes and Dataset Management, and every refusal and I/O error
with the status or ConfigError it gets.

The oracles are the kernel's, not the device's: the file read with
``os.pread``, its holes with SEEK_DATA/SEEK_HOLE, its dirty pages with
cachestat(2) (see fileutil.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fileutil import (
    DIRECT_DIR, ENV_THREADS, MODES, FileMode, data_ranges, dirty_pages, environment,
    file_namespace, is_hole, needs_cachestat, pread_all, pwrite_all, scratch_dir,
)
from nvmutil import GENERIC, LBA_OUT_OF_RANGE, SUCCESS, assert_ok, assert_status
from nvmefast import CommandError, ConfigError, Controller, ControllerConfig, NamespaceConfig
from nvmefast.structs import ErrorLogEntry, SmartLog
from nvmefast.testing import Host, build_sqe, data_pointers
from nvmefast.testing import sqe as op
from nvmefast.testing.nvm import (
    CDW12_FUA, DSM_AD, copy, copy_cdws, copy_range, data_buffer, dataset_management, write_zeroes,
)

MiB = 1 << 20
NAMESPACE_WRITE_PROTECTED = 0x20  # SCT 0h
CAPACITY_EXCEEDED = 0x81  # SCT 0h
FORMAT_NVM = 0x80
FID_VOLATILE_WRITE_CACHE = 0x06
ROOT = os.geteuid() == 0


@pytest.fixture(params=[*MODES, ENV_THREADS])
def mode(request: pytest.FixtureRequest) -> Iterator[FileMode]:
    """Each way of serving a file, with its environment set."""
    file_mode: FileMode = request.param
    with environment(file_mode.env):
        yield file_mode


@pytest.fixture
def workdir(mode: FileMode) -> Iterator[str]:
    """A scratch directory on the file system ``mode`` wants."""
    with scratch_dir(mode.directory) as d:
        yield d


@pytest.fixture
def disk_dir() -> Iterator[str]:
    """A scratch directory on a disk file system (page cache with writeback)."""
    with scratch_dir(DIRECT_DIR) as d:
        yield d


@contextlib.contextmanager
def serving(*namespaces: NamespaceConfig, **kw: Any) -> Iterator[tuple[Controller, Host]]:
    """A controller on ``namespaces`` and an enabled host with I/O queue pair 1."""
    with Controller(ControllerConfig(namespaces=namespaces, **kw)) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        yield ctrl, host


def image(directory: str, size: int, name: str = "disk.img", data: bytes = b"", offset: int = 0) -> str:
    """A sparse image of ``size`` bytes holding ``data`` at ``offset``."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.truncate(size)
    if data:
        pwrite_all(path, offset, data)
    return path


def raises_config_error(make: Any, *words: str) -> str:
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# -- configuration (no controller) ---------------------------------------------


def test_ram_and_null_defaults_are_unchanged() -> None:
    assert NamespaceConfig() == NamespaceConfig(size_bytes=64 * MiB, lba_size=512, backend="ram")
    assert NamespaceConfig(backend="null").size_bytes == 64 * MiB
    ns = NamespaceConfig()
    assert (ns.path, ns.readonly, ns.cache, ns.io) == (None, False, "auto", "auto")


def test_file_config_defaults(tmp_path: Path) -> None:
    path = image(str(tmp_path), MiB)
    ns = NamespaceConfig(backend="file", path=path)
    assert (ns.size_bytes, ns.lba_size, ns.readonly, ns.cache, ns.io) == (None, 512, False, "auto", "auto")
    with pytest.raises(ConfigError, match="known once a Controller opened it"):
        ns.lbas
    assert NamespaceConfig(backend="file", path=Path(path), size_bytes=2 * MiB).lbas == 4096
    hash(ControllerConfig(namespaces=[ns]))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"backend": "file"}, ("path is required", "backend 'file'")),
        ({"backend": "file", "path": b"disk.img"}, ("path must be a str",)),
        ({"backend": "file", "path": ""}, ("must name a file",)),
        ({"backend": "file", "path": "x.img", "size_bytes": 0}, ("size_bytes", "or None for the size of the file")),
        ({"backend": "file", "path": "x.img", "size_bytes": 1000}, ("multiple of lba_size 512", "try 512")),
        ({"backend": "file", "path": "x.img", "cache": "writeback"}, ("cache must be one of",)),
        ({"backend": "file", "path": "x.img", "io": "aio"}, ("io must be one of",)),
        ({"backend": "file", "path": "x.img", "readonly": 1}, ("readonly must be a bool",)),
        ({"path": "x.img"}, ("path is for backend 'file'", "drop path")),
        ({"backend": "null", "readonly": True}, ("readonly applies to backend 'file' only",)),
        ({"cache": "direct"}, ("cache applies to backend 'file' only",)),
        ({"io": "threads"}, ("io applies to backend 'file' only",)),
    ],
)
def test_file_config_values(kwargs: dict[str, Any], words: tuple[str, ...], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raises_config_error(lambda: NamespaceConfig(**kwargs), *words)


def test_file_config_checks_what_is_on_disk(tmp_path: Path) -> None:
    d = str(tmp_path)
    raises_config_error(lambda: NamespaceConfig(backend="file", path=d), d, "is a directory", "disk.img")
    missing = os.path.join(d, "missing.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=missing), missing, "no such file",
                        f"truncate -s 1G {missing}", "size_bytes")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=missing, size_bytes=MiB, readonly=True),
                        missing, "read-only", "cannot create")
    nodir = os.path.join(d, "nodir", "x.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=nodir, size_bytes=MiB),
                        os.path.join(d, "nodir"), "does not exist")
    # a size given creates the file later: nothing to refuse yet
    assert NamespaceConfig(backend="file", path=missing, size_bytes=MiB).size_bytes == MiB
    empty = image(d, 0, "empty.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=empty), empty, "is empty",
                        f"truncate -s 1G {empty}")
    assert NamespaceConfig(backend="file", path=empty, size_bytes=MiB).size_bytes == MiB
    odd = image(d, MiB + 100, "odd.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=odd), odd, str(MiB + 100),
                        "not a multiple of the 512-byte", f"truncate -s {MiB + 512} {odd}")
    half = image(d, MiB + 512, "half.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=half, lba_size=4096), half,
                        "4096-byte", f"truncate -s {MiB + 4096}", "lba_size=512")
    big = image(d, 4 * MiB, "big.img")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=big, size_bytes=2 * MiB), big,
                        str(4 * MiB), "more than size_bytes", "never truncates")
    raises_config_error(lambda: NamespaceConfig(backend="file", path=big, size_bytes=8 * MiB, readonly=True),
                        big, "cannot extend it")


def test_one_file_two_writable_namespaces_is_refused(tmp_path: Path) -> None:
    path = image(str(tmp_path), MiB)
    rw = NamespaceConfig(backend="file", path=path)
    ro = NamespaceConfig(backend="file", path=path, readonly=True)
    link = os.path.join(str(tmp_path), "link.img")
    os.symlink(path, link)
    raises_config_error(lambda: ControllerConfig(namespaces=[rw, NamespaceConfig(backend="file", path=link)]),
                        "namespaces[0] and [1]", path, "a file of its own")
    raises_config_error(lambda: ControllerConfig(namespaces=[ro, rw]), "namespaces[0] and [1]")
    assert len(ControllerConfig(namespaces=[ro, ro]).namespaces) == 2


# -- data in the file ------------------------------------------------------------


@pytest.mark.parametrize("lba_size", [512, 4096])
def test_writes_land_in_the_file_at_their_offsets(mode: FileMode, workdir: str, lba_size: int) -> None:
    size = 8 * MiB
    nsze = size // lba_size
    path = os.path.join(workdir, "disk.img")
    rng = random.Random(lba_size)
    written: dict[int, bytes] = {}
    with serving(file_namespace(mode, path, size, lba_size)) as (ctrl, host):
        info = ctrl.namespace_info(1)
        assert (info["backend"], info["path"], info["io"], info["cache"], info["readonly"]) == (
            "file", path, mode.expected_io, mode.cache, False)
        for slba, nlb in [(0, 1), (1, 7), (nsze - 1, 1), (nsze // 2, 32), (12345 % nsze, 3)]:
            data = rng.randbytes(nlb * lba_size)
            host.write(1, slba, data)
            for i in range(nlb):
                written[slba + i] = data[i * lba_size:(i + 1) * lba_size]
        # while the device still has the file open: what a reader of the file sees
        for lba, block in written.items():
            assert pread_all(path, lba * lba_size, lba_size) == block, f"LBA {lba}"
        counters = ctrl.counters()
        assert counters["file_ops"] >= 5 and counters["file_errors"] == 0, counters
    assert os.stat(path).st_size == size
    image_bytes = pread_all(path, 0, size)
    expected = bytearray(size)
    for lba, block in written.items():
        expected[lba * lba_size:(lba + 1) * lba_size] = block
    assert image_bytes == bytes(expected), "bytes outside the written blocks changed"


@pytest.mark.parametrize("lba_size", [512, 4096])
def test_the_device_reads_what_the_file_holds(mode: FileMode, workdir: str, lba_size: int) -> None:
    size = 4 * MiB
    content = random.Random(7).randbytes(size)
    path = image(workdir, size, data=content)
    with serving(file_namespace(mode, path, None, lba_size)) as (ctrl, host):
        ns = host.identify_namespace(1)
        assert (ns.nsze, ns.ncap, ns.nuse, ns.lba_size) == (size // lba_size,) * 3 + (lba_size,)
        assert ctrl.config.namespaces[0].size_bytes == size
        assert ctrl.namespace_info(1)["size_bytes"] == size
        for slba in (0, 3, size // lba_size - 8, size // lba_size // 3):
            assert host.read(1, slba, 8) == content[slba * lba_size:(slba + 8) * lba_size], f"slba {slba}"
        # one past the end of the file is past the namespace
        cqe = host.io(build_sqe(op.IO_READ, nsid=1, prp1=host.alloc(lba_size), cdw10=size // lba_size))
        assert_status(cqe, GENERIC, LBA_OUT_OF_RANGE)


def test_size_bytes_creates_and_extends_a_sparse_file(mode: FileMode, workdir: str) -> None:
    path = os.path.join(workdir, "new.img")
    with serving(file_namespace(mode, path, 16 * MiB)) as (ctrl, host):
        assert host.identify_namespace(1).nsze == 16 * MiB // 512
        st = os.stat(path)
        assert st.st_size == 16 * MiB
        assert st.st_blocks * 512 < MiB, "a created image must be sparse"
        host.write(1, 10, b"\xab" * 512)
    # a shorter image is extended, keeping what it holds
    with serving(file_namespace(mode, path, 32 * MiB)) as (ctrl, host):
        assert os.stat(path).st_size == 32 * MiB
        assert host.read(1, 10, 1) == b"\xab" * 512
        assert host.read(1, 32 * MiB // 512 - 1, 1) == bytes(512)


def test_data_outlives_the_controller(mode: FileMode, workdir: str) -> None:
    path = os.path.join(workdir, "keep.img")
    data = os.urandom(64 * 1024)
    with serving(file_namespace(mode, path, 8 * MiB)) as (_, host):
        host.write(1, 100, data)
        host.flush(1)
    with serving(file_namespace(mode, path, None)) as (_, host):
        assert host.read(1, 100, len(data) // 512) == data


# -- read-only -----------------------------------------------------------------------


def test_readonly_namespace(mode: FileMode, workdir: str) -> None:
    content = os.urandom(MiB)
    path = image(workdir, 2 * MiB, data=content)
    before = pread_all(path, 0, 2 * MiB)
    rw_path = image(workdir, MiB, "rw.img")
    with serving(file_namespace(mode, path, None, readonly=True),
                 file_namespace(mode, rw_path, None)) as (ctrl, host):
        assert ctrl.namespace_info(1)["readonly"] is True
        assert host.identify_namespace(1).write_protected, "NSATTR bit 0 clear on a read-only namespace"
        assert not host.identify_namespace(2).write_protected
        assert host.identify(0x08, 1)[8] & 1, "CNS 08h NSATTR bit 0 clear"
        assert not host.identify(0x08, 2)[8] & 1
        assert host.read(1, 0, 16) == content[:16 * 512]
        buf = host.alloc(4096)
        host.write_mem(buf, os.urandom(4096))
        refused = {
            "write": host.io(build_sqe(op.IO_WRITE, nsid=1, prp1=buf, cdw10=0, cdw12=7)),
            "write zeroes": write_zeroes(host, 1, 0, 8),
            "deallocate": dataset_management(host, 1, [(0, 8)], attributes=DSM_AD),
            "copy": copy(host, 1, 100, [(0, 4)]),
        }
        for what, cqe in refused.items():
            assert (cqe.sct, cqe.sc) == (GENERIC, NAMESPACE_WRITE_PROTECTED), f"{what}: {cqe}"
            assert cqe.dnr, f"{what}: DNR clear on a write that would fail again: {cqe}"
        host.flush(1)  # nothing to write back: succeeds
        fmt = host.admin(build_sqe(FORMAT_NVM, nsid=1, cdw10=0))
        assert (fmt.sct, fmt.sc) == (GENERIC, NAMESPACE_WRITE_PROTECTED), str(fmt)
        # the other namespace is writable as ever
        host.write(2, 0, b"w" * 512)
        assert host.read(2, 0, 1) == b"w" * 512
        # read-only shares the file: a second read-only controller opens it
        with Controller(ControllerConfig(namespaces=[file_namespace(mode, path, None, readonly=True)])):
            pass
        # ... but a writer does not get it
        raises_config_error(lambda: Controller(ControllerConfig(namespaces=[file_namespace(mode, path, None)])),
                            path)
    assert pread_all(path, 0, 2 * MiB) == before, "a read-only namespace changed its file"


# -- Flush, FUA and the volatile write cache, seen in the page cache ----------------------


BUFFERED_ON_DISK = [
    pytest.param(FileMode("io_uring", "buffered", DIRECT_DIR), id="io_uring"),
    pytest.param(FileMode("threads", "buffered", DIRECT_DIR), id="threads"),
]


@needs_cachestat
@pytest.mark.parametrize("disk_mode", BUFFERED_ON_DISK)
def test_flush_writes_back_the_page_cache(disk_mode: FileMode, disk_dir: str) -> None:
    path = os.path.join(disk_dir, "flush.img")
    with serving(file_namespace(disk_mode, path, 16 * MiB)) as (_, host):
        host.write(1, 0, os.urandom(128 * 1024))
        host.write(1, 8 * MiB // 512, os.urandom(4096))
        assert dirty_pages(path) > 0, "buffered writes with the write cache on are written back at once"
        host.flush(1)
        assert dirty_pages(path) == 0, "Flush completed with dirty pages left"


@needs_cachestat
@pytest.mark.parametrize("disk_mode", BUFFERED_ON_DISK)
def test_fua_write_is_durable_before_it_completes(disk_mode: FileMode, disk_dir: str) -> None:
    path = os.path.join(disk_dir, "fua.img")
    plain, fua = 0, 8 * MiB  # far apart: never in one folio
    with serving(file_namespace(disk_mode, path, 16 * MiB)) as (_, host):
        host.write(1, plain // 512, os.urandom(64 * 1024))
        host.write(1, fua // 512, os.urandom(64 * 1024), fua=True)
        assert dirty_pages(path, fua, 64 * 1024) == 0, "FUA write completed before it was written back"
        assert dirty_pages(path, plain, 64 * 1024) > 0, "a plain write was written back: FUA proves nothing"
        assert pread_all(path, fua, 4) == host.read(1, fua // 512, 1)[:4]


@needs_cachestat
@pytest.mark.parametrize("disk_mode", BUFFERED_ON_DISK)
def test_volatile_write_cache_feature(disk_mode: FileMode, disk_dir: str) -> None:
    path = os.path.join(disk_dir, "vwc.img")
    with serving(file_namespace(disk_mode, path, 16 * MiB)) as (ctrl, host):
        assert host.identify_controller().vwc & 1, "VWC not reported"
        assert host.get_features(FID_VOLATILE_WRITE_CACHE) == 1
        host.set_features(FID_VOLATILE_WRITE_CACHE, 0)
        assert host.get_features(FID_VOLATILE_WRITE_CACHE) == 0
        assert ctrl.engine.write_cache() is False
        for i in range(8):
            host.write(1, i * 2048, os.urandom(4096))
            assert dirty_pages(path) == 0, f"write {i} completed with the write cache off but not written back"
        host.set_features(FID_VOLATILE_WRITE_CACHE, 1)
        host.write(1, 4096, os.urandom(4096))
        assert dirty_pages(path) > 0, "the write cache is back on: writes should stay in the page cache"
        host.flush(1)
        # a controller reset puts the feature (and the core) back to its default: on
        host.set_features(FID_VOLATILE_WRITE_CACHE, 0)
        host.disable()
        assert ctrl.engine.write_cache() is True, "reset left the core's write cache off"
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        assert host.get_features(FID_VOLATILE_WRITE_CACHE) == 1
        host.write(1, 6000, os.urandom(4096))
        assert dirty_pages(path) > 0


@needs_cachestat
def test_no_volatile_write_cache_means_every_write_is_durable(disk_dir: str) -> None:
    path = os.path.join(disk_dir, "novwc.img")
    mode = FileMode("auto", "buffered", DIRECT_DIR)
    with serving(file_namespace(mode, path, 16 * MiB), volatile_write_cache=False) as (ctrl, host):
        assert host.identify_controller().vwc & 1 == 0
        assert ctrl.engine.write_cache() is False
        for i in range(4):
            host.write(1, i * 4096, os.urandom(8192))
            assert dirty_pages(path) == 0, "VWC 0 but a write completed before it was written back"
        host.disable()  # a reset keeps it off
        assert ctrl.engine.write_cache() is False


# -- Write Zeroes and Dataset Management punch holes -----------------------------------


@pytest.mark.parametrize("lba_size", [512, 4096])
def test_write_zeroes_and_deallocate_punch_holes(mode: FileMode, workdir: str, lba_size: int) -> None:
    size = 8 * MiB
    path = os.path.join(workdir, "holes.img")
    per_mib = MiB // lba_size
    with serving(file_namespace(mode, path, size, lba_size)) as (_, host):
        data = os.urandom(128 * 1024)
        for first in range(0, 4 * per_mib, len(data) // lba_size):
            host.write(1, first, data)
        assert not is_hole(path, 0, 4 * MiB), "written blocks are not allocated: the oracle is blind"
        blocks_before = os.stat(path).st_blocks
        # MiB 1 by Write Zeroes (with and without Deallocate), MiB 3 by DSM deallocate
        assert_ok(write_zeroes(host, 1, per_mib, per_mib // 2))
        assert_ok(write_zeroes(host, 1, per_mib + per_mib // 2, per_mib // 2, deac=True))
        assert_ok(dataset_management(host, 1, [(3 * per_mib, per_mib // 4), (3 * per_mib + per_mib // 4,
                                                                               3 * per_mib // 4)]))
        for slba in (per_mib, 2 * per_mib - 1, 3 * per_mib, 4 * per_mib - 1):
            assert host.read(1, slba, 1) == bytes(lba_size), f"slba {slba} does not read zeroes"
        assert host.read(1, 2 * per_mib, 1) == data[:lba_size], "a neighbour of the hole lost its data"
        assert host.read(1, per_mib - 1, 1) == data[-lba_size:]
        assert is_hole(path, MiB, 2 * MiB), f"Write Zeroes left data: {data_ranges(path)}"
        assert is_hole(path, 3 * MiB, 4 * MiB), f"deallocate left data: {data_ranges(path)}"
        assert not is_hole(path, 2 * MiB, 2 * MiB + 4096)
        assert os.stat(path).st_blocks <= blocks_before - 2 * MiB // 512
        assert pread_all(path, MiB, MiB) == bytes(MiB)


# -- refusals when opening ------------------------------------------------------------------


def test_the_core_checks_the_file_again_when_it_opens_it(tmp_path: Path) -> None:
    # The file changes between the config and the controller: the core's
    # own check is the one that counts.
    d = str(tmp_path)
    path = image(d, MiB)
    ns = NamespaceConfig(backend="file", path=path)
    os.truncate(path, MiB + 100)
    raises_config_error(lambda: Controller(ControllerConfig(namespaces=[ns])), path, "multiple")
    os.truncate(path, 4 * MiB)
    sized = NamespaceConfig(backend="file", path=os.path.join(d, "later.img"), size_bytes=MiB)
    image(d, 4 * MiB, "later.img")
    raises_config_error(lambda: Controller(ControllerConfig(namespaces=[sized])), "later.img")
    os.unlink(path)
    raises_config_error(lambda: Controller(ControllerConfig(namespaces=[ns])), path)
    os.mkdir(path)
    raises_config_error(lambda: Controller(ControllerConfig(namespaces=[ns])), path)


def test_a_file_in_use_is_refused(mode: FileMode, workdir: str) -> None:
    path = image(workdir, MiB)
    ns = file_namespace(mode, path, None)
    with Controller(ControllerConfig(namespaces=[ns])):
        msg = raises_config_error(lambda: Controller(ControllerConfig(namespaces=[ns])), path)
        assert "lock" in msg or "in use" in msg or "another" in msg, msg
    with Controller(ControllerConfig(namespaces=[ns])):
        pass  # closed: the lock went with it


HOLD_FILE = textwrap.dedent("""
    import sys
    from nvmefast import Controller, ControllerConfig, NamespaceConfig
    ns = NamespaceConfig(backend="file", path=sys.argv[1])
    with Controller(ControllerConfig(namespaces=[ns])):
        print("open", flush=True)
        sys.stdin.read()
""")


def test_a_file_another_process_holds_is_refused(tmp_path: Path) -> None:
    path = image(str(tmp_path), MiB)
    child = subprocess.Popen([sys.executable, "-c", HOLD_FILE, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        ns = NamespaceConfig(backend="file", path=path)
        raises_config_error(lambda: Controller(ControllerConfig(namespaces=[ns])), path)
        raises_config_error(lambda: Controller(ControllerConfig(
            namespaces=[NamespaceConfig(backend="file", path=path, readonly=True)])), path)
    finally:
        child.communicate("", timeout=30)
    assert child.returncode == 0
    with Controller(ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=path)])):
        pass


OPEN_AS_NOBODY = textwrap.dedent("""
    import os, sys
    from nvmefast import ConfigError, Controller, ControllerConfig, NamespaceConfig
    # Imported as root (the interpreter may live where nobody may not look), then nobody.
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        Controller(ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=sys.argv[1])]))
    except ConfigError as e:
        print(e)
    else:
        print("opened")
""")


def test_permission_denied() -> None:
    with scratch_dir(DIRECT_DIR) as d:
        os.chmod(d, 0o755)  # others may look inside: the image is what refuses them
        path = image(d, MiB)
        os.chmod(path, 0o444)
        if ROOT:
            # root may write any file: open it as nobody, who may read it but not write it
            r = subprocess.run([sys.executable, "-c", OPEN_AS_NOBODY, path], capture_output=True, text=True,
                               timeout=60, cwd="/")
            assert r.returncode == 0, r.stderr
            message = r.stdout.strip()
        else:
            with pytest.raises(ConfigError) as info:
                Controller(ControllerConfig(namespaces=[NamespaceConfig(backend="file", path=path)]))
            message = str(info.value)
    assert message != "opened", "a read-only image was opened for writing"
    assert path in message and "ermission" in message, message
    assert "readonly" in message or "read-only" in message or "chmod" in message, \
        f"the message should say how to fix it: {message}"


# -- I/O errors from the file -----------------------------------------------------------------


def _error_log(host: Host) -> list[ErrorLogEntry]:
    return [e for e in ErrorLogEntry.parse_log(host.get_log_page(0x01, 4096)) if e.error_count]


def test_enospc_from_dev_full_is_capacity_exceeded(mode: FileMode) -> None:
    ns = NamespaceConfig(backend="file", path="/dev/full", size_bytes=MiB, io=mode.io, cache="buffered")
    with serving(ns) as (ctrl, host):
        smart_before = SmartLog.parse(host.get_log_page(0x02, 512))
        buf = host.alloc(4096)
        host.write_mem(buf, os.urandom(4096))
        cqe = host.io(build_sqe(op.IO_WRITE, nsid=1, prp1=buf, cdw10=16, cdw12=7))
        assert (cqe.sct, cqe.sc) == (GENERIC, CAPACITY_EXCEEDED), str(cqe)
        assert cqe.dnr, f"ENOSPC would recur: DNR should be set: {cqe}"
        entries = _error_log(host)
        assert entries, "no Error Information entry for the failed write"
        e = entries[0]
        assert (e.sqid, e.cid, e.status & 0x7FF, e.nsid) == (1, cqe.cid, CAPACITY_EXCEEDED, 1), e
        assert e.lba == 16, e
        smart = SmartLog.parse(host.get_log_page(0x02, 512))
        assert smart.num_err_log_entries >= smart_before.num_err_log_entries + 1
        assert smart.media_errors == smart_before.media_errors, "ENOSPC is not a media error"
        assert ctrl.counters()["file_errors"] >= 1
        # reads of /dev/full return zeroes; the controller goes on
        assert host.read(1, 0, 8) == bytes(4096)
        assert host.csts() & 0b10 == 0, "CSTS.CFS set by an I/O error"


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[str]:
    """A tmpfs of ``size`` mounted for the test (root only)."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount(8)")
    with scratch_dir(DIRECT_DIR) as d:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        try:
            yield d
        finally:
            subprocess.run(["umount", "-l", d], check=False)


def test_enospc_on_a_full_file_system(mode: FileMode) -> None:
    with tiny_tmpfs("1m") as d:
        path = os.path.join(d, "big.img")
        ns = NamespaceConfig(backend="file", path=path, size_bytes=8 * MiB, io=mode.io, cache=mode.cache)
        with serving(ns) as (_, host):
            chunk = os.urandom(64 * 1024)
            statuses: list[tuple[int, int, bool]] = []
            for i in range(32):  # 2 MiB into a 1 MiB file system
                try:
                    host.write(1, i * 128, chunk)
                    statuses.append((GENERIC, SUCCESS, False))
                except CommandError as e:
                    statuses.append((e.sct, e.sc, e.dnr))
            assert statuses[0] == (GENERIC, SUCCESS, False), statuses
            assert (GENERIC, CAPACITY_EXCEEDED, True) in statuses, statuses
            assert set(statuses) <= {(GENERIC, SUCCESS, False), (GENERIC, CAPACITY_EXCEEDED, True)}, statuses
            assert any(e.status & 0x7FF == CAPACITY_EXCEEDED for e in _error_log(host))
            assert host.read(1, 0, 128) == chunk, "a write that succeeded lost its data"


def test_a_read_only_file_system_wants_readonly() -> None:
    with tiny_tmpfs("1m") as d:
        image(d, MiB)
        subprocess.run(["mount", "-o", "remount,ro", d], check=True)
        path = os.path.join(d, "disk.img")
        raises_config_error(lambda: Controller(ControllerConfig(namespaces=[
            NamespaceConfig(backend="file", path=path)])), path)
        with serving(NamespaceConfig(backend="file", path=path, readonly=True)) as (_, host):
            assert host.read(1, 0, 1) == bytes(512)


# -- nvmefast serve --namespace file:... ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("file:disk.img", ("disk.img", 512, False)),
        ("file:disk.img:4096", ("disk.img", 4096, False)),
        ("file:/dev/sdb:ro", ("/dev/sdb", 512, True)),
        ("file:disk.img:4096:ro", ("disk.img", 4096, True)),
        ("file:a:b.img", ("a:b.img", 512, False)),
    ],
)
def test_serve_file_namespace_syntax(text: str, want: tuple[str, int, bool]) -> None:
    from nvmefast.cli import _namespace

    spec = _namespace(text)
    assert (spec.backend, spec.size_bytes, spec.path, spec.lba_size, spec.readonly) == ("file", None, *want)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--namespace", "file:"], "name the image file"),
        (["--namespace", "file:disk.img:1024"], "512 or 4096"),
        (["--namespace", "disk:64M"], "file:PATH[:LBA][:OPT...]"),
        (["--namespace", "file:x.img", "--cache", "writeback"], "invalid choice"),
        (["--namespace", "file:x.img", "--io", "aio"], "invalid choice"),
    ],
)
def test_serve_refuses_bad_file_arguments(args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from nvmefast.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--socket", "/tmp/nvmefast-never.sock", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_a_missing_image_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nvmefast.cli import main

    missing = os.path.join(str(tmp_path), "none.img")
    sock = os.path.join(str(tmp_path), "s.sock")
    assert main(["serve", "--socket", sock, "--namespace", f"file:{missing}"]) == 1
    err = capsys.readouterr().err
    assert missing in err and "truncate -s" in err, err
    assert not os.path.exists(sock)


def test_describe_namespace() -> None:
    from nvmefast.cli import describe_namespace

    line = describe_namespace(2, {"backend": "file", "path": "/img/disk.img", "io": "threads",
                                  "cache": "direct", "readonly": True, "size_bytes": 3 << 30})
    assert line == "namespace 2: file 3G /img/disk.img, io threads, cache direct, read-only"
    assert describe_namespace(1, {"backend": "ram", "path": None, "io": "memory", "cache": "memory",
                                  "readonly": False, "size_bytes": 8 * MiB}) == "namespace 1: ram 8M"




@needs_cachestat
def test_shutdown_writes_back_the_page_cache(disk_dir: str) -> None:
    # CC.SHN: SHST reads "complete" only once the volatile write cache is on the media.
    path = os.path.join(disk_dir, "shutdown.img")
    with serving(file_namespace(FileMode("auto", "buffered", DIRECT_DIR), path, 16 * MiB)) as (_, host):
        host.write(1, 0, os.urandom(64 * 1024))
        assert dirty_pages(path) > 0
        host.shutdown()
        assert dirty_pages(path) == 0, "shutdown completed with the image's pages still dirty"


@contextlib.contextmanager
def loop_device(backing: str) -> Iterator[str]:
    """A loop block device over ``backing`` (root only)."""
    if not ROOT or shutil.which("losetup") is None:
        pytest.skip("a loop device needs root and losetup(8)")
    r = subprocess.run(["losetup", "--find", "--show", backing], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot set up a loop device here: {r.stderr.strip()}")
    device = r.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_block_device_namespace(mode: FileMode, workdir: str) -> None:
    backing = image(workdir, 8 * MiB, "backing.img")
    with loop_device(backing) as dev:
        data = os.urandom(64 * 1024)
        with serving(file_namespace(mode, dev, None)) as (ctrl, host):
            info = ctrl.namespace_info(1)
            assert (info["path"], info["size_bytes"], info["io"]) == (dev, 8 * MiB, mode.expected_io), info
            assert host.identify_namespace(1).nsze == 8 * MiB // 512, "the size is the device's"
            # a block device is opened exclusively
            raises_config_error(lambda: Controller(ControllerConfig(namespaces=[file_namespace(mode, dev, None)])),
                                dev, "in use")
            host.write(1, 2048, data)
            host.flush(1)
            assert pread_all(backing, MiB, len(data)) == data, "the write did not reach the device"
            assert_ok(dataset_management(host, 1, [(2048, len(data) // 512)]))
            assert host.read(1, 2048, 8) == bytes(4096)
        assert pread_all(backing, MiB, len(data)) == bytes(len(data)), "deallocate left the data on the device"
        # size_bytes must match a device, which cannot grow
        raises_config_error(lambda: Controller(ControllerConfig(namespaces=[file_namespace(mode, dev, 16 * MiB)])),
                            dev)


def test_format_nvm_zeroes_the_file_and_changes_the_lba_size(mode: FileMode, workdir: str) -> None:
    path = os.path.join(workdir, "format.img")
    with serving(file_namespace(mode, path, 8 * MiB)) as (ctrl, host):
        host.write(1, 0, os.urandom(64 * 1024))
        host.write(1, 8 * MiB // 512 - 8, os.urandom(4096))
        fmt = host.admin(build_sqe(FORMAT_NVM, nsid=1, cdw10=1))  # LBA format 1: 4096 bytes
        assert_ok(fmt)
        ns = host.identify_namespace(1)
        assert (ns.lba_size, ns.nsze) == (4096, 8 * MiB // 4096)
        assert pread_all(path, 0, 8 * MiB) == bytes(8 * MiB), "Format NVM left data in the file"
        assert os.stat(path).st_size == 8 * MiB
        data = os.urandom(8192)
        host.write(1, 5, data)
        assert pread_all(path, 5 * 4096, 8192) == data


def test_two_iothreads_in_flight_on_one_file(mode: FileMode, workdir: str) -> None:
    # Two queue pairs on two iothreads, each with a full queue of writes in
    # flight to its half of the image: every byte lands where it belongs.
    path = os.path.join(workdir, "iothreads.img")
    half = 4 * MiB
    chunk = 64 * 1024
    ns = file_namespace(mode, path, 2 * half)
    with Controller(ControllerConfig(namespaces=[ns], iothreads=2, max_io_queue_pairs=2)) as ctrl, \
            Host(ctrl) as host:
        host.enable()
        host.set_num_queues(2, 2)
        expected = bytearray(2 * half)
        pending = []
        for qid in (1, 2):
            host.create_io_queue_pair(qid, entries=64)
        assert {ctrl.iothread_of(1), ctrl.iothread_of(2)} == {0, 1}
        for k in range(half // chunk):
            for qid in (1, 2):
                offset = (qid - 1) * half + k * chunk
                data = os.urandom(chunk)
                expected[offset:offset + chunk] = data
                buf = host.alloc(chunk)
                host.write_mem(buf, data)
                prps = host.build_prps(data_pointers(buf, chunk))
                sqe = build_sqe(op.IO_WRITE, nsid=1, prp1=prps.prp1, prp2=prps.prp2, cdw10=offset // 512,
                                cdw12=chunk // 512 - 1)
                pending.append((qid, host.submit(sqe, qid), buf, prps))
            if len(pending) >= 96:  # up to 48 in flight per queue
                for qid, cid, buf, prps in pending:
                    assert_ok(host.wait(qid, cid))
                    host.free_prps(prps)
                    host.free(buf)
                pending.clear()
        for qid, cid, buf, prps in pending:
            assert_ok(host.wait(qid, cid))
        host.flush(1, qid=2)
        assert pread_all(path, 0, 2 * half) == bytes(expected)


def _copy_with_fua(host: Host) -> tuple[int, int]:
    dest = 16 * MiB
    with data_buffer(host, copy_range(0, 128)) as (_, dptr):
        assert_ok(host.io(build_sqe(op.IO_COPY, nsid=1, **copy_cdws(dest // 512, 1, cdw12_flags=CDW12_FUA),
                                    **dptr)))
    return dest, 64 * 1024


def _write_zeroes_with_fua(host: Host) -> tuple[int, int]:
    # three 512-byte blocks inside one page: no hole to punch, the page is zeroed in the cache
    assert_ok(write_zeroes(host, 1, 1, 3, fua=True))
    assert host.read(1, 0, 8)[512:2048] == bytes(1536)
    return 0, 4096


@needs_cachestat
@pytest.mark.parametrize("command", [
    pytest.param(_copy_with_fua, id="copy"),
    pytest.param(_write_zeroes_with_fua, id="write-zeroes"),
])
def test_fua_on_other_writes(command: Any, disk_dir: str) -> None:
    path = os.path.join(disk_dir, "fua-other.img")
    with serving(file_namespace(FileMode("auto", "buffered", DIRECT_DIR), path, 32 * MiB)) as (_, host):
        host.write(1, 0, os.urandom(64 * 1024))
        host.flush(1)
        offset, length = command(host)
        assert dirty_pages(path, offset, length) == 0, "a FUA command completed before it was written back"
