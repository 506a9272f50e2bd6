//! `FaultTable`: an engine's fault rules and power state (see `_core.pyi`
//! and `nvmefast/faults.py`, which builds and checks the rules first).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::config_err;
use crate::engine::faults::{Action, Firing, Match, QueueMatch};
use crate::engine::Engine;
use crate::pi::tuple::Field;
use crate::spec::Status;
use crate::zns::ZoneAction;

/// An engine's fault rules (`Engine.faults()`).
#[pyclass(frozen, module = "nvmefast._core", name = "FaultTable")]
pub(super) struct PyFaultTable {
    pub(super) inner: Arc<Engine>,
}

fn queue_match(py: Python<'_>, queue: &Bound<'_, PyAny>) -> PyResult<QueueMatch> {
    if let Ok(s) = queue.extract::<String>() {
        return match s.as_str() {
            "io" => Ok(QueueMatch::Io),
            "admin" => Ok(QueueMatch::Admin),
            _ => Err(config_err(
                py,
                format!("queue {s:?} must be \"io\", \"admin\" or a queue ID"),
            )),
        };
    }
    let qid = queue
        .extract::<u64>()
        .ok()
        .and_then(|q| u16::try_from(q).ok());
    qid.map(QueueMatch::Qid).ok_or_else(|| {
        config_err(
            py,
            "queue must be \"io\", \"admin\" or a queue ID in 0..65535".into(),
        )
    })
}

#[pymethods]
impl PyFaultTable {
    /// Adds a rule (checked by nvmefast.faults.FaultRule first); returns its id.
    #[pyo3(signature = (*, queue, opcode, nsid, lba, action, status, delay_ns, abortable, byte, xor, count, skip, probability, seed, pi_field="", zone=None))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        queue: &Bound<'_, PyAny>,
        opcode: Option<u8>,
        nsid: Option<u32>,
        lba: Option<(u64, u64)>,
        action: &str,
        status: u16,
        delay_ns: u64,
        abortable: bool,
        byte: u32,
        xor: u8,
        count: u64,
        skip: u64,
        probability: f64,
        seed: u64,
        pi_field: &str,
        zone: Option<u64>,
    ) -> PyResult<u64> {
        let matcher = Match {
            queue: queue_match(py, queue)?,
            opcode,
            nsid,
            lba,
            zone,
        };
        let action = match action {
            "status" => Action::Status(Status::from_field(status)),
            "transfer-error" => Action::TransferError,
            "delay" => Action::Delay {
                ns: delay_ns,
                abortable,
            },
            "never" => Action::Never { abortable },
            "corrupt" => Action::Corrupt { offset: byte, xor },
            "corrupt-pi" => Action::CorruptPi {
                field: match pi_field {
                    "guard" => Field::Guard,
                    "app" => Field::App,
                    "ref" => Field::Ref,
                    other => {
                        return Err(config_err(
                            py,
                            format!(
                                "corrupt-pi field {other:?} must be \"guard\", \"app\" or \"ref\""
                            ),
                        ))
                    }
                },
                xor,
            },
            "drop-irq" => Action::DropIrq,
            "delay-irq" => Action::DelayIrq { ns: delay_ns },
            "cfs" => Action::Cfs,
            "power-loss" => Action::PowerLoss,
            other => match other.strip_prefix("zone-").and_then(ZoneAction::parse) {
                Some(a) => Action::Zone(a),
                None => return Err(config_err(py, format!("unknown fault action {other:?}"))),
            },
        };
        let firing = Firing {
            skip,
            count,
            probability,
            seed,
        };
        self.inner
            .add_fault(matcher, action, firing)
            .map_err(|e| config_err(py, e.to_string()))
    }

    /// Removes rule `id`; False when there is none.
    fn remove(&self, id: u64) -> bool {
        self.inner.remove_fault(id)
    }

    fn clear(&self) {
        self.inner.clear_faults();
    }

    /// The rules in order: dicts of id, action, matched, hits.
    fn rules<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .faults()
            .iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("id", r.id)?;
                d.set_item("action", r.action.name())?;
                d.set_item("matched", r.matched)?;
                d.set_item("hits", r.hits)?;
                Ok(d)
            })
            .collect()
    }

    fn held(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.faults_held())
    }

    /// Returns the NSIDs that cannot be tracked.
    fn track_unflushed(&self, py: Python<'_>, on: bool) -> Vec<u32> {
        py.detach(|| self.inner.track_unflushed(on))
    }

    fn unflushed_blocks(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.unflushed_blocks())
    }

    /// Waits for commands in flight to a file, so it releases the GIL.
    fn power_loss(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.power_loss())
    }

    #[getter]
    fn powered_off(&self) -> bool {
        self.inner.powered_off()
    }

    fn power_on(&self, py: Python<'_>) {
        py.detach(|| self.inner.power_on());
    }
}
