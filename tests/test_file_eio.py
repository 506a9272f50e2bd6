"""EIO from the backing file, for real: a FUSE file system whose one file
fails reads and writes of one range, and an fsync, with EIO.

The file system is a small server of the kernel's FUSE protocol
(``linux/fuse.h``) in a child process (the controller's own process holds
the interpreter while it opens the file, and the open needs the server).
The file is opened with FOPEN_DIRECT_IO, so every read and write of the
core reaches the server as it was issued, with no page cache in between;
an fsync fails once after a write to a second range, as when the
writeback of a page fails.
Needs root (to mount) and /dev/fuse; skips otherwise, saying why.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from fileutil import ENV_THREADS, MODES, FileMode, environment, scratch_dir
from nvmutil import MEDIA, assert_still_works
from nvmefast import Controller, ControllerConfig, NamespaceConfig
from nvmefast.structs import ErrorLogEntry, SmartLog
from nvmefast.testing import Host, build_sqe
from nvmefast.testing import sqe as op

MiB = 1 << 20
SIZE = 4 * MiB
BAD = (2 * MiB, 2 * MiB + 4096)
"""The byte range of the image that fails with EIO."""
SYNC_POISON = (3 * MiB, 3 * MiB + 4096)
"""A write here succeeds, and the next fsync of the file fails with EIO
(as when writeback of that page fails)."""
WRITE_FAULT, UNRECOVERED_READ_ERROR = 0x80, 0x81  # SCT 2h

FUSE_SERVER = textwrap.dedent("""
    import ctypes, errno, os, struct, sys

    mountpoint, size = sys.argv[1], int(sys.argv[2])
    bad_start, bad_end, poison_start, poison_end = (int(a) for a in sys.argv[3:7])
    sync_poisoned = False
    data = bytearray(size)
    for i in range(0, size, 512):
        data[i:i + 8] = struct.pack("<Q", i)  # each sector starts with its offset
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"nvmefast-eio", mountpoint.encode(), b"fuse", 0, opts) != 0:
        print("mount failed:", os.strerror(ctypes.get_errno()), flush=True)
        sys.exit(1)
    print("ready", flush=True)

    ROOT, FILE = 1, 2
    def attr(node):
        if node == ROOT:
            return struct.pack("<QQQQQQIIIIIIIIII", ROOT, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
        return struct.pack("<QQQQQQIIIIIIIIII", FILE, size, size // 512, 0, 0, 0, 0, 0, 0, 0o100644, 1, 0, 0, 0,
                           4096, 0)
    def bad(offset, length):
        return offset < bad_end and offset + length > bad_start
    while True:
        try:
            req = os.read(fd, 1 << 21)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            break  # ENODEV: unmounted
        length, opcode, unique, node = struct.unpack_from("<IIQQ", req)
        body = req[40:length]
        err, out = 0, b""
        if opcode == 26:  # INIT: protocol 7.31, 128 KiB writes
            out = struct.pack("<IIIIHHIIHHII", 7, 31, 0, 0, 16, 12, 128 * 1024, 1, 32, 0, 0, 0) + bytes(24)
        elif opcode == 1:  # LOOKUP
            if node == ROOT and body.rstrip(b"\\0") == b"disk.img":
                out = struct.pack("<QQQQII", FILE, 0, 1, 1, 0, 0) + attr(FILE)
            else:
                err = -errno.ENOENT
        elif opcode == 3:  # GETATTR
            out = struct.pack("<QII", 1, 0, 0) + attr(node)
        elif opcode in (14, 27):  # OPEN, OPENDIR: FOPEN_DIRECT_IO, no page cache
            out = struct.pack("<QIi", 0, 1, 0)
        elif opcode == 15:  # READ
            _, offset, count = struct.unpack_from("<QQI", body)
            if bad(offset, count):
                err = -errno.EIO
            else:
                out = bytes(data[offset:offset + count])
        elif opcode == 16:  # WRITE
            _, offset, count = struct.unpack_from("<QQI", body)
            if bad(offset, count):
                err = -errno.EIO
            else:
                data[offset:offset + count] = body[40:40 + count]
                out = struct.pack("<II", count, 0)
                sync_poisoned |= offset < poison_end and offset + count > poison_start
        elif opcode == 17:  # STATFS
            out = struct.pack("<QQQQQIIII", size // 4096, size // 4096, size // 4096, 2, 0, 4096, 255, 4096, 0)
            out += bytes(24)
        elif opcode == 20:  # FSYNC: fails once after a write to the sync-poison range
            if sync_poisoned:
                sync_poisoned, err = False, -errno.EIO
        elif opcode in (18, 25, 29):  # RELEASE, FLUSH, RELEASEDIR
            pass
        elif opcode in (2, 36, 42):  # FORGET, INTERRUPT, BATCH_FORGET: no reply
            continue
        elif opcode == 38:  # DESTROY
            break
        else:
            err = -errno.ENOSYS
        try:
            os.write(fd, struct.pack("<IiQ", 16 + len(out), err, unique) + out)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                raise
""")

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


@pytest.fixture
def eio_image() -> Iterator[str]:
    """The path of a ``SIZE``-byte image on FUSE whose ``BAD`` range fails with EIO."""
    if os.geteuid() != 0:
        pytest.skip("mounting a FUSE file system needs root")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    with scratch_dir("/var/tmp") as mountpoint:
        server = subprocess.Popen(
            [sys.executable, "-c", FUSE_SERVER, mountpoint, str(SIZE), *(str(n) for n in BAD + SYNC_POISON)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if line != "ready\n":
                server.kill()
                pytest.skip(f"cannot mount FUSE here: {line.strip()} {server.communicate(timeout=10)[1][-500:]}")
            yield os.path.join(mountpoint, "disk.img")
        finally:
            _libc.umount2(mountpoint.encode(), _MNT_DETACH)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
            _, err = server.communicate(timeout=10)
            assert server.returncode in (0, -9), f"the FUSE server failed: {err[-2000:]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", [*MODES[1::2], ENV_THREADS])  # the buffered ones: both I/O paths
def test_eio_is_a_media_error(eio_image: str, mode: FileMode) -> None:
    with environment(mode.env):
        ns = NamespaceConfig(backend="file", path=eio_image, io=mode.io, cache=mode.cache)
        with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
            host.enable()
            host.set_num_queues(1, 1)
            host.create_io_queue_pair(1)
            assert ctrl.namespace_info(1)["io"] == mode.expected_io
            # the good blocks read as the server wrote them: the oracle works
            good = host.read(1, 0, 8)
            assert [int.from_bytes(good[i:i + 8], "little") for i in range(0, 4096, 512)] == \
                [i * 512 for i in range(8)]
            smart = SmartLog.parse(host.get_log_page(0x02, 512))
            bad_lba = BAD[0] // 512
            buf = host.alloc(4096)
            read = host.io(build_sqe(op.IO_READ, nsid=1, prp1=buf, cdw10=bad_lba, cdw12=7))
            host.write_mem(buf, os.urandom(4096))
            write = host.io(build_sqe(op.IO_WRITE, nsid=1, prp1=buf, cdw10=bad_lba + 4, cdw12=0))
            assert (read.sct, read.sc) == (MEDIA, UNRECOVERED_READ_ERROR), str(read)
            assert (write.sct, write.sc) == (MEDIA, WRITE_FAULT), str(write)
            after = SmartLog.parse(host.get_log_page(0x02, 512))
            assert after.media_errors == smart.media_errors + 2, (smart, after)
            assert after.num_err_log_entries >= smart.num_err_log_entries + 2
            entries = [e for e in ErrorLogEntry.parse_log(host.get_log_page(0x01, 4096)) if e.error_count]
            got = {(e.cid, e.status & 0x7FF, e.lba, e.nsid) for e in entries[:2]}
            assert got == {(read.cid, MEDIA << 8 | UNRECOVERED_READ_ERROR, bad_lba, 1),
                           (write.cid, MEDIA << 8 | WRITE_FAULT, bad_lba + 4, 1)}, entries[:2]
            assert ctrl.counters()["file_errors"] >= 2
            # neither a hang nor a fatal status: the rest of the image works
            assert_still_works(host)


@pytest.mark.timeout(60)
def test_eio_from_fdatasync_is_a_write_fault(eio_image: str) -> None:
    ns = NamespaceConfig(backend="file", path=eio_image, cache="buffered")
    with Controller(ControllerConfig(namespaces=[ns])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        host.flush(1)  # nothing poisoned yet: the fsync succeeds
        media_errors = SmartLog.parse(host.get_log_page(0x02, 512)).media_errors
        host.write(1, SYNC_POISON[0] // 512, os.urandom(4096))
        flush = host.io(build_sqe(op.IO_FLUSH, nsid=1))
        assert (flush.sct, flush.sc) == (MEDIA, WRITE_FAULT), str(flush)
        assert SmartLog.parse(host.get_log_page(0x02, 512)).media_errors == media_errors + 1
        entry = [e for e in ErrorLogEntry.parse_log(host.get_log_page(0x01, 4096)) if e.error_count][0]
        assert (entry.cid, entry.status & 0x7FF, entry.nsid) == (flush.cid, MEDIA << 8 | WRITE_FAULT, 1), entry
        host.flush(1)  # the failure was reported once
        assert_still_works(host)
