//! `VfioUserBench`: the vfio-user benchmark client (Rust, in
//! `driver::vfio_user`) for Python. Every method that talks to the server
//! runs with the GIL released: the server may be in this very process.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::{choice, config_err, state_err};
use crate::driver::bench::{Mode, Workload};
use crate::driver::floor;
use crate::driver::vfio_user::sweep::{VfioBench, MAX_QD};
use crate::driver::vfio_user::Error;

const MODES: &[(&str, Mode)] = &[("irq", Mode::Irq), ("poll", Mode::Poll)];
const WORKLOADS: &[(&str, Workload)] = &[
    ("randread", Workload::RandRead),
    ("randwrite", Workload::RandWrite),
];
const RINGS: &[(&str, ())] = &[("page", ()), ("shadow", ()), ("trap", ())];

fn client_err(py: Python<'_>, e: Error) -> PyErr {
    state_err(py, format!("vfio-user benchmark client: {e}"))
}

/// A vfio-user client connected to a server, its NVMe controller up.
#[pyclass(module = "nvmefast._core", name = "VfioUserBench")]
pub(super) struct PyVfioUserBench {
    inner: Mutex<Option<VfioBench>>,
    socket: String,
}

impl PyVfioUserBench {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut VfioBench) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        let r = py.detach(|| {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.as_mut().map(f)
        });
        match r {
            None => Err(state_err(py, "VfioUserBench is closed".into())),
            Some(r) => r.map_err(|e| client_err(py, e)),
        }
    }
}

#[pymethods]
impl PyVfioUserBench {
    #[new]
    #[pyo3(signature = (socket, *, mem_bytes=64 << 20))]
    fn new(py: Python<'_>, socket: String, mem_bytes: usize) -> PyResult<Self> {
        if !(16 << 20..=1 << 34).contains(&mem_bytes) || mem_bytes % 4096 != 0 {
            return Err(config_err(
                py,
                format!("mem_bytes {mem_bytes} must be a multiple of 4096 in 16 MiB..16 GiB"),
            ));
        }
        let path = PathBuf::from(&socket);
        let b = py
            .detach(|| VfioBench::connect(&path, mem_bytes))
            .map_err(|e| {
                state_err(
                    py,
                    format!("cannot bring up the controller at {socket}: {e}"),
                )
            })?;
        Ok(PyVfioUserBench {
            inner: Mutex::new(Some(b)),
            socket,
        })
    }

    /// The server's socket path.
    #[getter]
    fn socket(&self) -> String {
        self.socket.clone()
    }

    /// Namespace 1 and the transport: lbas, lba_size, max_entries, doorbell_page.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (lbas, lba_size, entries, page) = self.with(py, |b| {
            Ok((
                b.host.ns.0,
                b.host.ns.1,
                b.host.max_entries,
                b.host.has_doorbell_page(),
            ))
        })?;
        let d = PyDict::new(py);
        d.set_item("lbas", lbas)?;
        d.set_item("lba_size", lba_size)?;
        d.set_item("max_entries", entries)?;
        d.set_item("doorbell_page", page)?;
        Ok(d)
    }

    /// One point of the sweep; returns its figures.
    #[pyo3(signature = (*, qd, mode, doorbell, seconds, workload="randread"))]
    fn point<'py>(
        &self,
        py: Python<'py>,
        qd: u32,
        mode: &str,
        doorbell: &str,
        seconds: f64,
        workload: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mode = choice(py, "mode", mode, MODES)?;
        let workload = choice(py, "workload", workload, WORKLOADS)?;
        choice(py, "doorbell", doorbell, RINGS)?;
        if !(1..=MAX_QD).contains(&qd) {
            return Err(config_err(py, format!("qd {qd} must be in 1..={MAX_QD}")));
        }
        if !(seconds > 0.0 && seconds <= 600.0) {
            return Err(config_err(
                py,
                format!("seconds {seconds} must be in (0, 600]"),
            ));
        }
        let ring = doorbell.to_owned();
        let p = self.with(py, move |b| b.point(workload, qd, mode, &ring, seconds))?;
        point_dict(py, &p)
    }

    /// Writes every block of namespace 1 once (reads then touch real pages).
    fn fill<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.with(py, |b| b.fill())?;
        point_dict(py, &p)
    }

    /// Writes `blocks` random blocks with a pattern, reads them back: the
    /// number that came back different (0 when the data path is right).
    #[pyo3(signature = (blocks=64, seed=1))]
    fn verify(&self, py: Python<'_>, blocks: u32, seed: u64) -> PyResult<u32> {
        self.with(py, move |b| b.verify(blocks, seed))
    }

    /// Disconnects (the server sees the socket close).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

fn point_dict<'py>(
    py: Python<'py>,
    p: &crate::driver::vfio_user::sweep::Point,
) -> PyResult<Bound<'py, PyDict>> {
    let o = &p.outcome;
    let d = super::bench::figures(py, o)?;
    d.set_item("interrupts", o.interrupts)?;
    d.set_item("doorbells", o.doorbells)?;
    d.set_item("mmio_doorbells", o.mmio_doorbells)?;
    d.set_item("messages", p.messages)?;
    Ok(d)
}

/// Mean round trip in ns of a 16-byte request/reply over a UNIX socket pair.
#[pyfunction]
#[pyo3(signature = (iterations, max_seconds=2.0))]
fn floor_unix_socket_rtt(py: Python<'_>, iterations: u32, max_seconds: f64) -> f64 {
    py.detach(|| floor::unix_socket_rtt(iterations, max_seconds))
}

/// Adds the class and its floor to the module.
pub(super) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVfioUserBench>()?;
    m.add_function(wrap_pyfunction!(floor_unix_socket_rtt, m)?)
}
