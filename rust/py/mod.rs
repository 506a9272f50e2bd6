//! The pyo3 bindings: thin, typed, one error mapping. Everything that waits
//! for the worker, or takes a worker's queue lock, releases the GIL
//! (`py.detach`), or it would deadlock with a worker that needs the GIL to
//! run an admin handler or a DMA transport callback under that lock.
//!
//! - `engine`: the `Engine` class, the embedding contract's core;
//! - `errors`: the exception hierarchy, the one mapping from core errors,
//!   argument checks (`u16_arg`, `choice` for names of enum values);
//! - `callbacks`: the Python callables workers call (admin handler, DMA
//!   transport, notifiers);
//! - `lifecycle`: worker thread states, and stopping at interpreter exit;
//! - `namespaces`: namespace entries and the namespace table's calls;
//! - `storage`: a Python object as a namespace's blocks;
//! - `faults`: the fault rule table and power state;
//! - `pi`: metadata settings (namespace keys, Format NVM arguments);
//! - `zones`: zoned namespaces (the `zones` namespace key, zone methods);
//! - `trace`: command trace records as dicts;
//! - `bench`: benchmark drivers and floors;
//! - `vfio_bench`: the vfio-user benchmark client.

use pyo3::prelude::*;

mod bench;
mod callbacks;
mod engine;
mod errors;
mod faults;
mod lifecycle;
mod maintenance;
mod namespaces;
mod pi;
mod storage;
mod trace;
mod vfio_bench;
mod zones;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::add_exceptions(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<faults::PyFaultTable>()?;
    bench::add_functions(m)?;
    vfio_bench::add(m)?;
    lifecycle::install_exit_hook(m)
}
