//! The `sqe` target's device and host: one running engine per process with
//! the namespaces and guest memory layout of [`crate::model`], one I/O queue
//! pair driven through the driver mock, a fake vfio-user client behind
//! the remote region, and region E, which a loss input maps for itself
//! ([`Rig::map_e`]) and truncates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvmefast::aio::Choice;
use nvmefast::backend::{CacheMode, FileSpec, StorageRef};
use nvmefast::driver::{HostMemory, HostQueue};
use nvmefast::mem::{DmaTransport, Kind};
use nvmefast::shm::SharedMemory;
use nvmefast::spec::opcode::io as op;
use nvmefast::spec::{Cqe, Sqe, Status};
use nvmefast::zns::ZoneSpec;
use nvmefast::{Engine, EngineConfig, NamespaceSpec, Polling};

use crate::guard;
use crate::model::{self, Backed, GuestView, Region, PAGE};
use crate::sigbus;
use crate::storage::Blocks;

/// I/O queue entries (SQ and CQ).
pub const ENTRIES: u32 = 16;
/// Region D layout: SQ, CQ, the read-back PRP list, the read-back buffer.
const SQ_IOVA: u64 = model::D_IOVA;
const CQ_IOVA: u64 = model::D_IOVA + 0x1000;
const LIST_IOVA: u64 = model::D_IOVA + 0x2000;
const BUF_IOVA: u64 = model::D_IOVA + 0x1_0000;
/// A completion later than this is a hang (a finding, not a slow input).
const CQE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client behind region C: its memory, and a check that the device
/// never asks for bytes outside the region it mapped.
pub struct Remote {
    pub bytes: Mutex<Vec<u8>>,
}

impl Remote {
    fn span(iova: u64, len: usize) -> std::ops::Range<usize> {
        let off = iova
            .checked_sub(model::C_IOVA)
            .expect("transport asked for memory below the remote region");
        let end = (off as usize)
            .checked_add(len)
            .filter(|&e| e <= model::C_LEN)
            .expect("transport asked for memory past the remote region");
        off as usize..end
    }
}

impl DmaTransport for Remote {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String> {
        let r = Self::span(iova, buf.len());
        buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String> {
        let r = Self::span(iova, data.len());
        self.bytes.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }
}

/// Engine, guest memory and queue, built once per process.
pub struct Rig {
    pub engine: Engine,
    pub a: HostMemory,
    pub b: HostMemory,
    pub d: HostMemory,
    pub c: Arc<Remote>,
    pub q: HostQueue,
    /// Commands submitted so far (the SQ tail and CQ head follow it).
    pub submitted: u64,
    /// Namespace images the harness restores after an input changed them
    /// (every namespace that stores data).
    pub patterns: Vec<(u32, u64, Vec<u8>)>,
    /// Guard pages placed around the engine's mappings (reported once).
    pub guards: Vec<guard::Guarded>,
    /// Region E, while a loss input has it mapped.
    pub e: Option<RegionE>,
}

/// A memfd named `name` of `len` bytes, mapped into `engine` at `iova`
/// between guard pages, and viewed by the host. The memfd is not sealed:
/// the engine's mapping is guarded against it shrinking.
fn region(
    engine: &Engine,
    name: &std::ffi::CStr,
    iova: u64,
    len: usize,
    writable: bool,
    guards: &mut Vec<guard::Guarded>,
) -> HostMemory {
    let shm = SharedMemory::new(name, len).expect("memfd");
    let host = HostMemory::from_fd(shm.fd(), len, iova).expect("host view");
    let tag = name.to_str().expect("ASCII name");
    guards.push(guard::map_guarded(
        tag,
        host.ptr(iova, 0) as usize,
        len,
        || {
            engine
                .map_dma(iova, len as u64, host.fd(), 0, writable)
                .expect("map_dma")
        },
        || engine.unmap_dma(iova, len as u64).expect("unmap_dma"),
    ));
    host
}

/// Where a file namespace of rig number `rig` lives while the engine opens it.
fn file_path(rig: u64, nsid: u32) -> String {
    format!(
        "/dev/shm/nvmefast-fuzz-{}-{rig}-{nsid}.img",
        std::process::id()
    )
}

/// Rigs built in this process (several run at once under `cargo test`).
static RIGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Rig {
    /// Builds and starts the engine, maps A-D and creates I/O queue 1.
    pub fn new() -> Rig {
        let n = RIGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Below the guard, which the first guarded mapping installs: the
        // guard chains to the probe, and the probe to whatever was there
        // (libFuzzer's crash handler).
        sigbus::install();
        let engine = Engine::new(EngineConfig {
            namespaces: model::NAMESPACES
                .iter()
                .map(|&(nsid, backend, size_bytes, lba_size)| NamespaceSpec {
                    size_bytes,
                    lba_size,
                    backend: backend.into(),
                    file: (backend == "file").then(|| FileSpec {
                        path: file_path(n, nsid),
                        readonly: false,
                        cache: CacheMode::Buffered,
                        io: Choice::IoUring,
                    }),
                    storage: (backend == "custom")
                        .then(|| StorageRef(Arc::new(Blocks::new(size_bytes as usize, lba_size)))),
                    metadata: model::metadata(nsid),
                    zones: None,
                })
                .chain(std::iter::once({
                    let (_, size, lbs, zone, cap) = model::ZONED;
                    NamespaceSpec {
                        size_bytes: size,
                        lba_size: lbs,
                        backend: "ram".into(),
                        zones: Some(ZoneSpec {
                            size_bytes: zone * u64::from(lbs),
                            capacity_bytes: cap * u64::from(lbs),
                            max_open: 2,
                            max_active: 3,
                            append_size_limit: 8192,
                            descriptor_extension_bytes: 64,
                            cross_read: false,
                        }),
                        ..NamespaceSpec::default()
                    }
                }))
                .collect(),
            msix_vectors: 2,
            max_qid: 1,
            max_queue_entries: 64,
            mdts_bytes: model::MDTS_BYTES,
            poll_us: 200,
            msix_embedder_managed: true,
            polling: Polling::Poll,
            iothreads: 1,
            affinity: Vec::new(),
            doorbell_stride: 4,
            nn: 0,
            capacity_bytes: 0,
        })
        .expect("engine");
        for &(nsid, backend, ..) in model::NAMESPACES.iter() {
            if backend == "file" {
                // Open now: the name is not needed again.
                let _ = std::fs::remove_file(file_path(n, nsid));
            }
        }
        let mut guards = Vec::new();
        let a = region(
            &engine,
            c"nvmefast-fuzz-a",
            model::A_IOVA,
            model::A_LEN,
            true,
            &mut guards,
        );
        let b = region(
            &engine,
            c"nvmefast-fuzz-b",
            model::B_IOVA,
            model::B_LEN,
            false,
            &mut guards,
        );
        let d = region(
            &engine,
            c"nvmefast-fuzz-d",
            model::D_IOVA,
            model::D_LEN,
            true,
            &mut guards,
        );
        for (slot, g) in guards.iter().enumerate() {
            sigbus::set_guest(slot, g.start, g.end);
        }
        let c = Arc::new(Remote {
            bytes: Mutex::new(vec![0; model::C_LEN]),
        });
        engine
            .map_dma_remote(model::C_IOVA, model::C_LEN as u64, true)
            .expect("remote region");
        engine.set_dma_transport(Some(c.clone()));
        engine
            .create_cq(1, CQ_IOVA, ENTRIES, 1, false)
            .expect("create CQ");
        engine.create_sq(1, SQ_IOVA, ENTRIES, 1).expect("create SQ");
        engine.start().expect("start");
        let q = HostQueue::new(&d, 1, ENTRIES, SQ_IOVA, CQ_IOVA);
        let patterns = model::NAMESPACES
            .iter()
            .filter(|n| n.1 != "null")
            .map(|&(nsid, _, size, lbs)| {
                let bytes = (0..size)
                    .map(|i| ((i * 131 + u64::from(nsid) * 17) % 251 + 1) as u8)
                    .collect();
                (nsid, u64::from(lbs), bytes)
            })
            .collect();
        let mut rig = Rig {
            engine,
            a,
            b,
            d,
            c,
            q,
            submitted: 0,
            patterns,
            guards,
            e: None,
        };
        rig.restore_namespaces();
        rig
    }

    /// Submits `sqe` and waits for its completion (panics on a hang).
    pub fn submit(&mut self, sqe: &Sqe) -> Cqe {
        let slot = (self.submitted % u64::from(ENTRIES)) as usize;
        // The command may DMA into the rings (a Read aimed at region D):
        // keep the CQ as it was so later completions are read correctly.
        let mut ring = vec![0u8; ENTRIES as usize * Cqe::SIZE];
        self.d.read(CQ_IOVA, &mut ring);
        self.q.push(sqe);
        self.q.ring_sq(&self.engine);
        let cqe = self
            .q
            .wait(CQE_TIMEOUT)
            .unwrap_or_else(|| panic!("no completion for {sqe:?} within {CQE_TIMEOUT:?}"));
        self.submitted += 1;
        let mut now = vec![0u8; ring.len()];
        self.d.read(CQ_IOVA, &mut now);
        let posted = slot * Cqe::SIZE..(slot + 1) * Cqe::SIZE;
        ring[posted.clone()].copy_from_slice(&now[posted]);
        self.d.write(CQ_IOVA, &ring);
        self.q.ring_cq(&self.engine);
        cqe
    }

    /// Expected SQ head in the completion of the command just submitted.
    pub fn sqhd(&self) -> u16 {
        (self.submitted % u64::from(ENTRIES)) as u16
    }

    /// Points PRP1/PRP2 of `s` at the read-back buffer for `len` bytes.
    fn buffer_prps(&self, s: &mut Sqe, len: u64) {
        let pages = len.div_ceil(PAGE);
        let list: Vec<u8> = (1..pages)
            .flat_map(|i| (BUF_IOVA + i * PAGE).to_le_bytes())
            .collect();
        self.d.write(LIST_IOVA, &list);
        let prp2 = match pages {
            0 | 1 => 0,
            2 => BUF_IOVA + PAGE,
            _ => LIST_IOVA,
        };
        s.set_prps(BUF_IOVA, prp2);
    }

    /// The whole of namespace `nsid` (`len` bytes of `lbs`-byte LBAs), read
    /// through the device.
    pub fn read_namespace(&mut self, nsid: u32, lbs: u64, len: usize) -> Vec<u8> {
        let mut s = Sqe::new(op::READ, 0xfff0, nsid);
        s.set_lba_range(0, (len as u64 / lbs) as u32);
        self.buffer_prps(&mut s, len as u64);
        let c = self.submit(&s);
        assert_eq!(c.status(), Status::SUCCESS, "read-back of namespace {nsid}");
        let mut out = vec![0u8; len];
        self.d.read(BUF_IOVA, &mut out);
        out
    }

    /// The status of a one-block Read of `lba` of namespace `nsid`.
    pub fn read_status(&mut self, nsid: u32, lba: u64) -> Status {
        let mut s = Sqe::new(op::READ, 0xfff3, nsid);
        s.set_lba_range(lba, 1);
        self.buffer_prps(&mut s, 4096);
        self.submit(&s).status()
    }

    /// Resets every zone of the zoned namespace (Select All), so each
    /// input starts from Empty zones.
    pub fn reset_zones(&mut self) {
        let mut s = Sqe::new(op::ZONE_MGMT_SEND, 0xfff2, model::ZONED.0);
        s.dw[13] = 0x04 | 1 << 8;
        let c = self.submit(&s);
        assert_eq!(c.status(), Status::SUCCESS, "reset of every zone");
    }

    /// Writes every namespace that stores data back to its pattern.
    pub fn restore_namespaces(&mut self) {
        for i in 0..self.patterns.len() {
            let (nsid, lbs, ref bytes) = self.patterns[i];
            self.d.write(BUF_IOVA, bytes);
            let mut s = Sqe::new(op::WRITE, 0xfff1, nsid);
            s.set_lba_range(0, (bytes.len() as u64 / lbs) as u32);
            self.buffer_prps(&mut s, bytes.len() as u64);
            let c = self.submit(&s);
            assert_eq!(c.status(), Status::SUCCESS, "restore of namespace {nsid}");
        }
    }

    /// Lays the input's guest bytes out: A gets them all (zero padded), B
    /// and C their first bytes, so a PRP list or SGL segment can sit in any
    /// kind of region.
    pub fn load(&self, data: &[u8]) -> Images {
        let fill = |len: usize| {
            let mut v = vec![0u8; len];
            let n = data.len().min(len);
            v[..n].copy_from_slice(&data[..n]);
            v
        };
        let images = Images {
            a: fill(model::A_LEN),
            b: fill(model::B_LEN),
            c: fill(model::C_LEN),
            e: Vec::new(),
            e_state: None,
        };
        self.a.write(model::A_IOVA, &images.a);
        self.b.write(model::B_IOVA, &images.b);
        self.c.bytes.lock().unwrap().copy_from_slice(&images.c);
        images
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

/// Guest memory as loaded before the command: what the model walks.
/// Region D (rings, read-back buffer) changes under the command, so the
/// model does not claim to know it.
#[derive(Clone)]
pub struct Images {
    pub a: Vec<u8>,
    pub b: Vec<u8>,
    pub c: Vec<u8>,
    /// Region E's bytes up to its file's end (page rounded), when a loss
    /// input mapped it and the device can still reach it.
    pub e: Vec<u8>,
    pub e_state: Option<Backed>,
}

impl GuestView for Images {
    fn read(&self, r: Region, off: usize, out: &mut [u8]) -> bool {
        let n = out.len();
        let src = match r {
            Region::A => &self.a,
            Region::B => &self.b,
            Region::C => &self.c,
            Region::E if off + n <= self.e.len() => &self.e,
            Region::D | Region::E => return false,
        };
        out.copy_from_slice(&src[off..off + n]);
        true
    }

    fn region_e(&self) -> Option<Backed> {
        self.e_state
    }
}

/// A loss input's region E: an unsealed memfd mapped as guest memory for
/// that input only (a lost region stays lost until unmapped).
pub struct RegionE {
    pub host: HostMemory,
    pub guard: guard::Guarded,
    pub writable: bool,
    /// Bytes of the memfd the device can touch without a fault.
    pub valid: usize,
}

impl RegionE {
    /// Truncates the memfd to `len` bytes under the device.
    pub fn truncate(&mut self, len: usize) {
        // SAFETY: ftruncate on our own memfd, no pointers.
        let r = unsafe { libc::ftruncate(self.host.fd(), len as libc::off_t) };
        assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
        self.valid = self.valid.min(len.div_ceil(PAGE as usize) * PAGE as usize);
    }

    /// The bytes the device can reach without a fault, through the host's
    /// own mapping (which would fault past them too).
    pub fn backed_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.valid];
        self.host.read(model::E_IOVA, &mut v);
        v
    }
}

/// Loss inputs mapped so far (each E memfd gets its own name, so the
/// guard-page search never finds an earlier one).
static E_MAPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Rig {
    /// Maps a fresh region E filled with `bytes` (zero padded), between
    /// guard pages: a new guarded mapping, at which the SIGBUS guard goes
    /// back on top of whatever replaced it.
    pub fn map_e(&mut self, bytes: &[u8], writable: bool) {
        assert!(self.e.is_none(), "region E is mapped already");
        let k = E_MAPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = std::ffi::CString::new(format!("nvmefast-fuzz-e{k}")).expect("name");
        let mut guards = Vec::new();
        let host = region(
            &self.engine,
            &name,
            model::E_IOVA,
            model::E_LEN,
            writable,
            &mut guards,
        );
        let n = bytes.len().min(model::E_LEN);
        host.write(model::E_IOVA, &bytes[..n]);
        let guard = guards.pop().expect("one mapping");
        sigbus::set_guest(sigbus::GUEST_SLOTS - 1, guard.start, guard.end);
        self.e = Some(RegionE {
            host,
            guard,
            writable,
            valid: model::E_LEN,
        });
    }

    /// Unmaps region E and frees its guard pages.
    pub fn unmap_e(&mut self) {
        let Some(e) = self.e.take() else {
            return;
        };
        self.engine
            .unmap_dma(model::E_IOVA, model::E_LEN as u64)
            .expect("unmap E");
        sigbus::set_guest(sigbus::GUEST_SLOTS - 1, 0, 0);
        guard::release(&e.guard);
    }

    /// Region E's bytes the device can reach (through the host's view),
    /// when a loss input has it mapped.
    pub fn e_bytes(&self) -> Option<Vec<u8>> {
        self.e.as_ref().map(RegionE::backed_bytes)
    }

    /// Guest memory as it is now, for a loss input's next command; region
    /// E as the device finds it (`lost`: not at all).
    pub fn images(&self, lost: bool) -> Images {
        let mut a = vec![0u8; model::A_LEN];
        let mut b = vec![0u8; model::B_LEN];
        self.a.read(model::A_IOVA, &mut a);
        self.b.read(model::B_IOVA, &mut b);
        let e = self.e.as_ref();
        Images {
            a,
            b,
            c: self.c.bytes.lock().unwrap().clone(),
            e: self.e_bytes().unwrap_or_default(),
            e_state: e.filter(|_| !lost).map(|e| Backed {
                valid: e.valid,
                writable: e.writable,
            }),
        }
    }

    /// The namespace images the harness restores, in [`Rig::patterns`]
    /// order.
    pub fn pattern_images(&self) -> Vec<Vec<u8>> {
        self.patterns.iter().map(|p| p.2.clone()).collect()
    }

    /// What the engine says region E is.
    pub fn kind_e(&self) -> Kind {
        self.engine
            .dma_region_info()
            .into_iter()
            .find(|r| r.0 == model::E_IOVA)
            .map(|r| r.3)
            .expect("region E is mapped")
    }

    /// Guest memory regions the device lost so far.
    pub fn regions_lost(&self) -> u64 {
        self.engine
            .counters()
            .into_iter()
            .find(|c| c.0 == "dma_regions_lost")
            .map(|c| c.1)
            .expect("dma_regions_lost counter")
    }
}
