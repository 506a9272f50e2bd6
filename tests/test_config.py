"""ControllerConfig and NamespaceConfig: defaults and every validation error."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from nvmefast import ConfigError, ControllerConfig, NamespaceConfig, NvmeFastError

MiB = 1 << 20


def test_namespace_defaults() -> None:
    ns = NamespaceConfig()
    assert (ns.size_bytes, ns.lba_size, ns.backend) == (64 * MiB, 512, "ram")
    assert ns.lbas == 64 * MiB // 512


def test_namespace_4k_lbas() -> None:
    ns = NamespaceConfig(size_bytes=8 * MiB, lba_size=4096, backend="null")
    assert ns.lbas == 2048


def test_controller_defaults() -> None:
    cfg = ControllerConfig()
    assert cfg.namespaces == (NamespaceConfig(),)
    assert cfg.serial == "NVMEFAST0001"
    assert cfg.model == "nvmefast emulated NVMe"
    assert cfg.firmware == "0.1.0"
    assert cfg.max_io_queue_pairs == 8
    assert cfg.msix_vectors is None
    assert cfg.vectors == 9  # one per I/O queue pair plus the admin vector
    assert cfg.max_queue_entries == 1024
    assert cfg.mdts == 5
    assert cfg.mdts_bytes == 128 * 1024
    assert cfg.doorbell_stride == 0
    assert cfg.poll_us == 50
    assert cfg.aerl == 3
    assert cfg.volatile_write_cache is True


def test_vectors_follow_queue_pairs_and_cap_at_msix_limit() -> None:
    assert ControllerConfig(max_io_queue_pairs=31).vectors == 32
    assert ControllerConfig(max_io_queue_pairs=65535).vectors == 2048
    assert ControllerConfig(max_io_queue_pairs=31, msix_vectors=4).vectors == 4
    # replace() on a default config still derives the vector count.
    assert dataclasses.replace(ControllerConfig(), max_io_queue_pairs=15).vectors == 16


def test_mdts_zero_is_unlimited() -> None:
    assert ControllerConfig(mdts=0).mdts_bytes == 0
    assert ControllerConfig(mdts=15).mdts_bytes == 4096 << 15


def test_namespaces_list_is_stored_as_tuple() -> None:
    nss = [NamespaceConfig(size_bytes=MiB), NamespaceConfig(size_bytes=2 * MiB)]
    cfg = ControllerConfig(namespaces=nss)
    assert cfg.namespaces == tuple(nss)
    assert isinstance(cfg.namespaces, tuple)
    hash(cfg)  # frozen and hashable once normalised


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ControllerConfig().serial = "X"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        NamespaceConfig().lba_size = 4096  # type: ignore[misc]


def test_config_error_is_a_value_error_and_nvmefast_error() -> None:
    with pytest.raises(ConfigError) as info:
        NamespaceConfig(lba_size=1024)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, NvmeFastError)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"lba_size": 1024}, "lba_size"),
        ({"lba_size": 0}, "lba_size"),
        ({"lba_size": "512"}, "lba_size"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": -512}, "size_bytes"),
        ({"size_bytes": 1000}, "multiple"),
        ({"size_bytes": 6144, "lba_size": 4096}, "multiple"),
        ({"size_bytes": 1.5 * MiB}, "size_bytes"),
        ({"backend": "file"}, "backend"),
        ({"backend": "RAM"}, "backend"),
    ],
)
def test_namespace_validation(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        NamespaceConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"namespaces": ()}, "namespaces"),
        ({"namespaces": [NamespaceConfig(size_bytes=MiB)] * 257}, "namespaces"),
        ({"namespaces": NamespaceConfig()}, "namespaces"),
        ({"namespaces": ["ram"]}, r"namespaces\[0\]"),
        ({"serial": "S" * 21}, "serial"),
        ({"serial": "séri"}, "serial"),
        ({"serial": 1234}, "serial"),
        ({"model": "M" * 41}, "model"),
        ({"model": "tab\there"}, "model"),
        ({"firmware": "123456789"}, "firmware"),
        ({"max_io_queue_pairs": 0}, "max_io_queue_pairs"),
        ({"max_io_queue_pairs": 65536}, "max_io_queue_pairs"),
        ({"max_io_queue_pairs": True}, "max_io_queue_pairs"),
        ({"msix_vectors": 0}, "msix_vectors"),
        ({"msix_vectors": 2049}, "msix_vectors"),
        ({"max_queue_entries": 1}, "max_queue_entries"),
        ({"max_queue_entries": 65537}, "max_queue_entries"),
        ({"mdts": -1}, "mdts"),
        ({"mdts": 16}, "mdts"),
        ({"doorbell_stride": -1}, "doorbell_stride"),
        ({"doorbell_stride": 16}, "doorbell_stride"),
        ({"poll_us": -1}, "poll_us"),
        ({"poll_us": 0.5}, "poll_us"),
        ({"aerl": -1}, "aerl"),
        ({"aerl": 256}, "aerl"),
        ({"volatile_write_cache": 1}, "volatile_write_cache"),
    ],
)
def test_controller_validation(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ControllerConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"namespaces": [NamespaceConfig(size_bytes=MiB)] * 256},
        {"serial": "S" * 20, "model": "M" * 40, "firmware": "F" * 8},
        {"serial": ""},
        {"max_io_queue_pairs": 1},
        {"max_io_queue_pairs": 65535, "msix_vectors": 2048},
        {"msix_vectors": 1},
        {"max_queue_entries": 2},
        {"max_queue_entries": 65536},
        {"mdts": 0},
        {"mdts": 15},
        {"doorbell_stride": 15},
        {"poll_us": 0},
        {"aerl": 0},
        {"aerl": 255},
        {"volatile_write_cache": False},
    ],
)
def test_controller_boundaries_accepted(kwargs: dict[str, Any]) -> None:
    ControllerConfig(**kwargs)


def test_error_message_says_what_to_change() -> None:
    with pytest.raises(ConfigError) as info:
        ControllerConfig(max_io_queue_pairs=70000)
    text = str(info.value)
    assert "1..65535" in text and "70000" in text
