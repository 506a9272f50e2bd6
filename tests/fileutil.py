"""Helpers shared by the file-namespace tests (test_file_*.py).

The oracles here read the backing file with the kernel's own interfaces,
never through the device: ``os.pread`` for the bytes, ``SEEK_DATA`` /
``SEEK_HOLE`` for what is allocated, and ``cachestat(2)`` (Linux 6.5) for
which pages are still dirty in the page cache, which is what Flush, FUA and
a disabled write cache must leave none of.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nvmefast import ControllerConfig, NamespaceConfig

MiB = 1 << 20

DIRECT_DIR = "/var/tmp"
"""Where O_DIRECT files go: a disk file system (tmpfs refused O_DIRECT before Linux 6.6)."""
BUFFERED_DIR = "/dev/shm"
"""Where buffered files go: tmpfs, the fastest page cache there is."""


@dataclasses.dataclass(frozen=True)
class FileMode:
    """One way of serving a file namespace: the I/O path, the cache mode and
    where the file lives; ``env`` is set in the environment meanwhile."""

    io: str
    cache: str
    directory: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def expected_io(self) -> str:
        """The I/O path namespace_info must report."""
        forced = dict(self.env).get("NVMEFAST_FILE_IO")
        return forced if self.io == "auto" and forced else self.io


MODES = [
    pytest.param(FileMode("io_uring", "direct", DIRECT_DIR), id="io_uring-direct"),
    pytest.param(FileMode("io_uring", "buffered", BUFFERED_DIR), id="io_uring-buffered"),
    pytest.param(FileMode("threads", "direct", DIRECT_DIR), id="threads-direct"),
    pytest.param(FileMode("threads", "buffered", BUFFERED_DIR), id="threads-buffered"),
    pytest.param(FileMode("inline", "direct", DIRECT_DIR), id="inline-direct"),
    pytest.param(FileMode("inline", "buffered", BUFFERED_DIR), id="inline-buffered"),
]
"""Every I/O path (io_uring, threads, inline: what io="auto" picks on tmpfs)
in both cache modes: every conformance test runs in each."""
ENV_THREADS = pytest.param(
    FileMode("auto", "buffered", BUFFERED_DIR, (("NVMEFAST_FILE_IO", "threads"),)), id="env-threads"
)
"""io="auto" with NVMEFAST_FILE_IO=threads: the fallback forced from outside."""


@contextmanager
def scratch_dir(parent: str) -> Iterator[str]:
    """A fresh directory under ``parent``, removed afterwards."""
    path = tempfile.mkdtemp(prefix="nvmefast-test-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def environment(env: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """Set ``env`` for the duration (the core reads NVMEFAST_FILE_IO at open)."""
    saved = {name: os.environ.get(name) for name, _ in env}
    os.environ.update(dict(env))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def file_namespace(mode: FileMode, path: str, size: int | None, lba_size: int = 512,
                   readonly: bool = False) -> NamespaceConfig:
    """A file namespace at ``path`` served the way ``mode`` says."""
    return NamespaceConfig(backend="file", path=path, size_bytes=size, lba_size=lba_size,
                           io=mode.io, cache=mode.cache, readonly=readonly)


def in_files(config: ControllerConfig, mode: FileMode, directory: str) -> ControllerConfig:
    """``config`` with every ram namespace moved into a sparse file of its size in ``directory``."""
    namespaces = [
        file_namespace(mode, os.path.join(directory, f"ns{nsid}.img"), ns.size_bytes, ns.lba_size)
        if ns.backend == "ram" else ns
        for nsid, ns in enumerate(config.namespaces, start=1)
    ]
    return dataclasses.replace(config, namespaces=namespaces)


def drop_tests_without_ram(namespace: dict[str, object]) -> list[str]:
    """Remove from a module's ``namespace`` the tests (imported with ``*``) whose
    ``nvme_config`` marker leaves no ram namespace to move into a file, so that
    they are not collected at all; returns their names."""
    dropped = []
    for name, obj in list(namespace.items()):
        if not name.startswith("test_") or not callable(obj):
            continue
        marks = [m for m in getattr(obj, "pytestmark", []) if m.name == "nvme_config"]
        # The conftest's default config has a ram namespace; the closest marker wins.
        namespaces = marks[0].kwargs.get("namespaces") if marks else None
        if namespaces is not None and not any(ns.backend == "ram" for ns in namespaces):
            del namespace[name]
            dropped.append(name)
    return dropped


def pread_all(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` at ``offset``, read past any cache the device keeps."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(fd, length - len(out), offset + len(out))
            if not chunk:
                raise AssertionError(f"{path} ends at {offset + len(out)}, wanted {offset + length}")
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def pwrite_all(path: str, offset: int, data: bytes) -> None:
    """Write ``data`` into ``path`` at ``offset`` behind the device's back."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, offset + len(data) - len(view)):]
    finally:
        os.close(fd)


def data_ranges(path: str) -> list[tuple[int, int]]:
    """The allocated (non-hole) ``(start, end)`` byte ranges of ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        ranges = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, end))
            pos = end
        return ranges
    finally:
        os.close(fd)


def is_hole(path: str, start: int, end: int) -> bool:
    """True when nothing in ``[start, end)`` of ``path`` is allocated."""
    return all(e <= start or s >= end for s, e in data_ranges(path))


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


_SYS_CACHESTAT = 451  # the same number on every architecture (asm-generic unistd)
_libc = ctypes.CDLL(None, use_errno=True)


def dirty_pages(path: str, offset: int = 0, length: int = 0) -> int:
    """Pages of ``path`` in ``[offset, offset + length)`` (0: to the end) that are
    dirty or under writeback in the page cache: what a crash of the kernel would lose."""
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, stat = _CachestatRange(offset, length), _Cachestat()
        if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cachestat: {os.strerror(err)}")
        return int(stat.nr_dirty + stat.nr_writeback)
    finally:
        os.close(fd)


def cachestat_works() -> bool:
    """cachestat(2) exists (Linux 6.5+) and counts dirty pages of a disk file."""
    with scratch_dir(DIRECT_DIR) as d:
        path = os.path.join(d, "probe")
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        try:
            return dirty_pages(path) > 0
        except OSError:
            return False


needs_cachestat = pytest.mark.skipif(
    not cachestat_works(), reason="cachestat(2) (Linux 6.5+) is needed to see dirty pages in the page cache"
)
"""For the tests whose oracle is the page cache's dirty count."""
