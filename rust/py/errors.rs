//! The exception hierarchy and the one mapping from core errors to it,
//! plus the argument checks that raise from it.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::engine::EngineError;

/// The exception classes, created at import so that `ConfigError` can also
/// be a `ValueError` (pyo3's create_exception! takes one base).
struct Exceptions {
    base: Py<PyType>,
    config: Py<PyType>,
    dma: Py<PyType>,
    register: Py<PyType>,
    vector: Py<PyType>,
    queue: Py<PyType>,
    state: Py<PyType>,
    namespace: Py<PyType>,
    capacity: Py<PyType>,
}

static EXC: PyOnceLock<Exceptions> = PyOnceLock::new();

fn make_type(
    py: Python<'_>,
    name: &str,
    doc: &str,
    bases: Vec<Bound<'_, PyType>>,
) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "nvmefast")?;
    ns.set_item("__doc__", doc)?;
    let ty = py
        .import("builtins")?
        .getattr("type")?
        .call1((name, PyTuple::new(py, bases)?, ns))?;
    Ok(ty.cast_into::<PyType>()?.unbind())
}

fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
    EXC.get_or_try_init(py, || {
        let base = make_type(
            py,
            "NvmeFastError",
            "Root of every error nvmefast raises.",
            vec![py.get_type::<PyException>()],
        )?;
        let b = || base.bind(py).clone();
        let namespace = make_type(
            py,
            "NamespaceError",
            "A namespace table change that cannot be made (NSID taken or out of range, not allocated, none free).",
            vec![b()],
        )?;
        Ok(Exceptions {
            config: make_type(
                py,
                "ConfigError",
                "A configuration value is out of range or inconsistent.",
                vec![b(), py.get_type::<PyValueError>()],
            )?,
            dma: make_type(
                py,
                "DmaMapError",
                "A DMA map/unmap request is invalid (overlap, bad fd, size, alignment).",
                vec![b()],
            )?,
            register: make_type(
                py,
                "RegisterAccessError",
                "A BAR0 access the embedder should never make (bad size, offset past BAR0).",
                vec![b()],
            )?,
            vector: make_type(
                py,
                "VectorError",
                "An interrupt vector number or notifier fd is invalid.",
                vec![b()],
            )?,
            queue: make_type(
                py,
                "QueueError",
                "A queue operation on the core is invalid (qid in use, unknown CQ, ...).",
                vec![b()],
            )?,
            state: make_type(
                py,
                "StateError",
                "The object is in the wrong state for the call (closed, not running, ...).",
                vec![b()],
            )?,
            namespace: namespace.clone_ref(py),
            capacity: make_type(
                py,
                "CapacityError",
                "Not enough unallocated NVM capacity for the namespace (Namespace Insufficient Capacity).",
                vec![namespace.bind(py).clone()],
            )?,
            base,
        })
    })
}

fn raise(py: Python<'_>, pick: impl Fn(&Exceptions) -> &Py<PyType>, msg: String) -> PyErr {
    match exceptions(py) {
        Ok(e) => PyErr::from_type(pick(e).bind(py).clone(), msg),
        Err(e) => e,
    }
}

/// The one mapping from core errors to Python exceptions.
pub(super) fn to_py(py: Python<'_>, e: EngineError) -> PyErr {
    let msg = e.to_string();
    match e {
        EngineError::Config(_) | EngineError::Backend(_) => raise(py, |x| &x.config, msg),
        EngineError::Mem(_) => raise(py, |x| &x.dma, msg),
        EngineError::Queue(_) | EngineError::NotDeferred { .. } => raise(py, |x| &x.queue, msg),
        EngineError::Irq(_) | EngineError::Waker(_) | EngineError::BadDoorbell { .. } => {
            raise(py, |x| &x.vector, msg)
        }
        EngineError::Spawn(_) | EngineError::Busy(_) => raise(py, |x| &x.state, msg),
        EngineError::Namespace(_) => raise(py, |x| &x.namespace, msg),
        EngineError::Capacity { .. } => raise(py, |x| &x.capacity, msg),
    }
}

pub(super) fn config_err(py: Python<'_>, msg: String) -> PyErr {
    raise(py, |x| &x.config, msg)
}

pub(super) fn state_err(py: Python<'_>, msg: String) -> PyErr {
    raise(py, |x| &x.state, msg)
}

pub(super) fn vector_err(py: Python<'_>, msg: String) -> PyErr {
    raise(py, |x| &x.vector, msg)
}

pub(super) fn u16_arg(py: Python<'_>, what: &str, v: u64) -> PyResult<u16> {
    u16::try_from(v).map_err(|_| config_err(py, format!("{what} {v} does not fit 16 bits")))
}

/// Adds the exception classes to the module.
pub(super) fn add_exceptions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let e = exceptions(py)?;
    for (name, ty) in [
        ("NvmeFastError", &e.base),
        ("ConfigError", &e.config),
        ("DmaMapError", &e.dma),
        ("RegisterAccessError", &e.register),
        ("VectorError", &e.vector),
        ("QueueError", &e.queue),
        ("StateError", &e.state),
        ("NamespaceError", &e.namespace),
        ("CapacityError", &e.capacity),
    ] {
        m.add(name, ty.bind(py))?;
    }
    Ok(())
}

/// The value `choices` pairs with `value`, or a ConfigError naming them all:
/// `{what} "x" must be "a", "b" or "c"`.
pub(super) fn choice<T: Copy>(
    py: Python<'_>,
    what: &str,
    value: &str,
    choices: &[(&str, T)],
) -> PyResult<T> {
    if let Some(&(_, v)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(v);
    }
    let quoted: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let listed = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(config_err(py, format!("{what} {value:?} must be {listed}")))
}
