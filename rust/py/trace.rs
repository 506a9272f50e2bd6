//! The command trace's records as Python dicts (see `Engine.trace_*` in
//! `_core.pyi`).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::engine::trace::{Kind, Record};

/// One record as a dict: kind, fetch_ns, done_ns, qid, cid, opcode, nsid,
/// slba, nlb, status, worker, value (a register write: offset in `offset`).
pub(super) fn record_dict<'py>(py: Python<'py>, r: &Record) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", r.kind.name())?;
    let c = &r.cmd;
    d.set_item("fetch_ns", c.fetch_ns)?;
    d.set_item("done_ns", r.done_ns)?;
    if r.kind == Kind::Register {
        d.set_item("offset", c.slba)?;
        d.set_item("value", r.value)?;
        return Ok(d);
    }
    d.set_item("qid", c.qid)?;
    d.set_item("cid", c.cid)?;
    d.set_item("opcode", c.opcode)?;
    d.set_item("nsid", c.nsid)?;
    d.set_item("slba", c.slba)?;
    d.set_item("nlb", c.nlb)?;
    d.set_item("status", r.status)?;
    d.set_item("worker", c.worker)?;
    d.set_item("dw0", r.value)?;
    Ok(d)
}
