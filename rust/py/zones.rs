//! Zoned namespaces from Python: the `zones` entry of a namespace dict,
//! and the bodies of the `Engine` zone methods (see `_core.pyi`).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::callbacks::notifier;
use super::errors::{config_err, to_py};
use crate::engine::Engine;
use crate::zns::{ZoneAction, ZoneSpec};

/// Keys of the `zones` dict.
const ZONE_KEYS: &[&str] = &[
    "size_bytes",
    "capacity_bytes",
    "max_open",
    "max_active",
    "append_size_limit",
    "descriptor_extension_bytes",
    "cross_read",
];

/// The `zones` entry of a namespace dict: None, or a dict of `ZONE_KEYS`
/// (`size_bytes` required, the rest 0/False: no limit, the zone size,
/// MDTS, no extension).
pub(super) fn zone_spec(py: Python<'_>, v: Option<Bound<'_, PyAny>>) -> PyResult<Option<ZoneSpec>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let d = v.cast::<PyDict>().map_err(|_| {
        config_err(
            py,
            format!("namespace key \"zones\" must be a dict of {ZONE_KEYS:?}, not {v}"),
        )
    })?;
    for k in d.keys() {
        let k: String = k.extract()?;
        if !ZONE_KEYS.contains(&k.as_str()) {
            return Err(config_err(
                py,
                format!("zones key {k:?} is not one of {ZONE_KEYS:?}"),
            ));
        }
    }
    fn get<'py, T: for<'a> pyo3::FromPyObject<'a, 'py> + Default>(
        py: Python<'py>,
        d: &Bound<'py, PyDict>,
        key: &str,
    ) -> PyResult<T> {
        match d.get_item(key)? {
            Some(v) if !v.is_none() => v
                .extract()
                .map_err(|_| config_err(py, format!("zones key {key:?} has the wrong type: {v}"))),
            _ => Ok(T::default()),
        }
    }
    let spec = ZoneSpec {
        size_bytes: get(py, d, "size_bytes")?,
        capacity_bytes: get(py, d, "capacity_bytes")?,
        max_open: get(py, d, "max_open")?,
        max_active: get(py, d, "max_active")?,
        append_size_limit: get(py, d, "append_size_limit")?,
        descriptor_extension_bytes: get(py, d, "descriptor_extension_bytes")?,
        cross_read: get(py, d, "cross_read")?,
    };
    if spec.size_bytes == 0 {
        return Err(config_err(
            py,
            "zones needs \"size_bytes\" (the zone size)".into(),
        ));
    }
    Ok(Some(spec))
}

/// `Engine.zone_geometry(nsid)`.
pub(super) fn geometry<'py>(
    py: Python<'py>,
    e: &Engine,
    nsid: u32,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(g) = e.zone_geometry(nsid) else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("zone_lbas", g.zone_lbas())?;
    d.set_item("capacity_lbas", g.zcap)?;
    d.set_item("zones", g.zones)?;
    d.set_item("max_open", g.max_open)?;
    d.set_item("max_active", g.max_active)?;
    d.set_item("zasl_bytes", g.zasl_bytes)?;
    d.set_item("zde_bytes", g.zde_bytes)?;
    d.set_item("cross_read", g.cross_read)?;
    Ok(Some(d))
}

/// `Engine.zone_action(nsid, zone, action)`.
pub(super) fn action(
    py: Python<'_>,
    e: &Engine,
    nsid: u32,
    zone: u32,
    action: &str,
) -> PyResult<bool> {
    let a = ZoneAction::parse(action).ok_or_else(|| {
        config_err(
            py,
            format!(
                "zone action {action:?} must be \"readonly\", \"offline\", \"finish-recommended\" or \
                 \"reset-recommended\""
            ),
        )
    })?;
    // Attached: the event handler may run Python right here.
    e.zone_action(nsid, zone, a).map_err(|x| to_py(py, x))
}

/// `Engine.set_zone_event_handler(handler)`.
pub(super) fn set_handler(e: &Engine, handler: Option<Py<PyAny>>) {
    let cb = handler.map(|h| Arc::new(notifier::<u32>(h)) as crate::engine::ZoneEventCallback);
    e.set_zone_event_handler(cb);
}
