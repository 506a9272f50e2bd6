//! A Python object as a namespace's [`Storage`]: `read(lba, nlb) -> bytes`,
//! `write(lba, data)`, `flush()`, optional `write_zeroes(lba, nlb)` and
//! `deallocate(lba, nlb)`.
//!
//! Called on the worker thread running the command, which attaches to the
//! interpreter for the call only (as the admin handler and the DMA
//! callbacks do). An exception or a result of the wrong type or length is
//! logged on the `nvmefast.backend` logger and fails the command (Internal
//! Error); the worker carries on.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};

use super::lifecycle;
use crate::backend::Storage;

/// The bound methods of the object, looked up once.
pub(super) struct PyStorage {
    read: Py<PyAny>,
    write: Py<PyAny>,
    flush: Option<Py<PyAny>>,
    write_zeroes: Option<Py<PyAny>>,
    deallocate: Option<Py<PyAny>>,
    read_metadata: Option<Py<PyAny>>,
    write_metadata: Option<Py<PyAny>>,
}

impl PyStorage {
    /// Takes `obj`'s methods; a missing `read` or `write` is a message
    /// saying what to add.
    pub(super) fn new(obj: &Bound<'_, PyAny>) -> Result<PyStorage, String> {
        let method = |name: &str| -> Option<Py<PyAny>> {
            obj.getattr(name)
                .ok()
                .filter(|m| m.is_callable())
                .map(Bound::unbind)
        };
        let need = |name: &str| {
            method(name).ok_or_else(|| {
                format!("a storage backend needs a {name}() method ({obj:?} has none): see nvmefast.Storage")
            })
        };
        Ok(PyStorage {
            read: need("read")?,
            write: need("write")?,
            flush: method("flush"),
            write_zeroes: method("write_zeroes"),
            deallocate: method("deallocate"),
            read_metadata: method("read_metadata"),
            write_metadata: method("write_metadata"),
        })
    }
}

/// Logs `err` from `what` on the `nvmefast.backend` logger (printed when
/// logging itself fails) and returns its text.
fn report(py: Python<'_>, what: &str, err: PyErr) -> String {
    let msg = format!("{what}: {err}");
    let logged = (|| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("nvmefast.backend",))?;
        let kw = PyDict::new(py);
        kw.set_item("exc_info", err.value(py))?;
        logger.call_method("error", ("storage %s failed", what), Some(&kw))?;
        Ok(())
    })();
    if logged.is_err() {
        err.print(py);
    }
    msg
}

/// Runs `body` attached; an exiting interpreter fails the call.
fn attached<R>(
    what: impl Fn() -> String,
    body: impl for<'py> FnOnce(Python<'py>) -> PyResult<Result<R, String>>,
) -> Result<R, String> {
    lifecycle::call_python(|py| match body(py) {
        Ok(r) => r.map_err(|m| {
            let e = pyo3::exceptions::PyValueError::new_err(m);
            report(py, &what(), e)
        }),
        Err(e) => Err(report(py, &what(), e)),
    })
    .unwrap_or_else(|| Err("the Python interpreter is exiting".into()))
}

impl Storage for PyStorage {
    fn read(&self, lba: u64, nlb: u64, lba_size: u32, buf: &mut [u8]) -> Result<(), String> {
        attached(
            || format!("read({lba}, {nlb})"),
            |py| {
                let got = lifecycle::call(self.read.bind(py), (lba, nlb))?;
                let data = got.extract::<PyBackedBytes>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "read() must return bytes, not {}",
                        got.get_type()
                    ))
                })?;
                if data.len() != buf.len() {
                    return Ok(Err(format!(
                        "read({lba}, {nlb}) returned {} bytes, not {} ({nlb} blocks of {lba_size})",
                        data.len(),
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&data);
                Ok(Ok(()))
            },
        )
    }

    fn write(&self, lba: u64, data: &[u8], lba_size: u32) -> Result<(), String> {
        attached(
            || format!("write({lba}, <{} blocks>)", data.len() / lba_size as usize),
            |py| {
                lifecycle::call(self.write.bind(py), (lba, PyBytes::new(py, data)))?;
                Ok(Ok(()))
            },
        )
    }

    fn flush(&self) -> Result<(), String> {
        let Some(f) = &self.flush else {
            return Ok(());
        };
        attached(
            || "flush()".into(),
            |py| {
                lifecycle::call(f.bind(py), ())?;
                Ok(Ok(()))
            },
        )
    }

    fn write_zeroes(&self, lba: u64, nlb: u64, _lba_size: u32) -> Result<bool, String> {
        optional(self.write_zeroes.as_ref(), "write_zeroes", lba, nlb)
    }

    fn deallocate(&self, lba: u64, nlb: u64, _lba_size: u32) -> Result<bool, String> {
        optional(self.deallocate.as_ref(), "deallocate", lba, nlb)
    }

    fn has_metadata(&self) -> bool {
        self.read_metadata.is_some() && self.write_metadata.is_some()
    }

    fn read_metadata(&self, lba: u64, nlb: u64, ms: u32, buf: &mut [u8]) -> Result<(), String> {
        let Some(f) = &self.read_metadata else {
            return Err("no read_metadata()".into());
        };
        attached(
            || format!("read_metadata({lba}, {nlb})"),
            |py| {
                let got = lifecycle::call(f.bind(py), (lba, nlb))?;
                let data = got.extract::<PyBackedBytes>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "read_metadata() must return bytes, not {}",
                        got.get_type()
                    ))
                })?;
                if data.len() != buf.len() {
                    return Ok(Err(format!(
                        "read_metadata({lba}, {nlb}) returned {} bytes, not {} ({nlb} blocks of {ms})",
                        data.len(),
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&data);
                Ok(Ok(()))
            },
        )
    }

    fn write_metadata(&self, lba: u64, data: &[u8], ms: u32) -> Result<(), String> {
        let Some(f) = &self.write_metadata else {
            return Err("no write_metadata()".into());
        };
        attached(
            || {
                format!(
                    "write_metadata({lba}, <{} blocks>)",
                    data.len() / ms.max(1) as usize
                )
            },
            |py| {
                lifecycle::call(f.bind(py), (lba, PyBytes::new(py, data)))?;
                Ok(Ok(()))
            },
        )
    }
}

/// Calls an optional method: `Ok(false)` when the object has none.
fn optional(f: Option<&Py<PyAny>>, name: &str, lba: u64, nlb: u64) -> Result<bool, String> {
    let Some(f) = f else {
        return Ok(false);
    };
    attached(
        || format!("{name}({lba}, {nlb})"),
        |py| {
            lifecycle::call(f.bind(py), (lba, nlb))?;
            Ok(Ok(true))
        },
    )
}
