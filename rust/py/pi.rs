//! The metadata settings of a namespace as Python gives them: the keys of
//! a namespace dict and the arguments of `Engine.format_namespace`.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::config_err;
use crate::pi::{Format, Guard};

/// A format from its five settings; the validity of the combination is
/// checked by the core with the LBA size.
pub(super) fn format(
    py: Python<'_>,
    metadata_size: u64,
    extended_lba: bool,
    pi_type: u64,
    pi_first: bool,
    guard: &str,
) -> PyResult<Format> {
    let ms = u16::try_from(metadata_size).map_err(|_| {
        config_err(
            py,
            format!("metadata_size {metadata_size} must be 0, 8, 16 or 64"),
        )
    })?;
    let pi = u8::try_from(pi_type)
        .ok()
        .filter(|&p| p <= 3)
        .ok_or_else(|| config_err(py, format!("pi_type {pi_type} must be 0, 1, 2 or 3")))?;
    let guard = Guard::parse(guard).ok_or_else(|| {
        config_err(
            py,
            format!("guard {guard:?} must be \"crc16\" or \"crc64\""),
        )
    })?;
    Ok(Format {
        ms,
        extended: extended_lba,
        pi,
        first: pi_first,
        guard,
    })
}

/// The metadata format of a namespace dict (absent keys: no metadata).
pub(super) fn from_dict(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<Format> {
    fn get<'py, T: for<'a> pyo3::FromPyObject<'a, 'py>>(
        py: Python<'py>,
        d: &Bound<'py, PyDict>,
        key: &str,
        default: T,
    ) -> PyResult<T> {
        match d.get_item(key)? {
            Some(v) if !v.is_none() => v.extract().map_err(|_| {
                config_err(py, format!("namespace key {key:?} has the wrong type: {v}"))
            }),
            _ => Ok(default),
        }
    }
    let guard: String = get(py, d, "guard", "crc16".to_string())?;
    format(
        py,
        get(py, d, "metadata_size", 0u64)?,
        get(py, d, "extended_lba", false)?,
        get(py, d, "pi_type", 0u64)?,
        get(py, d, "pi_first", false)?,
        &guard,
    )
}

/// A format as a dict (`Engine.namespace_format`).
pub(super) fn to_dict<'py>(
    py: Python<'py>,
    lba_size: u32,
    f: Format,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("lba_size", lba_size)?;
    d.set_item("metadata_size", f.ms)?;
    d.set_item("extended_lba", f.extended)?;
    d.set_item("pi_type", f.pi)?;
    d.set_item("pi_first", f.first)?;
    d.set_item("guard", f.guard.name())?;
    Ok(d)
}
