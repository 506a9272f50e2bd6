//! Device Self-test and Sanitize from Python: the engine's background
//! operations (`engine/maintenance.rs`) with dict statuses, and the
//! handler told when one finishes.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::callbacks::notifier;
use super::errors::{config_err, to_py};
use crate::engine::{BackgroundCallback, Engine, SanitizeRequest, SanitizeState, SelfTestStatus};
use crate::nsmgmt::background::{Erase, Outcome};

fn seconds(py: Python<'_>, min_seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(min_seconds).map_err(|_| {
        config_err(
            py,
            format!("min_seconds {min_seconds} must be a finite number of seconds, 0 or more"),
        )
    })
}

/// `Engine.self_test_start(nsids, extended, min_seconds)`.
pub(super) fn self_test_start(
    py: Python<'_>,
    e: &Engine,
    nsids: Vec<u32>,
    extended: bool,
    min_seconds: f64,
) -> PyResult<()> {
    let min = seconds(py, min_seconds)?;
    py.detach(|| e.self_test_start(&nsids, extended, min))
        .map_err(|x| to_py(py, x))
}

/// `Engine.self_test_status()`.
pub(super) fn self_test_status<'py>(py: Python<'py>, e: &Engine) -> PyResult<Bound<'py, PyDict>> {
    let s: SelfTestStatus = e.self_test_status();
    let d = PyDict::new(py);
    d.set_item("running", s.running)?;
    d.set_item("extended", s.extended)?;
    d.set_item("percent", s.percent)?;
    let (result, lba) = match s.outcome {
        Outcome::None => ("none", None),
        Outcome::Passed => ("passed", None),
        Outcome::Failed { lba, .. } => ("failed", Some(lba)),
        Outcome::Aborted => ("aborted", None),
    };
    d.set_item("result", if s.running { "none" } else { result })?;
    d.set_item("nsid", s.nsid)?;
    d.set_item("lba", if s.running { None } else { lba })?;
    d.set_item("segment", s.segment)?;
    Ok(d)
}

/// `Engine.sanitize_start(action, pattern, passes, invert, deallocate, min_seconds)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn sanitize_start(
    py: Python<'_>,
    e: &Engine,
    action: &str,
    pattern: u32,
    passes: u32,
    invert: bool,
    deallocate: bool,
    min_seconds: f64,
) -> PyResult<()> {
    let passes = u8::try_from(passes)
        .ok()
        .filter(|p| (1..=16).contains(p))
        .ok_or_else(|| config_err(py, format!("passes {passes} must be in 1..=16")))?;
    let erase = match action {
        "block-erase" => Erase::Block,
        "overwrite" => Erase::Overwrite {
            pattern,
            passes,
            invert,
        },
        other => {
            return Err(config_err(
                py,
                format!(
                    "action {other:?} must be \"block-erase\" or \"overwrite\" (crypto erase is \
                     not supported: SANICAP bit 0 clear)"
                ),
            ))
        }
    };
    let req = SanitizeRequest {
        erase,
        deallocate,
        min: seconds(py, min_seconds)?,
    };
    py.detach(|| e.sanitize_start(req))
        .map_err(|x| to_py(py, x))
}

/// `Engine.sanitize_status()`.
pub(super) fn sanitize_status<'py>(py: Python<'py>, e: &Engine) -> PyResult<Bound<'py, PyDict>> {
    let s = e.sanitize_status();
    let d = PyDict::new(py);
    d.set_item(
        "state",
        match s.state {
            SanitizeState::Idle => "idle",
            SanitizeState::Running => "running",
            SanitizeState::Done => "done",
            SanitizeState::Failed => "failed",
        },
    )?;
    d.set_item("progress", s.progress)?;
    d.set_item("passes_done", s.passes_done)?;
    Ok(d)
}

/// `Engine.set_background_handler(handler)`.
pub(super) fn set_background_handler(e: &Engine, handler: Option<Py<PyAny>>) {
    e.set_background_handler(
        handler.map(|h| Arc::new(notifier::<&'static str>(h)) as BackgroundCallback),
    );
}
