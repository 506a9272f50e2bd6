//! Benchmark drivers and the floors printed beside their figures: Rust
//! host loops that run with the GIL released.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::callbacks::notifier;
use super::engine::PyEngine;
use super::errors::{choice, config_err, state_err, u16_arg, vector_err};
use crate::driver::{bench, bench_zoned, file_floor, floor, irqcost, ring, HostMemory, HostQueue};
use crate::irq::{dup_eventfd, dup_fd, Notifier};

/// The ways `bench_io` rings doorbells (matched by name in the host loop).
const DOORBELLS: &[(&str, ())] = &[
    ("mmio", ()),
    ("shadow", ()),
    ("page", ()),
    ("ioeventfd", ()),
];

const WORKLOADS: &[(&str, bench::Workload)] = &[
    ("randread", bench::Workload::RandRead),
    ("randwrite", bench::Workload::RandWrite),
    ("fill", bench::Workload::Fill),
];

/// `bench --zoned`'s workloads (`bench_zoned.rs`), run by the same entry.
const ZONED_WORKLOADS: &[(&str, bench_zoned::Workload)] = &[
    ("seqwrite", bench_zoned::Workload::SeqWrite),
    ("zonewrite", bench_zoned::Workload::ZoneWrite),
    ("zoneappend", bench_zoned::Workload::ZoneAppend),
    ("zonemgmt", bench_zoned::Workload::ZoneMgmt),
    ("zonefill", bench_zoned::Workload::ZoneFill),
];

const MODES: &[(&str, bench::Mode)] = &[("irq", bench::Mode::Irq), ("poll", bench::Mode::Poll)];

const FILE_RW: &[(&str, file_floor::Rw)] = &[
    ("randread", file_floor::Rw::Read),
    ("randwrite", file_floor::Rw::Write),
];

/// What `measure_irq_delivery` delivers through.
#[derive(Clone, Copy)]
enum Kind {
    Eventfd,
    KvmMsi,
    Callback,
}

const NOTIFIER_KINDS: &[(&str, Kind)] = &[
    ("eventfd", Kind::Eventfd),
    ("kvm_msi", Kind::KvmMsi),
    ("callback", Kind::Callback),
];

/// Drives one queue pair with random reads from a Rust host thread.
#[pyfunction]
#[pyo3(signature = (engine, *, mem_fd, mem_iova, mem_size, sqid, sq_iova, cq_iova, qsize, buf_iova, nsid, ns_lbas, lba_size, block_size, qd, seconds, mode, eventfd, workload="randread", ring_each=false, doorbell="mmio", shadow=None, page_fd=None, doorbell_eventfds=None, doorbell_stride=4, prinfo=0))]
#[allow(clippy::too_many_arguments)]
fn bench_io<'py>(
    py: Python<'py>,
    engine: &Bound<'py, PyEngine>,
    mem_fd: i32,
    mem_iova: u64,
    mem_size: usize,
    sqid: u64,
    sq_iova: u64,
    cq_iova: u64,
    qsize: u32,
    buf_iova: u64,
    nsid: u32,
    ns_lbas: u64,
    lba_size: u32,
    block_size: u32,
    qd: u32,
    seconds: f64,
    mode: &str,
    eventfd: Option<i32>,
    workload: &str,
    ring_each: bool,
    doorbell: &str,
    shadow: Option<(u64, u64)>,
    page_fd: Option<(i32, usize, usize)>,
    doorbell_eventfds: Option<(i32, i32)>,
    doorbell_stride: usize,
    prinfo: u32,
) -> PyResult<Bound<'py, PyDict>> {
    choice(py, "doorbell", doorbell, DOORBELLS)?;
    // The host loop builds atomics on these addresses and divides by the
    // LBA size: refuse what would make that undefined or panic.
    if sq_iova % 64 != 0 || cq_iova % 16 != 0 || buf_iova % 4096 != 0 {
        return Err(config_err(
            py,
            "sq_iova, cq_iova and buf_iova must be 64-, 16- and 4096-byte aligned".to_string(),
        ));
    }
    if !doorbell_stride.is_power_of_two() || doorbell_stride < 4 {
        return Err(config_err(
            py,
            format!("doorbell_stride {doorbell_stride} must be a power of two of at least 4"),
        ));
    }
    if !matches!(lba_size, 512 | 4096) || block_size == 0 || block_size % lba_size != 0 {
        return Err(config_err(
            py,
            format!("lba_size {lba_size} must be 512 or 4096 and divide block_size {block_size}"),
        ));
    }
    let need = |ok: bool, what: &str| -> PyResult<()> {
        if ok {
            Ok(())
        } else {
            Err(config_err(
                py,
                format!("doorbell {doorbell:?} needs {what}"),
            ))
        }
    };
    need(
        doorbell != "shadow" || shadow.is_some(),
        "shadow=(db_iova, ei_iova)",
    )?;
    need(
        !matches!(doorbell, "page" | "ioeventfd") || page_fd.is_some(),
        "page_fd=(fd, offset, length)",
    )?;
    need(
        doorbell != "ioeventfd" || doorbell_eventfds.is_some(),
        "doorbell_eventfds=(sq_fd, cq_fd)",
    )?;
    let zoned = ZONED_WORKLOADS
        .iter()
        .find(|(n, _)| *n == workload)
        .map(|&(_, w)| w);
    let workload = match zoned {
        Some(_) => bench::Workload::Fill,
        None => choice(py, "workload", workload, WORKLOADS)?,
    };
    let mode = choice(py, "mode", mode, MODES)?;
    if !(seconds > 0.0 && seconds < 3600.0) {
        return Err(config_err(
            py,
            format!("seconds {seconds} must be in (0, 3600)"),
        ));
    }
    let sqid = u16_arg(py, "sqid", sqid)?;
    let eng = &engine.get().inner;
    let zones = eng
        .zone_geometry(nsid)
        .map(|g| (g.zone_lbas(), g.zcap, u64::from(g.zones)));
    let params = bench::Params {
        workload,
        nsid,
        ns_lbas,
        lba_size,
        block_size,
        qd,
        seconds,
        mode,
        eventfd,
        buf_iova,
        ring_each,
        prinfo,
    };
    let r = py.detach(|| -> Result<bench::Outcome, String> {
        let mem = HostMemory::from_fd(mem_fd, mem_size, mem_iova).map_err(|e| e.to_string())?;
        let page = match page_fd {
            Some((fd, offset, len)) => {
                let m = HostMemory::from_fd_at(fd, offset, len, 0).map_err(|e| e.to_string())?;
                Some(m)
            }
            None => None,
        };
        let mut q = HostQueue::new(&mem, sqid, qsize, sq_iova, cq_iova);
        let span = 2 * (usize::from(sqid) + 1) * doorbell_stride;
        q.ringer = ring::Ringer::new(match (doorbell, shadow, &page, doorbell_eventfds) {
            ("shadow", Some((db, ei)), _, _) => ring::Ring::Shadow {
                db: mem.ptr(db, span),
                ei: mem.ptr(ei, span),
                stride: doorbell_stride,
            },
            ("page", _, Some(p), _) => ring::Ring::Page {
                page: p.ptr(0, span),
                stride: doorbell_stride,
            },
            ("ioeventfd", _, Some(p), Some((sq_fd, cq_fd))) => ring::Ring::Ioeventfd {
                page: p.ptr(0, span),
                stride: doorbell_stride,
                sq_fd,
                cq_fd,
            },
            _ => ring::Ring::Mmio,
        });
        match zoned {
            Some(w) => bench_zoned::run(&**eng, &mut q, &params, w, zones),
            None => bench::run(&**eng, &mem, &mut q, &params),
        }
    });
    let o = r.map_err(|m| state_err(py, format!("benchmark failed: {m}")))?;
    let d = figures(py, &o)?;
    d.set_item("interrupts", o.interrupts)?;
    d.set_item("doorbells", o.doorbells)?;
    d.set_item("mmio_doorbells", o.mmio_doorbells)?;
    d.set_item("eventfd_doorbells", o.eventfd_doorbells)?;
    if zoned.is_some() {
        d.set_item("zone_resets", o.zone_resets)?;
        d.set_item("zone_reset_ns", o.zone_reset_ns)?;
        d.set_item("zone_finishes", o.zone_finishes)?;
        d.set_item("zone_finish_ns", o.zone_finish_ns)?;
    }
    Ok(d)
}

/// Mean round trip in ns of two threads bouncing one eventfd each way.
#[pyfunction]
#[pyo3(signature = (iterations, max_seconds=2.0))]
fn floor_eventfd_pingpong(py: Python<'_>, iterations: u32, max_seconds: f64) -> f64 {
    py.detach(|| floor::eventfd_pingpong(iterations, max_seconds))
}

/// Mean round trip in ns of two threads bouncing a shared-memory flag.
#[pyfunction]
#[pyo3(signature = (iterations, max_seconds=2.0))]
fn floor_shm_pingpong(py: Python<'_>, iterations: u32, max_seconds: f64) -> f64 {
    py.detach(|| floor::shm_pingpong(iterations, max_seconds))
}

/// Random 4 KiB memcpys per second out of a buffer of `buffer_bytes`.
#[pyfunction]
fn floor_memcpy_4k(py: Python<'_>, buffer_bytes: usize, seconds: f64) -> f64 {
    py.detach(|| floor::memcpy_4k(buffer_bytes, seconds))
}

/// ios, errors, seconds, iops and the latencies of a host loop's outcome.
pub(super) fn figures<'py>(py: Python<'py>, o: &bench::Outcome) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ios", o.ios)?;
    d.set_item("errors", o.errors)?;
    d.set_item("seconds", o.seconds)?;
    d.set_item("iops", o.ios as f64 / o.seconds.max(1e-9))?;
    d.set_item("mean_ns", o.mean_ns)?;
    d.set_item("p50_ns", o.p50_ns)?;
    d.set_item("p99_ns", o.p99_ns)?;
    Ok(d)
}

/// The file backend's floor without fio: `rw` ("randread"/"randwrite") of
/// `block_size` bytes at `qd` on `path` through a raw io_uring loop.
#[pyfunction]
#[pyo3(signature = (path, *, rw, qd, block_size, direct, seconds))]
fn floor_file_uring<'py>(
    py: Python<'py>,
    path: String,
    rw: &str,
    qd: u32,
    block_size: u32,
    direct: bool,
    seconds: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let params = file_floor::Params {
        path,
        rw: choice(py, "rw", rw, FILE_RW)?,
        qd,
        block_size,
        direct,
        seconds,
    };
    let o = py
        .detach(|| file_floor::uring_loop(&params))
        .map_err(|e| match e {
            file_floor::FloorError::Params(_)
            | file_floor::FloorError::Open { .. }
            | file_floor::FloorError::TooSmall { .. } => config_err(py, e.to_string()),
            _ => state_err(py, format!("raw io_uring floor failed: {e}")),
        })?;
    figures(py, &o)
}

/// Mean ns per interrupt delivery through one kind of notifier.
#[pyfunction]
#[pyo3(signature = (kind, target, iterations, max_seconds=1.0, address=0, data=0))]
fn measure_irq_delivery(
    py: Python<'_>,
    kind: &str,
    target: Bound<'_, PyAny>,
    iterations: u32,
    max_seconds: f64,
    address: u64,
    data: u32,
) -> PyResult<f64> {
    let notifier = match choice(py, "kind", kind, NOTIFIER_KINDS)? {
        Kind::Callback => Notifier::Callback(Arc::new(notifier::<u32>(target.unbind()))),
        kind => {
            let fd: i32 = target.extract()?;
            // The eventfd as a vector gets it (checked, non-blocking).
            let owned = match kind {
                Kind::Eventfd => dup_eventfd(fd),
                _ => dup_fd(fd),
            }
            .map_err(|e| vector_err(py, e.to_string()))?;
            match kind {
                Kind::Eventfd => Notifier::Eventfd(owned),
                _ => Notifier::KvmMsi(owned),
            }
        }
    };
    // Detached, as the worker is: a callback re-attaches per delivery.
    Ok(py.detach(|| irqcost::notify_cost(notifier, address, data, iterations, max_seconds)))
}

/// Adds the benchmark and floor functions to the module.
/// GB/s of the protection information guard (`"crc16"`: CRC-16 T10-DIF,
/// `"crc64"`: CRC-64/NVME) over 4 KiB blocks, for `seconds`: the floor of
/// what PRCHK guard checks and PRACT insertion cost per byte.
#[pyfunction]
#[pyo3(signature = (guard, seconds=0.5))]
fn floor_guard(py: Python<'_>, guard: &str, seconds: f64) -> PyResult<f64> {
    let g = crate::pi::Guard::parse(guard).ok_or_else(|| {
        config_err(
            py,
            format!("guard {guard:?} must be \"crc16\" or \"crc64\""),
        )
    })?;
    Ok(py.detach(|| {
        let block: Vec<u8> = (0..4096u32).map(|i| (i * 31) as u8).collect();
        let start = std::time::Instant::now();
        let mut bytes = 0u64;
        let mut sink = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..256 {
                sink ^= crate::pi::crc::of(g, std::hint::black_box(&block));
            }
            bytes += 256 * 4096;
        }
        std::hint::black_box(sink);
        bytes as f64 / start.elapsed().as_secs_f64() / 1e9
    }))
}

pub(super) fn add_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(floor_guard, m)?)?;
    m.add_function(wrap_pyfunction!(bench_io, m)?)?;
    m.add_function(wrap_pyfunction!(floor_eventfd_pingpong, m)?)?;
    m.add_function(wrap_pyfunction!(floor_shm_pingpong, m)?)?;
    m.add_function(wrap_pyfunction!(floor_memcpy_4k, m)?)?;
    m.add_function(wrap_pyfunction!(floor_file_uring, m)?)?;
    m.add_function(wrap_pyfunction!(measure_irq_delivery, m)?)
}
