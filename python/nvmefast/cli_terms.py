"""Configuration errors in the words of the command line.

:class:`~nvmefast.ConfigError` messages name the Python API's fields
(``ControllerConfig.iothreads must be in 1..64``), which is right for code
and wrong for someone who typed ``nvmefast serve --iothreads 0``. Each
command maps the config fields it sets to the flags that set them, and its
errors are rewritten through that map before they are printed. The
``--namespace`` options come from :data:`nvmefast.namespace_spec.OPTIONS`,
so a new option row is named correctly in messages without more code here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from nvmefast.namespace_spec import OPTIONS, ZONE_PREFIX

__all__ = ["BENCH_TERMS", "SERVE_TERMS", "Terms", "in_cli_terms", "namespace_terms"]

Terms = Sequence[tuple[str, str | Callable[[re.Match[str]], str]]]
"""(regex, replacement) pairs, applied in order."""


def _fields(flags: Mapping[str, str]) -> Terms:
    # Longest first, and whole words only: iothreads is not iothread_affinity.
    return [(r"(?<![\w.])" + re.escape(field) + r"(?!\w)", flag)
            for field, flag in sorted(flags.items(), key=lambda i: -len(i[0]))]


def _zone_terms() -> Terms:
    # ZoneConfig's fields are the zone options; its messages also say
    # "size_bytes" for the zone size, which elsewhere is the namespace's.
    terms: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
        (r"or None for the whole zone", "or leave zone-cap= out for the whole zone"),
        (r"or None for MDTS", "or leave zasl= out for MDTS"),
        (r"use None for MDTS", "leave zasl= out for MDTS"),
    ]
    for opt in OPTIONS.values():
        if not opt.field.startswith(ZONE_PREFIX):
            continue
        name = opt.field.removeprefix(ZONE_PREFIX)
        if opt.value is None:
            terms.append((rf"(?:ZoneConfig\.)?\b{name}\b", f":{opt.key}"))
            continue
        terms.append((rf"(?:ZoneConfig\.)?\b{name} (\d\S*)", rf"{opt.key}=\1"))
        terms.append((rf"(?:ZoneConfig\.)?\b{name}\b", f"{opt.key}="))
    return terms


def _in_zone_terms(m: re.Match[str]) -> str:
    return in_cli_terms(m.group(0), _zone_terms())


def namespace_terms(example_spec: str | None = None) -> Terms:
    """NamespaceConfig's fields as ``--namespace`` options; ``example_spec`` (the
    user's ``--namespace`` text) makes an example of the fix where one fits."""
    # A ZoneConfig message is rewritten in the zone options' words as a whole.
    terms: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [(r"ZoneConfig\.\w+.*", _in_zone_terms)]
    for opt in OPTIONS.values():
        if opt.field.startswith(ZONE_PREFIX):
            continue
        if opt.value is None:
            # readonly=True, NamespaceConfig.readonly -> :ro
            terms.append((rf"\b{opt.field}=True\b", f":{opt.key}"))
            terms.append((rf"NamespaceConfig\.{opt.field}\b", f":{opt.key}"))
            terms.append((rf"\b{opt.field}\b", f":{opt.key}"))
        else:
            given = example_spec is not None and f":{opt.key}=" in example_spec
            example = f" (--namespace {example_spec}:{opt.example})" if example_spec and not given else ""
            # guard='crc64' -> guard=crc64; pi_type 1 -> pi=1
            terms.append((rf"(?:NamespaceConfig\.)?\b{opt.field}=(['\"])(.*?)\1", rf"{opt.key}=\2"))
            terms.append((rf"(?:NamespaceConfig\.)?\b{opt.field}[= ](\d\w*)", rf"{opt.key}=\1"))
            terms.append((rf"NamespaceConfig\.{opt.field}\b", f"{opt.form}{example}"))
            if opt.field != opt.key:  # a key that is the field's name is a word of prose too (guard)
                terms.append((rf"\b{opt.field}\b", f"{opt.key}="))
    terms += [
        (r",? or None for its size", ", or leave size= out for the file's own size"),
        (r"\blba_size=(\d+)", r":\1 (the LBA size)"),
        (r"(?:NamespaceConfig\.)?\blba_size\b", "the LBA size"),
        (r"\bpath=(['\"])(.*?)\1", r"file:\2"),
        (r"NamespaceConfig\.path\b", "PATH (file:PATH)"),
        (r"NamespaceConfig\.cache\b", "--cache"),
        (r"NamespaceConfig\.io\b", "--io"),
    ]
    return terms


def _namespace_index(m: re.Match[str]) -> str:
    first = f"--namespace #{int(m.group(1)) + 1}"
    return first if m.group(2) is None else f"{first} and #{int(m.group(2)) + 1}"


SERVE_TERMS: Terms = [
    (r"ControllerConfig\.namespaces\[(\d+)\](?: and \[(\d+)\])?", _namespace_index),
    *_fields({
        "ControllerConfig.namespaces": "--namespace",
        "ControllerConfig.iothreads": "--iothreads",
        "ControllerConfig.max_io_queue_pairs": "--queues",
        "ControllerConfig.msix_vectors": "the MSI-X vectors (one per --queues, plus one)",
        "ControllerConfig.serial": "--serial",
        "ControllerConfig.model": "--model",
        "ControllerConfig.polling": "--polling",
        "ControllerConfig.cpus": "--cpus",
        "ControllerConfig.multi_controller": "--multi-controller",
        "ControllerConfig.capacity_bytes": "--capacity",
        "ControllerConfig.namespace_dir": "--namespace-dir",
        "capacity_bytes": "--capacity",
        "doorbell_scan_us": "--doorbell-scan-us",
    }),
    *namespace_terms(),
]
"""``nvmefast serve``: ControllerConfig fields and the ``--namespace`` options."""

BENCH_TERMS: Terms = _fields({
    "ControllerConfig.iothreads": "--iothreads",
    "ControllerConfig.poll_us": "--poll-us",
    "NamespaceConfig.size_bytes": "--size",
    "size_bytes": "--size",
    "NamespaceConfig.lba_size": "--lba-size",
    "lba_size": "--lba-size",
    "NamespaceConfig.path": "--file",
    "NamespaceConfig.cache": "--cache",
    "NamespaceConfig.io": "--io",
})
"""``nvmefast bench``: what BenchConfig passes on to the controller and namespace."""


def in_cli_terms(message: str, terms: Terms) -> str:
    """``message`` with each config field named as ``terms`` say."""
    for pattern, replacement in terms:
        message = re.sub(pattern, replacement, message)
    return message
