"""Namespaces changed while serving: Controller.add_namespace /
resize_namespace / remove_namespace (with I/O running on the others),
ControllerConfig.capacity_bytes, and the namespace directory that outlives
the controller."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from adminutil import INVALID_FIELD, MiB, SET_FEATURES, SUCCESS, assert_status, cmd, get_log, no_completion
from nvmefast import (
    CapacityError, ConfigError, Controller, ControllerConfig, NamespaceConfig, NamespaceError, ZoneConfig,
)  # fmt: skip
from nvmefast.testing import Host, build_sqe
from nvmefast.testing.namespaces import attach_namespace, build_create_structure, create_namespace, detach_namespace

NOTICE_NS_CHANGED = 0x2 | 0x00 << 8 | 0x04 << 16  # Notice, Namespace Attribute Changed, log 04h
LBA_OUT_OF_RANGE = (0, 0x80)


def changed(host: Host) -> list[int]:
    c, data = get_log(host, 0x04, 4096)
    assert_status(c, SUCCESS)
    out = []
    for i in range(0, 4096, 4):
        nsid = int.from_bytes(data[i : i + 4], "little")
        if not nsid:
            break
        out.append(nsid)
    return out


def unvmcap(host: Host) -> int:
    return int.from_bytes(host.identify(0x01)[296:312], "little")


def enable_notices(host: Host) -> None:
    assert_status(cmd(host, SET_FEATURES, cdw10=0x0B, cdw11=1 << 8), SUCCESS)


@pytest.mark.nvme_config(capacity_bytes=64 * MiB)
def test_add_resize_remove_raise_the_notice(host: Host, controller: Controller) -> None:
    enable_notices(host)
    aer = host.submit_aer()
    nsid = controller.add_namespace(NamespaceConfig(size_bytes=4 * MiB))
    assert nsid == 2
    assert host.wait(0, aer).dw0 == NOTICE_NS_CHANGED
    assert changed(host) == [2]
    assert host.identify_namespace(2).nsze == 4 * MiB // 512
    assert unvmcap(host) == 64 * MiB - 20 * MiB
    host.write(2, 8191, b"\x5a" * 512)

    aer = host.submit_aer()
    controller.resize_namespace(2, 2 * MiB)
    assert host.wait(0, aer).dw0 == NOTICE_NS_CHANGED
    assert changed(host) == [2]
    assert host.identify_namespace(2).nsze == 2 * MiB // 512
    buf = host.alloc(4096)
    c = host.io(build_sqe(0x02, nsid=2, prp1=buf, cdw10=8191, cdw12=0))
    assert (c.sct, c.sc) == LBA_OUT_OF_RANGE  # past the shrunk end
    controller.resize_namespace(2, 8 * MiB)
    assert host.identify_namespace(2).nsze == 8 * MiB // 512
    assert unvmcap(host) == 64 * MiB - 24 * MiB

    aer = host.submit_aer()
    controller.remove_namespace(2)
    assert host.wait(0, aer).dw0 == NOTICE_NS_CHANGED
    assert changed(host) == [2]
    c = host.io(build_sqe(0x02, nsid=2, prp1=buf, cdw12=0))
    assert (c.sct, c.sc) == INVALID_FIELD
    assert host.identify(0x00, 2) == bytes(4096)
    assert unvmcap(host) == 48 * MiB


def test_notice_masked_until_enabled(host: Host, controller: Controller) -> None:
    aer = host.submit_aer()  # AEC bit 8 clear
    controller.add_namespace(NamespaceConfig(size_bytes=MiB))
    no_completion(host, aer)
    assert changed(host) == [2]


def test_changes_while_io_runs_on_another_namespace(host: Host, controller: Controller) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                nsid = controller.add_namespace(NamespaceConfig(size_bytes=MiB))
                controller.resize_namespace(nsid, 2 * MiB)
                controller.remove_namespace(nsid)
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for i in range(200):
            block = bytes([i & 0xFF]) * 512
            host.write(1, i, block)
            assert host.read(1, i, 1) == block
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert list(controller.namespaces()) == [1]


def test_default_capacity_follows_the_embedder(host: Host, controller: Controller) -> None:
    # No capacity_bytes: the embedder's adds raise the total; a host create still finds none free.
    nsid = controller.add_namespace(NamespaceConfig(size_bytes=8 * MiB))
    data = host.identify(0x01)
    assert int.from_bytes(data[280:296], "little") == 24 * MiB
    assert unvmcap(host) == 0
    assert_status(create_namespace(host, build_create_structure(1)), (1, 0x15))
    controller.remove_namespace(nsid)
    assert unvmcap(host) == 8 * MiB


@pytest.mark.nvme_config(capacity_bytes=32 * MiB)
def test_embedder_errors_say_what_is_wrong(controller: Controller) -> None:
    with pytest.raises(CapacityError, match="unallocated"):
        controller.add_namespace(NamespaceConfig(size_bytes=17 * MiB))
    with pytest.raises(ConfigError, match="NamespaceConfig"):
        controller.add_namespace("ram:1M")  # type: ignore[arg-type]
    with pytest.raises(NamespaceError, match="allocated: 1"):
        controller.remove_namespace(5)
    with pytest.raises(NamespaceError):
        controller.resize_namespace(0, MiB)
    with pytest.raises(ConfigError, match="multiple"):
        controller.resize_namespace(1, MiB + 100)
    with pytest.raises(CapacityError, match="cannot grow"):
        controller.resize_namespace(1, 33 * MiB)
    with pytest.raises(ConfigError, match="positive"):
        controller.resize_namespace(1, 0)
    zoned = controller.add_namespace(NamespaceConfig(size_bytes=8 * MiB, zones=ZoneConfig(size_bytes=MiB)))
    with pytest.raises(ConfigError, match="zoned"):
        controller.resize_namespace(zoned, 16 * MiB)  # the core cannot resize zoned namespaces yet
    assert controller.capacity() == (32 * MiB, 8 * MiB)  # nothing half done


def test_capacity_config_checks() -> None:
    with pytest.raises(ConfigError, match="capacity_bytes"):
        ControllerConfig(namespaces=[NamespaceConfig(size_bytes=2 * MiB)], capacity_bytes=MiB)
    with pytest.raises(ConfigError, match="capacity_bytes"):
        ControllerConfig(namespaces=[])  # none needs a capacity or a directory
    with Controller(ControllerConfig(namespaces=[], capacity_bytes=MiB)) as ctrl:
        assert ctrl.namespaces() == {}
        assert ctrl.capacity() == (MiB, MiB)


# -- the namespace directory -----------------------------------------------------------------------


def _serve(directory: Path, capacity: int = 64 * MiB) -> Controller:
    return Controller(ControllerConfig(namespaces=[], capacity_bytes=capacity, namespace_dir=directory))


def test_created_namespaces_outlive_the_controller(tmp_path: Path) -> None:
    directory = tmp_path / "ns"
    with _serve(directory) as ctrl, Host(ctrl) as host:
        host.enable()
        host.create_io_queue_pair(1)
        a = create_namespace(host, build_create_structure(2048))  # 1 MiB
        b = create_namespace(host, build_create_structure(4096))  # 2 MiB
        assert_status(a, SUCCESS)
        assert_status(b, SUCCESS)
        assert (a.dw0, b.dw0) == (1, 2)
        assert_status(attach_namespace(host, 1), SUCCESS)
        host.identify_namespace(1)
        host.write(1, 100, b"persisted" + bytes(503))
        host.flush(1)
    manifest = json.loads((directory / "namespaces.json").read_text())
    assert [(n["nsid"], n["attached"]) for n in manifest["namespaces"]] == [(1, True), (2, False)]
    with _serve(directory) as ctrl, Host(ctrl) as host:
        host.enable()
        host.create_io_queue_pair(1)
        assert host.identify(0x02)[:8] == (1).to_bytes(4, "little") + bytes(4)  # active: NSID 1 only
        assert host.identify_namespace(1).nsze == 2048
        assert host.read(1, 100, 1)[:9] == b"persisted"
        assert_status(attach_namespace(host, 2), SUCCESS)
        assert_status(detach_namespace(host, 1), SUCCESS)
        assert_status(cmd(host, 0x0D, nsid=1, cdw10=1), SUCCESS)  # delete
        assert ctrl.capacity() == (64 * MiB, 62 * MiB)
    assert sorted(p.name for p in directory.glob("*.img")) == [manifest["namespaces"][1]["image"]]
    with _serve(directory) as ctrl:
        assert {n: c.size for n, c in ctrl.namespaces().items()} == {2: 2 * MiB}
        assert ctrl.namespace_state(2)["attached"] is True


def test_added_file_namespace_is_listed(tmp_path: Path) -> None:
    directory = tmp_path / "ns"
    image = tmp_path / "extra.img"
    with _serve(directory) as ctrl:
        nsid = ctrl.add_namespace(NamespaceConfig(backend="file", path=str(image), size_bytes=MiB))
        ctrl.add_namespace(NamespaceConfig(size_bytes=MiB))  # RAM: gone with the process
    with _serve(directory) as ctrl:
        assert list(ctrl.namespaces()) == [nsid]
        assert ctrl.namespace_state(nsid)["origin"] == "added"
        ctrl.remove_namespace(nsid)
    assert image.exists()  # the embedder's file is left alone


def test_directory_is_locked_and_checked(tmp_path: Path) -> None:
    directory = tmp_path / "ns"
    with _serve(directory):
        with pytest.raises(ConfigError, match="in use"):
            _serve(directory)
    (directory / "namespaces.json").write_text("{not json")
    with pytest.raises(ConfigError, match="namespaces.json"):
        _serve(directory)
    (directory / "namespaces.json").write_text(json.dumps({"format": "nvmefast-namespaces", "version": 1,
        "namespaces": [{"nsid": 3, "image": "gone.img", "size_bytes": MiB, "lba_size": 512}]}))  # fmt: skip
    with pytest.raises(ConfigError, match="missing"):
        _serve(directory)
    os.unlink(directory / "namespaces.json")
    file = tmp_path / "plain"
    file.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        ControllerConfig(namespaces=[], namespace_dir=file)


def test_restored_namespaces_must_fit_the_capacity(tmp_path: Path) -> None:
    directory = tmp_path / "ns"
    with _serve(directory) as ctrl, Host(ctrl) as host:
        host.enable()
        assert_status(create_namespace(host, build_create_structure(8 * 2048)), SUCCESS)  # 8 MiB
    with pytest.raises(ConfigError, match="capacity_bytes"):
        _serve(directory, capacity=4 * MiB)
