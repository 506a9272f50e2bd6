"""``--namespace`` options for metadata and protection information (``md=``,
``pi=``, ``pi-first``, ``extended``, ``guard=``), their errors in the words of
the command line, and the serve log's line for such a namespace.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from nvmefast import Controller, ControllerConfig
from nvmefast.cli import describe_namespace, main
from nvmefast.lba_format import NamespaceFormat
from nvmefast.namespace_spec import parse_namespace

MiB = 1 << 20


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("ram:64M:512:md=8:pi=1", {"metadata_size": 8, "pi_type": 1}),
        ("ram:64M:pi=3:md=16:pi-first", {"metadata_size": 16, "pi_type": 3, "pi_first": True}),
        ("null:1G:4096:md=16:pi=1:guard=crc64", {"lba_size": 4096, "metadata_size": 16, "pi_type": 1, "guard": "crc64"}),
        ("ram:64M:extended:md=8:pi=2", {"metadata_size": 8, "pi_type": 2, "extended_lba": True}),
        ("ram:64M:4096:md=64", {"lba_size": 4096, "metadata_size": 64}),
        ("file:disk.img:4096:md=16:pi=1:guard=crc16:ro", {"lba_size": 4096, "metadata_size": 16, "pi_type": 1,
                                                          "guard": "crc16", "readonly": True}),
    ],
)
def test_options_in_any_order(text: str, fields: dict[str, object]) -> None:
    got = dict(parse_namespace(text).fields)
    assert {k: got[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ram:64M:md=9", "md=9: use one of 8, 16, 64"),
        ("ram:64M:md=8:pi=4", "pi=4: use one of 0, 1, 2, 3"),
        ("ram:64M:md=16:pi=1:guard=crc32", "guard=crc32: use crc16 or crc64"),
        ("ram:64M:md=8:pi=1:pi-first=1", "pi-first is a flag"),
        ("ram:64M:md", "md takes a value: md=BYTES, e.g. :md=8"),
        ("ram:64M:md=8:md=16", "given twice"),
        ("ram:64M:mdd=8", "(did you mean md=BYTES?)"),
        ("ram:64M:pi=l", "pi=l: use one of 0, 1, 2, 3"),
    ],
)
def test_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        parse_namespace(text)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("ram:64M:pi=1", "pi=1 needs md=8 or more"),
        ("ram:64M:md=8:pi=1:guard=crc64", "guard=crc64 needs the LBA size 4096 (64-bit guard formats"),
        ("ram:64M:4096:md=8:pi=1:guard=crc64", "md=16 or more"),
        ("ram:64M:4096:md=16:guard=crc64", "guard=crc64 needs protection information: set pi=1, 2 or 3"),
        ("ram:64M:md=64", "md=64 is not an LBA format with the LBA size 512"),
        ("ram:64M:md=8:pi-first", ":pi-first needs protection information"),
        ("ram:64M:extended", ":extended needs metadata: set md="),
    ],
)
def test_config_errors_in_cli_words(spec: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--socket", "/tmp/nvmefast-never.sock", "--namespace", spec]) == 1
    err = capsys.readouterr().err
    assert said in err and "NamespaceConfig" not in err and "metadata_size" not in err, err
    assert not os.path.exists("/tmp/nvmefast-never.sock")


def test_a_spec_builds_the_namespace() -> None:
    spec = parse_namespace("ram:8M:4096:md=16:pi=1:guard=crc64:pi-first")
    with Controller(ControllerConfig(namespaces=[spec.config()])) as ctrl:
        fmt = ctrl.engine.namespace_format(1)
    assert fmt == {"lba_size": 4096, "metadata_size": 16, "extended_lba": False, "pi_type": 1, "pi_first": True,
                   "guard": "crc64"}  # fmt: skip


def test_file_namespace_keeps_metadata_in_a_companion_file(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    spec = parse_namespace(f"file:{path}:size=1M:md=8:pi=1")
    with Controller(ControllerConfig(namespaces=[spec.config()])):
        pass
    assert path.stat().st_size == MiB  # the data file stays a raw image
    assert Path(f"{path}.md").exists()


def test_the_serve_log_says_the_format() -> None:
    info = {"backend": "ram", "size_bytes": 64 * MiB, "path": None, "io": "memory", "cache": "memory",
            "readonly": False}  # fmt: skip
    line = describe_namespace(1, info, NamespaceFormat(512, 8, pi_type=1))
    assert line == "namespace 1: ram 64M, 512+8 bytes, metadata separate, PI type 1 (CRC-16 guard)"
    line = describe_namespace(2, info, NamespaceFormat(4096, 64, True, 3, True, "crc64"))
    assert line.endswith("4096+64 bytes, metadata extended, PI type 3 (CRC-64 guard, first)")
    line = describe_namespace(2, info, NamespaceFormat(512, 16, False, 2, False))
    assert line.endswith("512+16 bytes, metadata separate, PI type 2 (CRC-16 guard, last)")
    assert describe_namespace(4, info, NamespaceFormat(4096, 8)).endswith("4096+8 bytes, metadata separate")
    assert describe_namespace(3, info, NamespaceFormat(512)) == "namespace 3: ram 64M"
