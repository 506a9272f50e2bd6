//! Python callables the workers call: the admin handler, the DMA
//! transport and notifiers. Each call goes through `lifecycle`, which knows
//! what a worker may do while the interpreter exits.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use super::lifecycle;
use crate::engine::{AdminHandler, AdminOutcome};
use crate::mem::DmaTransport;
use crate::spec::{Sqe, Status};

/// Runs `body` attached, on a worker thread: `None` once the interpreter
/// is finalizing (nothing ran); an exception is printed, as nobody else
/// would see it, and becomes its message.
fn attached<R>(
    body: impl for<'py> FnOnce(Python<'py>) -> PyResult<R>,
) -> Option<Result<R, String>> {
    lifecycle::call_python(|py| {
        body(py).map_err(|e| {
            let msg = e.to_string();
            e.print(py);
            msg
        })
    })
}

/// A notifier that calls `callback(value)` on the worker thread.
pub(super) fn notifier<A>(callback: Py<PyAny>) -> impl Fn(A) + Send + Sync + 'static
where
    A: for<'py> IntoPyObject<'py>,
{
    move |value: A| {
        let _ = attached(|py| lifecycle::call(callback.bind(py), (value,)).map(drop));
    }
}

/// The memory loss handler: `callback(iova, size)` on the worker thread.
pub(super) fn loss_notifier(callback: Py<PyAny>) -> impl Fn(u64, u64) + Send + Sync + 'static {
    move |iova: u64, size: u64| {
        let _ = attached(|py| lifecycle::call(callback.bind(py), (iova, size)).map(drop));
    }
}

/// Calls the Python admin handler on the worker thread.
pub(super) struct PyAdminHandler(pub(super) Py<PyAny>);

impl AdminHandler for PyAdminHandler {
    fn handle(&self, sqe: &Sqe) -> AdminOutcome {
        let outcome = attached(|py| {
            let r = lifecycle::call(self.0.bind(py), (PyBytes::new(py, &sqe.to_bytes()),))?;
            if r.is_none() {
                return Ok(AdminOutcome::Deferred);
            }
            let (status, dw0) = r.extract::<(u16, u32)>()?;
            Ok(AdminOutcome::Complete {
                status: Status::from_field(status),
                dw0,
            })
        });
        match outcome {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => AdminOutcome::Complete {
                status: Status::INTERNAL_ERROR.dnr(),
                dw0: 0,
            },
            // The interpreter is exiting: leave the command outstanding, as
            // a controller losing power would.
            None => AdminOutcome::Deferred,
        }
    }
}

/// A DMA access through [`attached`], failed once the interpreter is exiting.
fn dma<R>(body: impl for<'py> FnOnce(Python<'py>) -> PyResult<R>) -> Result<R, String> {
    attached(body).unwrap_or_else(|| Err("the Python interpreter is exiting".to_string()))
}

/// Remote guest memory through Python callables, called on worker threads.
///
/// Workers run detached from Python; each call attaches for the callable
/// only. The callable may block (a vfio-user round trip) and releases the
/// GIL while it waits, as any blocking Python call does; the bindings that
/// take a worker's queue lock detach first, so a worker holding its lock
/// and waiting for the GIL cannot deadlock against them. An exception is
/// printed, like the admin handler's, and fails the access.
pub(super) struct PyDmaTransport {
    pub(super) read: Option<Py<PyAny>>,
    pub(super) write: Option<Py<PyAny>>,
}

impl DmaTransport for PyDmaTransport {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String> {
        let f = self.read.as_ref().ok_or("no DMA read callback is set")?;
        dma(|py| {
            let data =
                lifecycle::call(f.bind(py), (iova, buf.len()))?.extract::<PyBackedBytes>()?;
            if data.len() != buf.len() {
                return Ok(Err(format!(
                    "DMA read callback returned {} bytes for {} at {iova:#x}",
                    data.len(),
                    buf.len()
                )));
            }
            buf.copy_from_slice(&data);
            Ok(Ok(()))
        })?
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String> {
        let f = self.write.as_ref().ok_or("no DMA write callback is set")?;
        dma(|py| lifecycle::call(f.bind(py), (iova, PyBytes::new(py, data))).map(drop))
    }
}
