"""``nvmefast serve --namespace``: the grammar, and errors in the words the user typed.

The grammar is ``KIND:SIZE[:LBA][:OPT...]`` / ``file:PATH[:LBA][:OPT...]``
with options from one table; the expectations below are written from the
help text, not read back from the table.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvmefast import Controller, ControllerConfig
from nvmefast.cli import main
from nvmefast.namespace_spec import OPTIONS, parse_namespace

MiB = 1 << 20


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("ram:64M", {"backend": "ram", "size_bytes": 64 * MiB}),
        ("ram:64M:4096", {"backend": "ram", "size_bytes": 64 * MiB, "lba_size": 4096}),
        ("null:1G:512", {"backend": "null", "size_bytes": 1 << 30, "lba_size": 512}),
        ("file:disk.img", {"backend": "file", "path": "disk.img"}),
        ("file:disk.img:4096:ro", {"backend": "file", "path": "disk.img", "lba_size": 4096, "readonly": True}),
        # Options in any order, before or after the LBA size.
        ("file:disk.img:ro:4096", {"backend": "file", "path": "disk.img", "lba_size": 4096, "readonly": True}),
        ("file:new.img:size=1G", {"backend": "file", "path": "new.img", "size_bytes": 1 << 30}),
        ("file:new.img:size=2M:4096", {"backend": "file", "path": "new.img", "size_bytes": 2 * MiB, "lba_size": 4096}),
        # A path may hold ':'; what follows the last option-like field is path.
        ("file:a:b.img:ro", {"backend": "file", "path": "a:b.img", "readonly": True}),
        ("file:/dev/disk/by-path/pci-0000:00:1f.2-ata-1", {"backend": "file",
                                                           "path": "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"}),
    ],
)
def test_namespace_grammar(text: str, fields: dict[str, object]) -> None:
    spec = parse_namespace(text)
    assert dict(spec.fields) == fields
    assert spec.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("disk:64M", "use ram:SIZE[:LBA][:OPT...], null:SIZE[:LBA][:OPT...] or file:PATH[:LBA][:OPT...]"),
        ("ram:lots", "'lots' is not a size"),
        ("ram:1000:4096", "multiple of the 4096-byte LBA"),
        ("ram:64M:1024", "the LBA size must be 512 or 4096, got 1024"),
        ("ram:64M:512:4096", "two LBA sizes"),
        ("ram:64M:ro", "ro applies to file namespaces, not ram"),
        ("ram:64M:foo=1", "unknown option 'foo=1'; the options are ro (file only), size=SIZE (file only)"),
        ("file:", "name the image file"),
        ("file:disk.img:1024", "512 or 4096"),
        # Typos of :ro and size= are reported, not read as part of the path.
        ("file:disk.img:r0", "unknown option 'r0' (did you mean ro?)"),
        ("file:disk.img:RO", "unknown option 'RO' (did you mean ro?)"),
        ("file:disk.img:4096:sise=1G", "unknown option 'sise=1G' (did you mean size=SIZE?)"),
        ("file:disk.img:cache=direct", "unknown option 'cache=direct'; the options are ro, size=SIZE"),
        ("file:disk.img:ro=1", "ro is a flag: write :ro, not :ro=1"),
        ("file:disk.img:size", "size takes a value: size=SIZE, e.g. :size=1G"),
        ("file:disk.img:size=big", "size=big: 'big' is not a size"),
        ("file:disk.img:ro:ro", "given twice"),
        ("file:disk.img:4096:size=6K", "size=6144 must be a positive multiple of the 4096-byte LBA"),
    ],
)
def test_namespace_grammar_errors_name_the_bad_field(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        parse_namespace(text)
    assert message in str(e.value)
    assert repr(text) in str(e.value), "the error quotes what was typed"


def test_an_existing_file_is_a_path_whatever_it_looks_like(tmp_path: Path) -> None:
    odd = tmp_path / "disk.img:r0"
    odd.write_bytes(bytes(4096))
    assert parse_namespace(f"file:{odd}").path == str(odd)
    assert parse_namespace(f"file:{odd}:4096").fields == {"backend": "file", "path": str(odd), "lba_size": 4096}
    named_like_options = tmp_path / "x.img:ro"
    named_like_options.write_bytes(bytes(4096))
    assert parse_namespace(f"file:{named_like_options}").fields == {"backend": "file", "path": str(named_like_options)}


def test_every_option_row_is_documented_and_typable() -> None:
    # A row is all it takes to add an option: each has help, an example that
    # parses back to its field, and kinds that exist.
    for opt in OPTIONS.values():
        assert opt.help and opt.example and set(opt.kinds) <= {"ram", "null", "file"}
        kind = opt.kinds[0]
        head = "file:x.img" if kind == "file" else f"{kind}:64M"
        assert opt.field in parse_namespace(f"{head}:{opt.example}").fields


def test_size_option_creates_a_sparse_image(tmp_path: Path) -> None:
    path = tmp_path / "new.img"
    spec = parse_namespace(f"file:{path}:size=8M")
    with Controller(ControllerConfig(namespaces=[spec.config(cache="buffered", io="threads")])) as ctrl:
        assert ctrl.config.namespaces[0].size_bytes == 8 * MiB
    st = os.stat(path)
    assert st.st_size == 8 * MiB
    assert st.st_blocks * 512 < MiB, "created sparse, not written out"


def _serve_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["serve", "--socket", "/tmp/nvmefast-never.sock", *args]) == 1
    err = capsys.readouterr().err
    assert not os.path.exists("/tmp/nvmefast-never.sock")
    return err


@pytest.mark.parametrize(
    ("args", "said", "not_said"),
    [
        (["--iothreads", "0"], "--iothreads must be in 1..64, got 0", "ControllerConfig"),
        (["--queues", "70000"], "--queues must be in 1..65535, got 70000", "ControllerConfig"),
        (["--serial", "S" * 21], "--serial must be at most 20 characters", "ControllerConfig"),
        (["--model", "caf\u00e9"], "--model must be printable ASCII", "ControllerConfig"),
    ],
)
def test_serve_errors_name_the_flag(args: list[str], said: str, not_said: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    err = _serve_error(capsys, "--namespace", "null:1M", *args)
    assert said in err and not_said not in err, err


def test_a_missing_image_says_how_to_create_it_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.img"
    err = _serve_error(capsys, "--namespace", f"file:{missing}")
    assert f"--namespace file:{missing}:" in err, "the message names the argument"
    assert f"--namespace file:{missing}:size=1G" in err and "sparse" in err, err
    assert "NamespaceConfig" not in err and "size_bytes" not in err, err


def test_file_errors_use_the_option_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "a.img"
    img.write_bytes(bytes(MiB))
    err = _serve_error(capsys, "--namespace", f"file:{img}:ro:size=2M")
    assert "drop size= or :ro" in err, err
    err = _serve_error(capsys, "--namespace", f"file:{img}:size=512K")
    assert "more than size=524288" in err and "size_bytes" not in err, err
    err = _serve_error(capsys, "--namespace", f"file:{img}", "--namespace", f"file:{img}:ro")
    assert "--namespace #1 and #2 both use" in err and "make both read-only (:ro)" in err, err
    err = _serve_error(capsys, "--namespace", f"file:{tmp_path}")
    assert f"e.g. file:{tmp_path}/disk.img" in err, err


def test_bench_errors_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--poll-us", "-1", "--seconds", "0.1", "--qd", "1", "--size", "1M"]) == 1
    err = capsys.readouterr().err
    assert "--poll-us must be >= 0, got -1" in err and "ControllerConfig" not in err, err


def _without_dac_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    from the bounding set, so that root after exec obeys file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_readonly_image_that_cannot_be_read_gets_no_read_only_hint(tmp_path: Path) -> None:
    # Opening read-only is the way out of a refused write, not of a refused read.
    img = tmp_path / "secret.img"
    img.write_bytes(bytes(MiB))
    img.chmod(0o200)  # write-only: nobody may read it, root included once it obeys permissions
    try:
        r = subprocess.run(
            [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", str(tmp_path / "s.sock"),
             "--namespace", f"file:{img}:ro"],
            capture_output=True, text=True, timeout=60,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE to make a file unreadable to root: {e}")
    assert r.returncode == 1, r.stderr
    assert "cannot be opened for reading: Permission denied" in r.stderr, r.stderr
    assert "read-only" not in r.stderr.split("cannot be opened")[1], r.stderr
    # The writable open still gets the hint.
    r = subprocess.run(
        [sys.executable, "-m", "nvmefast.cli", "serve", "--socket", str(tmp_path / "s.sock"),
         "--namespace", f"file:{img}"],
        capture_output=True, text=True, timeout=60,
        preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
    )
    assert r.returncode == 1, r.stderr
    assert "cannot be opened for reading and writing" in r.stderr and "or open it read-only" in r.stderr, r.stderr
