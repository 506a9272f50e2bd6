"""Zoned namespaces from the command line and the pytest plugin.

``--namespace ram:256M:zone=16M:max-open=4:max-active=6`` and the other zone
options (``zone-cap=``, ``zasl=``, ``zde=``, ``cross-read``), in any order
after SIZE[:LBA] or file:PATH[:LBA], become a ``ZoneConfig``; mistakes are
reported in the options' own words. The expectations are the documented
grammar, not the option table read back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nvmefast import Controller, ControllerConfig, ZoneConfig
from nvmefast.cli import describe_namespace, main
from nvmefast.namespace_spec import parse_namespace
from nvmefast.testing import Host
from nvmefast.testing.zns import ZoneState

MiB, KiB = 1 << 20, 1 << 10


@pytest.mark.parametrize(
    ("text", "zones"),
    [
        ("ram:256M:zone=16M:max-open=4:max-active=6", ZoneConfig(size_bytes=16 * MiB, max_open=4, max_active=6)),
        ("ram:256M:max-active=6:zone=16M:4096:max-open=4",  # any order, the LBA size among them
         ZoneConfig(size_bytes=16 * MiB, max_open=4, max_active=6)),
        ("null:1G:4096:zone=64M:zone-cap=48M:zasl=128K",
         ZoneConfig(size_bytes=64 * MiB, capacity_bytes=48 * MiB, append_size_limit=128 * KiB)),
        ("ram:64M:zone=8M:zde=128:cross-read",
         ZoneConfig(size_bytes=8 * MiB, descriptor_extension_bytes=128, cross_read=True)),
        ("file:zoned.img:zone=16M:size=64M", ZoneConfig(size_bytes=16 * MiB)),
    ],
)
def test_zone_options_make_a_zone_config(text: str, zones: ZoneConfig) -> None:
    spec = parse_namespace(text)
    assert spec.config().zones == zones


def test_without_zone_options_a_namespace_is_conventional() -> None:
    assert parse_namespace("ram:64M:4096").config().zones is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("ram:64M:max-open=3", "give the zone size too, e.g. :zone=16M"),
        ("ram:64M:zone-cap=1M:zasl=8K", "zone-cap=SIZE, zasl=SIZE describe zones"),
        ("ram:64M:zone=16M:cross-read=yes", "cross-read is a flag: write :cross-read"),
        ("ram:64M:zone=lots", "zone=lots: 'lots' is not a size"),
        ("ram:64M:zone=16M:max-open=-1", "max-open=-1: '-1' is not a count of zones"),
        ("ram:64M:zone=16M:zone=8M", "zone=SIZE is given twice"),
    ],
)
def test_zone_option_mistakes(text: str, said: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        parse_namespace(text)
    assert said in str(e.value), str(e.value)


def _serve_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["serve", "--socket", "/tmp/nvmefast-never-zns.sock", *args]) == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("namespace", "said"),
    [
        ("ram:64M:zone=3M", "zone=3145728 is 6144 LBAs, not a power of two"),
        ("ram:60M:zone=16M", "zone=16M does not divide the namespace size 60M"),
        ("ram:64M:zone=16M:zone-cap=32M", "zone-cap=33554432 is above the zone size"),
        ("ram:64M:zone=16M:max-open=5:max-active=4", "max-open=5 is above max-active=4"),
        ("ram:64M:zone=16M:max-open=9", "max-open=9 is above the zone count 4"),
        ("ram:64M:zone=16M:zasl=12K", "zasl=12288 must be a power-of-two multiple"),
        ("ram:64M:zone=16M:zasl=4K", "leave zasl= out for MDTS"),
        ("ram:64M:zone=16M:zde=65", "zde=65 must be a multiple of 64"),
    ],
)
def test_zone_config_errors_in_the_options_words(capsys: pytest.CaptureFixture[str], namespace: str,
                                                 said: str) -> None:
    err = _serve_error(capsys, "--namespace", namespace)
    assert f"--namespace {namespace}:" in err and said in err, err
    assert "ZoneConfig" not in err and "_bytes" not in err and "max_" not in err, err


def test_serve_log_describes_the_zones() -> None:
    zones = ZoneConfig(size_bytes=8 * MiB, capacity_bytes=6 * MiB, max_open=4, max_active=6,
                       append_size_limit=64 * KiB)  # fmt: skip
    line = describe_namespace(1, {"backend": "ram", "size_bytes": 128 * MiB}, zones=zones)
    assert line == ("namespace 1: ram 128M, zoned: 16 zones of 8M (6M writable), at most 4 open and 6 active, "
                    "appends up to 64K")  # fmt: skip
    line = describe_namespace(2, {"backend": "null", "size_bytes": MiB}, zones=ZoneConfig(size_bytes=MiB))
    assert line == "namespace 2: null 1M, zoned: 1 zones of 1M, no open or active limit"


def test_a_parsed_zoned_namespace_serves_zones(tmp_path: Path) -> None:
    spec = parse_namespace(f"file:{tmp_path / 'z.img'}:4096:zone=1M:size=4M:max-open=2")
    with Controller(ControllerConfig(namespaces=[spec.config(cache="buffered")])) as ctrl, Host(ctrl) as host:
        host.enable()
        host.set_num_queues(1, 1)
        host.create_io_queue_pair(1)
        assert [z.state for z in host.zones(1)] == [ZoneState.EMPTY] * 4
        host.write(1, 256, b"\x01" * 4096)
        assert host.zones(1)[1].state == ZoneState.IMPLICITLY_OPENED
    assert (tmp_path / "z.img.zones").exists(), "the zones live beside the image"


def test_pytest_marker_takes_zones_as_a_dict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from nvmefast.testing.zns import ZoneState

        @pytest.mark.nvme_config(namespaces=[{"size_bytes": 8 << 20, "lba_size": 4096,
                                              "zones": {"size_bytes": 1 << 20, "max_open": 2}}])
        def test_zoned(nvme_host):
            zones = nvme_host.zones(1)
            assert len(zones) == 8 and zones[0].state == ZoneState.EMPTY
            assert nvme_host.zone_append(1, 0, b"z" * 4096) == 0
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
