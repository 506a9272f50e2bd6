"""The namespace directory: created namespaces that outlive the server.

With ``ControllerConfig(namespace_dir=DIR)`` (``nvmefast serve
--namespace-dir DIR``) a namespace the host creates with Namespace
Management is an image file in DIR, ``nsN-G.img`` (NSID N, generation G in
hex), with the core's companion files beside it (metadata ``.md``, zones
``.zones``, uncorrectable blocks ``.uncor``). ``DIR/namespaces.json``, the
manifest, lists every namespace a restarted server must find again: those
images, and file namespaces the embedder added with
:meth:`nvmefast.Controller.add_namespace`, each with its NSID, format,
attachment and identifiers' generation. RAM namespaces are not listed: their
data dies with the process.

The manifest is replaced atomically (written beside, flushed, renamed, the
directory flushed) after every change, so a crash leaves the old or the new
one. An image is made before the manifest names it and unlinked after the
manifest stops naming it: a crash can leave an unlisted image (logged and
left alone at the next start), never a listed one that is missing. A lock on
``DIR/.lock`` keeps a second server out.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nvmefast.config import NamespaceConfig, ZoneConfig
from nvmefast.errors import ConfigError
from nvmefast.lba_format import NamespaceFormat
from nvmefast.namespaces import NN, NamespaceEntry, Origin

__all__ = ["COMPANIONS", "MANIFEST", "NamespaceStore", "StoredNamespace"]

log = logging.getLogger(__name__)

MANIFEST = "namespaces.json"
"""The manifest's file name in the namespace directory."""
_LOCK = ".lock"
_FORMAT = "nvmefast-namespaces"
_VERSION = 1
COMPANIONS = (".md", ".zones", ".uncor")
"""Suffixes of the files the core keeps beside an image (metadata, zones,
Write Uncorrectable ranges); they go with it."""
_ZONE_KEYS = {f.name for f in dataclasses.fields(ZoneConfig)}


@dataclasses.dataclass(frozen=True)
class StoredNamespace:
    """One namespace the manifest lists."""

    nsid: int
    config: NamespaceConfig
    """A file namespace at the image (or the embedder's file), in its last format."""
    origin: str
    attached: bool
    shared: bool
    generation: int
    image: str | None
    """The image's name in the directory when the controller made it, else None."""


class NamespaceStore:
    """The namespace directory of one controller (locked while it is open)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = Path(directory)
        if not path.is_dir():
            if not path.parent.is_dir():
                raise ConfigError(
                    f"ControllerConfig.namespace_dir {str(path)!r}: its parent directory does not exist; create it"
                )
            try:
                path.mkdir()
            except OSError as e:
                raise ConfigError(f"ControllerConfig.namespace_dir {str(path)!r}: cannot create it ({e.strerror})") from None
        self.directory = path.resolve()
        """The directory, absolute."""
        self._lock_fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(
                    f"ControllerConfig.namespace_dir {str(self.directory)!r} is in use by another controller "
                    "(its .lock is held); stop that one or give another directory"
                ) from None
            raise

    def close(self) -> None:
        """Release the directory's lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @property
    def manifest(self) -> Path:
        """The manifest's path."""
        return self.directory / MANIFEST

    def image_name(self, nsid: int, generation: int) -> str:
        """The file name of a new image for ``nsid``."""
        return f"ns{nsid}-{generation:x}.img"

    def image_path(self, name: str) -> Path:
        """Where image ``name`` lives."""
        return self.directory / name

    # -- reading ------------------------------------------------------------------------

    def load(self) -> list[StoredNamespace]:
        """The namespaces the manifest lists (none without a manifest).

        Raises :class:`ConfigError` for a manifest that does not parse or a
        listed image that is missing, saying which and what to do."""
        try:
            text = self.manifest.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("version") != _VERSION:
                raise ValueError(f"not a {_FORMAT} version {_VERSION} manifest")
            stored = [self._entry(item) for item in doc["namespaces"]]
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            raise ConfigError(
                f"{self.manifest}: {e}; fix it, or move it away to start with no created namespaces"
            ) from None
        nsids = [s.nsid for s in stored]
        if len(set(nsids)) != len(nsids):
            raise ConfigError(f"{self.manifest}: an NSID is listed twice ({sorted(nsids)}); fix it")
        listed = {s.image for s in stored if s.image is not None}
        for image in sorted(self.directory.glob("ns*.img")):
            if image.name not in listed:
                log.warning("%s is in %s but not in its manifest (left over from a crash?); left alone",
                            image.name, self.directory)  # fmt: skip
        return stored

    def _entry(self, item: Any) -> StoredNamespace:
        if not isinstance(item, dict):
            raise ValueError(f"a namespace entry must be an object, got {item!r}")
        nsid = item["nsid"]
        if not isinstance(nsid, int) or not 1 <= nsid <= NN:
            raise ValueError(f"nsid {nsid!r} is not in 1..{NN}")
        image = item.get("image")
        if image is not None:
            if not isinstance(image, str) or "/" in image or image in ("", ".", ".."):
                raise ValueError(f"namespace {nsid}: image {image!r} is not a file name")
            path = self.directory / image
        else:
            path = Path(item["path"])
        if not path.exists():
            raise ConfigError(f"namespace {nsid}'s image {str(path)!r} is missing: restore it, or remove the "
                              "namespace's entry from the manifest")  # fmt: skip
        zones = item.get("zones")
        if zones is not None and (not isinstance(zones, dict) or not set(zones) <= _ZONE_KEYS):
            raise ValueError(f"namespace {nsid}: zones {zones!r} is not a zone configuration")
        origin = item.get("origin", Origin.CREATED)
        if origin not in (Origin.CREATED, Origin.ADDED):
            raise ValueError(f"namespace {nsid}: origin {origin!r} is not created or added")
        config = NamespaceConfig(
            backend="file",
            path=str(path),
            size_bytes=_int(item, "size_bytes"),
            lba_size=_int(item, "lba_size"),
            metadata_size=_int(item, "metadata_size", 0),
            extended_lba=_bool(item, "extended_lba", False),
            pi_type=_int(item, "pi_type", 0),
            pi_first=_bool(item, "pi_first", False),
            guard=str(item.get("guard", "crc16")),
            zones=None if zones is None else ZoneConfig(**zones),
        )
        return StoredNamespace(
            nsid=nsid,
            config=config,
            origin=origin,
            attached=_bool(item, "attached", True),
            shared=_bool(item, "shared", False),
            generation=_int(item, "generation", 0),
            image=image,
        )

    # -- writing ------------------------------------------------------------------------

    def save(self, entries: Iterable[NamespaceEntry], formats: Mapping[int, NamespaceFormat]) -> None:
        """Replace the manifest with the persistent ones of ``entries`` (file
        namespaces not configured), each in its format of ``formats``."""
        listed = []
        for e in entries:
            if e.origin == Origin.CONFIGURED or e.config.backend != "file":
                continue
            fmt = formats.get(e.nsid) or NamespaceFormat.of_config(e.config)
            item: dict[str, Any] = {"nsid": e.nsid, "origin": e.origin}
            if e.image is not None:
                item["image"] = e.image
            else:
                item["path"] = os.path.abspath(os.fspath(e.config.path or ""))
            item.update(
                size_bytes=e.size,
                lba_size=fmt.lba_size,
                metadata_size=fmt.metadata_size,
                extended_lba=fmt.extended_lba,
                pi_type=fmt.pi_type,
                pi_first=fmt.pi_first,
                guard=fmt.guard,
                zones=None if e.config.zones is None else dataclasses.asdict(e.config.zones),
                attached=e.attached,
                shared=e.shared,
                generation=e.generation,
            )
            listed.append(item)
        doc = {"format": _FORMAT, "version": _VERSION, "namespaces": listed}
        tmp = self.directory / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.manifest)
        _fsync_dir(self.directory)

    def remove_image(self, name: str) -> None:
        """Unlink image ``name`` and its companions (what is missing is fine)."""
        base = self.directory / name
        for path in (base, *(base.with_name(base.name + suffix) for suffix in COMPANIONS)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        _fsync_dir(self.directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _int(item: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = item.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be an int, got {value!r}")
    return value


def _bool(item: Mapping[str, Any], key: str, default: bool) -> bool:
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value
