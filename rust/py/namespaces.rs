//! Namespaces from Python: the namespace entries the constructor and
//! `add_namespace` take (dicts, older tuples), and the namespace table's
//! calls (add, remove, resize, attach, capacity).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{config_err, to_py};
use super::storage::PyStorage;
use crate::aio::Choice;
use crate::backend::{CacheMode, FileSpec, StorageRef};
use crate::engine::{Engine, NamespaceSpec};

/// One namespace entry: a dict (see [`namespace_from_dict`]),
/// `(size_bytes, lba_size, backend)`,
/// `(size_bytes, lba_size, "custom", storage_object)` or
/// `(size_bytes, lba_size, backend, path, readonly, cache, io)`.
pub(super) fn namespace_spec(py: Python<'_>, ns: &Bound<'_, PyAny>) -> PyResult<NamespaceSpec> {
    if let Ok(d) = ns.cast::<PyDict>() {
        return namespace_from_dict(py, d);
    }
    if let Ok((size_bytes, lba_size, backend, obj)) =
        ns.extract::<(u64, u32, String, Bound<'_, PyAny>)>()
    {
        if backend != "custom" {
            return Err(config_err(
                py,
                format!("a 4-tuple namespace is (size_bytes, lba_size, \"custom\", storage), not {backend:?}"),
            ));
        }
        let storage = PyStorage::new(&obj).map_err(|m| config_err(py, m))?;
        return Ok(NamespaceSpec {
            size_bytes,
            lba_size,
            backend,
            storage: Some(StorageRef(Arc::new(storage))),
            ..NamespaceSpec::default()
        });
    }
    if let Ok((size_bytes, lba_size, backend)) = ns.extract::<(u64, u32, String)>() {
        return Ok(NamespaceSpec {
            size_bytes,
            lba_size,
            backend,
            ..NamespaceSpec::default()
        });
    }
    let (size_bytes, lba_size, backend, path, readonly, cache, io) = ns
        .extract::<(u64, u32, String, Option<String>, bool, String, String)>()
        .map_err(|_| {
            config_err(
                py,
                "a namespace is (size_bytes, lba_size, backend) or (size_bytes, lba_size, backend, path, readonly, cache, io)".into(),
            )
        })?;
    Ok(NamespaceSpec {
        size_bytes,
        lba_size,
        backend,
        file: file_spec(py, path, readonly, &cache, &io)?,
        ..NamespaceSpec::default()
    })
}

fn file_spec(
    py: Python<'_>,
    path: Option<String>,
    readonly: bool,
    cache: &str,
    io: &str,
) -> PyResult<Option<FileSpec>> {
    let Some(path) = path else { return Ok(None) };
    let cache = CacheMode::parse(cache).ok_or_else(|| {
        config_err(
            py,
            format!("cache {cache:?} must be \"auto\", \"direct\" or \"buffered\""),
        )
    })?;
    let io = Choice::parse(io).ok_or_else(|| {
        config_err(
            py,
            format!("io {io:?} must be \"auto\", \"io_uring\" or \"threads\""),
        )
    })?;
    Ok(Some(FileSpec {
        path,
        readonly,
        cache,
        io,
    }))
}

/// Keys of the dict form of a namespace entry; command sets add theirs.
const NAMESPACE_KEYS: &[&str] = &[
    "size_bytes",
    "lba_size",
    "backend",
    "path",
    "readonly",
    "cache",
    "io",
    "storage",
    // Metadata and protection information (py/pi.rs).
    "metadata_size",
    "extended_lba",
    "pi_type",
    "pi_first",
    "guard",
    "zones",
];

/// The dict form: `size_bytes`, `lba_size` and `backend` required; `path`,
/// `readonly`, `cache`, `io` for a file; `storage` for `"custom"`; `zones`
/// for a zoned namespace (see `zones.rs`). An unknown key is a ConfigError
/// naming it.
fn namespace_from_dict(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<NamespaceSpec> {
    for k in d.keys() {
        let k: String = k.extract()?;
        if !NAMESPACE_KEYS.contains(&k.as_str()) {
            return Err(config_err(
                py,
                format!("namespace key {k:?} is not one of {NAMESPACE_KEYS:?}"),
            ));
        }
    }
    fn get<'py, T: for<'a> pyo3::FromPyObject<'a, 'py>>(
        py: Python<'py>,
        d: &Bound<'py, PyDict>,
        key: &str,
    ) -> PyResult<Option<T>> {
        match d.get_item(key)? {
            Some(v) if !v.is_none() => v.extract().map(Some).map_err(|_| {
                config_err(py, format!("namespace key {key:?} has the wrong type: {v}"))
            }),
            _ => Ok(None),
        }
    }
    let required = |key: &str| config_err(py, format!("a namespace needs {key:?}"));
    let size_bytes: u64 = get(py, d, "size_bytes")?.ok_or_else(|| required("size_bytes"))?;
    let lba_size: u32 = get(py, d, "lba_size")?.ok_or_else(|| required("lba_size"))?;
    let backend: String = get(py, d, "backend")?.ok_or_else(|| required("backend"))?;
    let storage = match d.get_item("storage")? {
        Some(obj) if !obj.is_none() => Some(StorageRef(Arc::new(
            PyStorage::new(&obj).map_err(|m| config_err(py, m))?,
        ))),
        _ => None,
    };
    let cache: String = get(py, d, "cache")?.unwrap_or_else(|| "auto".into());
    let io: String = get(py, d, "io")?.unwrap_or_else(|| "auto".into());
    let readonly: bool = get(py, d, "readonly")?.unwrap_or(false);
    Ok(NamespaceSpec {
        size_bytes,
        lba_size,
        backend,
        file: file_spec(py, get(py, d, "path")?, readonly, &cache, &io)?,
        storage,
        metadata: super::pi::from_dict(py, d)?,
        zones: super::zones::zone_spec(py, d.get_item("zones")?)?,
    })
}

/// `Engine.add_namespace`.
pub(super) fn add(
    py: Python<'_>,
    engine: &Engine,
    namespace: &Bound<'_, PyAny>,
    nsid: Option<u32>,
    attached: bool,
) -> PyResult<u32> {
    let spec = namespace_spec(py, namespace)?;
    py.detach(|| engine.add_namespace(&spec, nsid, attached))
        .map_err(|e| to_py(py, e))
}

/// `Engine.capacity`.
pub(super) fn capacity<'py>(py: Python<'py>, engine: &Engine) -> PyResult<Bound<'py, PyDict>> {
    let c = engine.capacity();
    let d = PyDict::new(py);
    d.set_item("total_bytes", c.total_bytes)?;
    d.set_item("allocated_bytes", c.allocated_bytes)?;
    d.set_item("unallocated_bytes", c.unallocated_bytes())?;
    Ok(d)
}
