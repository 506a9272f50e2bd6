//! Workers and the interpreter's lifetime: how a worker keeps its thread
//! state, and how engines stop when the process exits.
//!
//! Interpreter exit is `Py_FinalizeEx`: non-daemon threads are joined, then
//! the `atexit` hooks run (the interpreter still whole), then finalization
//! starts. From then on a thread other than the finalizing one that tries to
//! take the GIL never gets it (CPython < 3.14 calls `pthread_exit`, which
//! pyo3-ffi turns into a parked thread; 3.14 parks it itself), and the
//! thread states of every other thread have been freed. Engines still
//! running then are dropped or closed by finalizers on the finalizing
//! thread, with the GIL. Joining a worker there waits forever for a worker
//! that re-takes the GIL on its way out, or is blocked in an admin handler
//! or notifier waiting for it.
//!
//! So: every live engine is stopped by an `atexit` hook, before
//! finalization, with the GIL released while its workers finish; a worker
//! never re-takes the GIL once finalization started; and an engine that is
//! still running then is stopped by a helper thread nobody waits for.

use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::BoundObject;

use crate::engine::{Engine, WorkerWrapper};

/// True once the interpreter is finalizing (or gone): a worker must not
/// take the GIL, and nobody may wait for a worker.
///
/// `Py_IsInitialized` turns false right where finalization starts (with the
/// runtime's finalizing flag), before any finalizer runs, and is in the
/// stable ABI of every Python we support (`Py_IsFinalizing` only from 3.13).
pub(super) fn interpreter_exiting() -> bool {
    // SAFETY: Py_IsInitialized only reads the runtime state; CPython and
    // pyo3 call it from threads that are not attached.
    unsafe { ffi::Py_IsInitialized() == 0 }
}

/// This thread's interpreter thread state, kept detached between calls
/// into Python so that each admin handler or notifier call only re-takes
/// the GIL (a fresh thread state per call costs ~20 us).
struct KeptThreadState {
    gstate: ffi::PyGILState_STATE,
    tstate: *mut ffi::PyThreadState,
}

impl KeptThreadState {
    /// Creates this thread's state and releases the GIL; none while the
    /// interpreter is exiting (calls into Python then fail softly).
    fn new() -> Option<Self> {
        if interpreter_exiting() {
            return None;
        }
        // SAFETY: this is a new worker thread, not attached, and the
        // interpreter is initialized. Should finalization start before the
        // GIL is ours, the call never returns (the thread is parked, see the
        // module doc), and nobody joins a worker after that.
        let gstate = unsafe { ffi::PyGILState_Ensure() };
        // SAFETY: attached just above, with no pyo3 guard over it; this
        // releases the GIL and hands back the thread state to restore.
        let tstate = unsafe { ffi::PyEval_SaveThread() };
        Some(KeptThreadState { gstate, tstate })
    }
}

impl Drop for KeptThreadState {
    fn drop(&mut self) {
        // Once finalization started the state was freed with every other
        // thread's, and the GIL is the finalizing thread's: leave both.
        if interpreter_exiting() {
            return;
        }
        // SAFETY: `tstate` is this thread's, saved by PyEval_SaveThread in
        // new() and not restored since (every call into Python in between
        // went through PyGILState_Ensure/Release, which leave it detached).
        unsafe { ffi::PyEval_RestoreThread(self.tstate) };
        // SAFETY: attached again just above; this pairs with the
        // PyGILState_Ensure in new(), deletes the state and drops the GIL.
        unsafe { ffi::PyGILState_Release(self.gstate) };
    }
}

/// The wrapper every worker thread runs its body in.
pub(super) fn worker_wrapper() -> WorkerWrapper {
    Arc::new(|body| {
        let _state = KeptThreadState::new();
        body();
    })
}

/// Attaches a worker thread to call into Python; `None` (nothing called)
/// once the interpreter is finalizing.
pub(super) fn call_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    Python::try_attach(f)
}

/// `callable(*args)` from a worker thread, parked rather than killed if the
/// call re-takes the GIL as finalization starts (see [`ParkOnForcedUnwind`]).
pub(super) fn call<'py, A>(callable: &Bound<'py, PyAny>, args: A) -> PyResult<Bound<'py, PyAny>>
where
    A: IntoPyObject<'py, Target = PyTuple>,
    A::Error: Into<PyErr>,
{
    let py = callable.py();
    let args = args.into_pyobject(py).map_err(Into::into)?.into_bound();
    // pyo3-ffi declares PyObject_Call "C", so Rust assumes it never unwinds
    // and would run no destructor when `pthread_exit` unwinds out of it:
    // call it as the "C-unwind" function it is, through a pointer the
    // optimizer cannot see through to that declaration.
    type CallFn = unsafe extern "C-unwind" fn(
        *mut ffi::PyObject,
        *mut ffi::PyObject,
        *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
    // SAFETY: only the unwinding ABI differs between the two pointer types;
    // the C function behind them takes and returns exactly these.
    let call_fn: CallFn = std::hint::black_box(unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(
                *mut ffi::PyObject,
                *mut ffi::PyObject,
                *mut ffi::PyObject,
            ) -> *mut ffi::PyObject,
            CallFn,
        >(ffi::PyObject_Call)
    });
    let trap = ParkOnForcedUnwind;
    // SAFETY: the thread is attached (`py`); `callable` and `args` are live
    // objects, `args` a tuple; no keyword arguments (NULL is allowed).
    let r = unsafe { call_fn(callable.as_ptr(), args.as_ptr(), std::ptr::null_mut()) };
    std::mem::forget(trap);
    // SAFETY: PyObject_Call returns a new reference, or NULL with the error
    // indicator set.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }
}

/// CPython < 3.14 ends a thread that waits for the GIL when finalization
/// starts with `pthread_exit`: a forced unwind that Rust cannot catch (the
/// thread's own catch_unwind aborts the process). A worker whose Python
/// call re-takes the GIL then (a handler's `time.sleep` returning, say) is
/// parked instead, as pyo3-ffi parks one in `PyGILState_Ensure`; nobody
/// waits for a worker once finalization started.
struct ParkOnForcedUnwind;

impl Drop for ParkOnForcedUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // a Rust panic: let it unwind as it would anyway
        }
        loop {
            std::thread::park();
        }
    }
}

/// Every engine the bindings built, for the exit hook.
static LIVE: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Engine>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records `engine` for [`stop_live_engines`].
pub(super) fn register(engine: &Arc<Engine>) {
    let mut l = live();
    l.retain(|w| w.strong_count() > 0);
    l.push(Arc::downgrade(engine));
}

/// How long the exit hook waits for workers to finish what they are doing.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The `atexit` hook: stops every live engine while the interpreter is
/// still whole. Workers in an admin handler or notifier finish it (the GIL
/// is released meanwhile) and leave with their thread state. One stuck in
/// Python for longer than [`EXIT_GRACE`] is left behind, so that a handler
/// that never returns cannot keep the process from exiting.
#[pyfunction]
fn stop_live_engines(py: Python<'_>) {
    let engines: Vec<Arc<Engine>> = live().iter().filter_map(Weak::upgrade).collect();
    if engines.iter().all(|e| !e.running()) {
        return;
    }
    let (done, stopped) = mpsc::channel();
    let helper = std::thread::Builder::new()
        .name("nvmefast-exit".to_string())
        .spawn(move || {
            engines.iter().for_each(|e| e.stop());
            let _ = done.send(());
        });
    if helper.is_err() {
        return; // no thread to wait with: finalization will not wait either
    }
    if py.detach(move || stopped.recv_timeout(EXIT_GRACE)).is_err() {
        eprintln!(
            "nvmefast: a worker is still in a Python handler {} s after exit began; \
             exiting without waiting for it",
            EXIT_GRACE.as_secs()
        );
    }
}

/// Registers [`stop_live_engines`] with `atexit` (not a module attribute).
pub(super) fn install_exit_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(stop_live_engines, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// Stops `engine` on a helper thread and returns at once: for stops asked
/// for once the interpreter is finalizing, when waiting could be forever.
fn stop_without_waiting(engine: &Arc<Engine>) {
    let e = engine.clone();
    let spawned = std::thread::Builder::new()
        .name("nvmefast-exit".to_string())
        .spawn(move || e.stop());
    if spawned.is_err() {
        // No helper: never drop the engine, whose Drop joins the workers.
        std::mem::forget(engine.clone());
    }
}

/// Stops the workers, releasing the GIL while they finish. Once the
/// interpreter is finalizing they are left to a helper instead, and `false`
/// says so: the caller must then not take locks a worker stuck in Python
/// may hold (reset takes them all).
pub(super) fn stop(py: Python<'_>, engine: &Arc<Engine>) -> bool {
    if interpreter_exiting() {
        if engine.running() {
            stop_without_waiting(engine);
        }
        return false;
    }
    py.detach(|| engine.stop());
    true
}
