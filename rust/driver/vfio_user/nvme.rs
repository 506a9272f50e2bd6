//! An NVMe host over a vfio-user [`Client`]: what Linux's nvme driver does
//! at probe, with only what the protocol offers. It walks PCI config space
//! to the MSI-X capability, enables it, gives the server an eventfd per
//! vector, resets and enables the controller through BAR0 messages, and
//! creates queues with admin commands on an admin queue it polls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Client, Error, BAR0_REGION, CONFIG_REGION, MSIX_IRQ};
use crate::driver::ring::{Mmio, Ring, Ringer};
use crate::driver::{HostMemory, HostQueue};
use crate::shm::SharedMemory;
use crate::spec::{Cqe, Sqe};

const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u64 = 1 << 1;
const PCI_COMMAND_MASTER: u64 = 1 << 2;
const PCI_COMMAND_INTX_DISABLE: u64 = 1 << 10;
const PCI_CAPABILITY_LIST: u64 = 0x34;
const PCI_CAP_ID_MSIX: u64 = 0x11;
const MSIX_ENABLE: u64 = 1 << 15;
const MSIX_MASKALL: u64 = 1 << 14;

const NVME_CAP: u64 = 0x00;
const NVME_CC: u64 = 0x14;
const NVME_CSTS: u64 = 0x1c;
const NVME_AQA: u64 = 0x24;
const NVME_ASQ: u64 = 0x28;
const NVME_ACQ: u64 = 0x30;
/// Doorbells start here in BAR0.
pub const DOORBELLS: u64 = 0x1000;
const CC_EN: u64 = 1;
const CC_IOSQES_64: u64 = 6 << 16;
const CC_IOCQES_16: u64 = 4 << 20;
const CSTS_RDY: u64 = 1;
const CSTS_CFS: u64 = 2;

const ADMIN_DELETE_SQ: u8 = 0x00;
const ADMIN_CREATE_SQ: u8 = 0x01;
const ADMIN_DELETE_CQ: u8 = 0x04;
const ADMIN_CREATE_CQ: u8 = 0x05;
const ADMIN_IDENTIFY: u8 = 0x06;
const ADMIN_SET_FEATURES: u8 = 0x09;
const ADMIN_DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

const ADMIN_ENTRIES: u32 = 32;
/// Largest I/O queue this host creates.
pub const MAX_ENTRIES: u32 = 1024;
/// The host's memory: queues, shadow doorbells, data buffers.
const IOVA: u64 = 0x1_0000_0000;

/// BAR0 doorbell writes as vfio-user REGION_WRITE messages (what a
/// doorbell costs a guest whose BAR0 is trapped: one message each).
pub struct Bar0Doorbells<'a> {
    pub client: &'a Client,
    /// Bytes between doorbells (4 << CAP.DSTRD).
    pub stride: u32,
    /// Send with No_reply, as QEMU posts MMIO writes.
    pub posted: bool,
    /// The first write the socket refused (the server went away): later
    /// writes are dropped, and the run ends with no completion.
    pub failed: std::sync::Mutex<Option<String>>,
}

impl<'a> Bar0Doorbells<'a> {
    fn new(client: &'a Client, stride: u32, posted: bool) -> Self {
        Bar0Doorbells {
            client,
            stride,
            posted,
            failed: std::sync::Mutex::new(None),
        }
    }

    /// Why a doorbell write failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Mmio for Bar0Doorbells<'_> {
    fn doorbell(&self, index: u32, value: u32) {
        let offset = DOORBELLS + u64::from(index) * u64::from(self.stride);
        if let Err(e) = self
            .client
            .write(BAR0_REGION, offset, 4, u64::from(value), self.posted)
        {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| format!("doorbell {index} write: {e}"));
        }
    }
}

/// An mmap of BAR0's sparse-mmap doorbell area.
struct DoorbellPage {
    map: SharedMemory,
    /// Offset of the map's first byte in BAR0.
    bar_offset: u64,
}

/// A controller behind a vfio-user server, brought up and ready for queues.
pub struct NvmeHost {
    pub client: Client,
    pub mem: HostMemory,
    next: u64,
    admin: HostQueue,
    admin_cid: u16,
    /// Bytes between doorbells.
    pub stride: u32,
    /// CAP.MQES + 1: the largest queue.
    pub max_entries: u32,
    /// The doorbell page, when BAR0 offers it.
    page: Option<DoorbellPage>,
    /// One eventfd per vector given to the server (index = vector).
    pub eventfds: Vec<OwnedFd>,
    /// The shadow doorbell and EventIdx buffers, once Doorbell Buffer Config ran.
    shadow: Option<(u64, u64)>,
    /// The pages for them (allocated once, reused after a reset).
    shadow_pages: Option<(u64, u64)>,
    /// (qid, SQ, CQ) ring areas of I/O queues, reused by later pairs.
    rings: Vec<(u16, u64, u64)>,
    /// Namespace 1: (LBAs, LBA size).
    pub ns: (u64, u32),
}

fn eventfd() -> Result<OwnedFd, Error> {
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl NvmeHost {
    /// Connects to `socket`, maps `mem_bytes` of host memory for DMA and
    /// brings the controller up with MSI-X vectors 0..`vectors`.
    pub fn connect(socket: &Path, mem_bytes: usize, vectors: u32) -> Result<Self, Error> {
        let client = Client::connect(socket, Duration::from_secs(10))?;
        let mem = HostMemory::new(mem_bytes, IOVA)?;
        client.dma_map(mem.fd(), 0, IOVA, mem_bytes as u64)?;
        let cap = client.read(BAR0_REGION, NVME_CAP, 8)?;
        let stride = 4u32 << ((cap >> 32) & 0xf);
        let max_entries = ((cap & 0xffff) + 1) as u32;
        let bar0 = client.region_info(BAR0_REGION)?;
        let page = match (
            &bar0.fd,
            bar0.areas
                .iter()
                .find(|a| a.offset <= DOORBELLS && DOORBELLS < a.offset + a.size),
        ) {
            (Some(fd), Some(a)) => Some(DoorbellPage {
                map: SharedMemory::from_fd_at(
                    fd.as_raw_fd(),
                    (bar0.offset + a.offset) as usize,
                    a.size as usize,
                )?,
                bar_offset: a.offset,
            }),
            _ => None,
        };
        let (_, count) = client.irq_info(MSIX_IRQ)?;
        if count < vectors {
            return Err(Error::Nvme(format!(
                "{count} MSI-X vectors, need {vectors}"
            )));
        }
        let mut host = NvmeHost {
            admin: HostQueue::new(&mem, 0, ADMIN_ENTRIES, IOVA, IOVA + 4096),
            client,
            mem,
            next: IOVA + 8192,
            admin_cid: 0,
            stride,
            max_entries,
            page,
            eventfds: Vec::new(),
            shadow: None,
            shadow_pages: None,
            rings: Vec::new(),
            ns: (0, 0),
        };
        host.enable_pci(vectors)?;
        host.enable_controller(cap)?;
        host.set_features(FEATURE_NUMBER_OF_QUEUES, 0x0007_0007)?;
        host.ns = host.identify_namespace(1)?;
        Ok(host)
    }

    /// True when BAR0 offers the doorbell page.
    pub fn has_doorbell_page(&self) -> bool {
        self.page.is_some()
    }

    /// Bump-allocates `bytes` of host memory, 4 KiB aligned.
    pub fn alloc(&mut self, bytes: usize) -> Result<u64, Error> {
        let at = self.next;
        let end = at + (bytes as u64).div_ceil(4096) * 4096;
        if end > self.mem.iova + self.mem.len() as u64 {
            return Err(Error::Nvme("host memory exhausted".into()));
        }
        self.next = end;
        Ok(at)
    }

    fn config_read(&self, offset: u64, count: u32) -> Result<u64, Error> {
        self.client.read(CONFIG_REGION, offset, count)
    }

    fn config_write(&self, offset: u64, count: u32, value: u64) -> Result<(), Error> {
        self.client
            .write(CONFIG_REGION, offset, count, value, false)
    }

    fn enable_pci(&mut self, vectors: u32) -> Result<(), Error> {
        let command = self.config_read(PCI_COMMAND, 2)?;
        self.config_write(
            PCI_COMMAND,
            2,
            command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
        )?;
        let mut at = self.config_read(PCI_CAPABILITY_LIST, 1)? & 0xfc;
        let mut msix = None;
        for _ in 0..48 {
            if at == 0 {
                break;
            }
            if self.config_read(at, 1)? == PCI_CAP_ID_MSIX {
                msix = Some(at);
                break;
            }
            at = self.config_read(at + 1, 1)? & 0xfc;
        }
        let msix = msix.ok_or_else(|| Error::Nvme("no MSI-X capability".into()))?;
        let control = self.config_read(msix + 2, 2)?;
        self.config_write(msix + 2, 2, (control | MSIX_ENABLE) & !MSIX_MASKALL)?;
        for _ in 0..vectors {
            self.eventfds.push(eventfd()?);
        }
        let fds: Vec<i32> = self.eventfds.iter().map(|f| f.as_raw_fd()).collect();
        self.client.set_irq_eventfds(MSIX_IRQ, 0, &fds)
    }

    fn wait_ready(&self, ready: bool, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            let csts = self.client.read(BAR0_REGION, NVME_CSTS, 4)?;
            if csts == 0xffff_ffff || csts & CSTS_CFS != 0 {
                return Err(Error::Nvme(format!(
                    "CSTS {csts:#x}: controller fatal status"
                )));
            }
            if (csts & CSTS_RDY != 0) == ready {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Nvme(format!(
                    "CSTS.RDY did not become {}",
                    u8::from(ready)
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn enable_controller(&mut self, cap: u64) -> Result<(), Error> {
        let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1));
        let w = |o: u64, v: u64| self.client.write(BAR0_REGION, o, 4, v, false);
        w(NVME_CC, 0)?;
        self.wait_ready(false, timeout)?;
        let n = u64::from(ADMIN_ENTRIES - 1);
        w(NVME_AQA, n << 16 | n)?;
        let (asq, acq) = (self.admin.sq_iova, self.admin.cq_iova);
        w(NVME_ASQ, asq & 0xffff_ffff)?;
        w(NVME_ASQ + 4, asq >> 32)?;
        w(NVME_ACQ, acq & 0xffff_ffff)?;
        w(NVME_ACQ + 4, acq >> 32)?;
        w(NVME_CC, CC_EN | CC_IOSQES_64 | CC_IOCQES_16)?;
        self.wait_ready(true, timeout)
    }

    /// One admin command, completion by polling the admin CQ; the command's
    /// status must be success.
    pub fn admin(&mut self, mut sqe: Sqe) -> Result<Cqe, Error> {
        let cid = self.admin_cid;
        self.admin_cid = self.admin_cid.wrapping_add(1);
        sqe.set_cid(cid);
        self.admin.push(&sqe);
        let mmio = Bar0Doorbells::new(&self.client, self.stride, false);
        self.admin.ring_sq(&mmio);
        if let Some(why) = mmio.failure() {
            return Err(Error::Protocol(why));
        }
        let c = self.admin.wait(Duration::from_secs(5)).ok_or_else(|| {
            Error::Nvme(format!("admin opcode {:#x}: no completion", sqe.opcode()))
        })?;
        self.admin.ring_cq(&mmio);
        if c.cid != cid {
            return Err(Error::Nvme(format!(
                "admin completion for cid {}, want {cid}",
                c.cid
            )));
        }
        if !c.status().is_success() {
            return Err(Error::Nvme(format!(
                "admin opcode {:#x} failed: SCT {:#x} SC {:#x}",
                sqe.opcode(),
                c.status().sct(),
                c.status().sc()
            )));
        }
        Ok(c)
    }

    fn set_features(&mut self, fid: u32, value: u32) -> Result<Cqe, Error> {
        let mut s = Sqe::new(ADMIN_SET_FEATURES, 0, 0);
        s.dw[10] = fid;
        s.dw[11] = value;
        self.admin(s)
    }

    fn identify_namespace(&mut self, nsid: u32) -> Result<(u64, u32), Error> {
        let buf = self.alloc(4096)?;
        let mut s = Sqe::new(ADMIN_IDENTIFY, 0, nsid);
        s.set_prps(buf, 0);
        s.dw[10] = 0; // CNS 00h: Identify Namespace
        self.admin(s)?;
        let mut id = vec![0u8; 4096];
        self.mem.read(buf, &mut id);
        let nsze = u64::from_le_bytes(id[0..8].try_into().expect("8 bytes"));
        let flbas = usize::from(id[26] & 0xf);
        let lbaf = u32::from_le_bytes(id[128 + 4 * flbas..132 + 4 * flbas].try_into().expect("4"));
        let lbads = (lbaf >> 16) & 0xff;
        if nsze == 0 || !(9..=12).contains(&lbads) {
            return Err(Error::Nvme(format!(
                "namespace {nsid}: size {nsze}, LBA shift {lbads}"
            )));
        }
        Ok((nsze, 1 << lbads))
    }

    /// Resets the controller (CC.EN 1 -> 0 -> 1) and brings it back up: the
    /// only way to turn shadow doorbells off again. I/O queues are gone after.
    pub fn reset(&mut self) -> Result<(), Error> {
        let cap = self.client.read(BAR0_REGION, NVME_CAP, 8)?;
        // Zeroed rings: old CQEs carry the phase tag a fresh queue expects.
        self.mem.write(IOVA, &[0u8; 8192]);
        self.admin = HostQueue::new(&self.mem, 0, ADMIN_ENTRIES, IOVA, IOVA + 4096);
        self.shadow = None;
        self.enable_controller(cap)?;
        self.set_features(FEATURE_NUMBER_OF_QUEUES, 0x0007_0007)?;
        Ok(())
    }

    /// True once Doorbell Buffer Config ran (until a reset).
    pub fn shadow_enabled(&self) -> bool {
        self.shadow.is_some()
    }

    /// Doorbell Buffer Config: from now on the host writes SQ tails and CQ
    /// heads of I/O queues into a shadow page and rings MMIO only when
    /// EventIdx asks (Linux's dbbuf).
    pub fn enable_shadow_doorbells(&mut self) -> Result<(), Error> {
        if self.shadow.is_some() {
            return Ok(());
        }
        let (db, ei) = match self.shadow_pages {
            Some(p) => p,
            None => {
                let p = (self.alloc(4096)?, self.alloc(4096)?);
                self.shadow_pages = Some(p);
                p
            }
        };
        // Fresh buffers: the controller takes what it finds as the current values.
        self.mem.write(db, &[0u8; 4096]);
        self.mem.write(ei, &[0u8; 4096]);
        let mut s = Sqe::new(ADMIN_DOORBELL_BUFFER_CONFIG, 0, 0);
        s.set_prps(db, ei);
        self.admin(s)?;
        self.shadow = Some((db, ei));
        Ok(())
    }

    /// Creates CQ and SQ `qid` of `entries` (CQ interrupts on vector `qid`
    /// when `ien`), rung per `ring`: "page", "shadow" or "trap".
    pub fn create_pair(
        &mut self,
        qid: u16,
        entries: u32,
        ien: bool,
        ring: &str,
    ) -> Result<HostQueue, Error> {
        let entries = entries.min(self.max_entries).min(MAX_ENTRIES);
        // The ring method first: a refusal must not leave a pair behind.
        let stride = self.stride as usize;
        let ringer = Ringer::new(match ring {
            "page" => {
                let p = self
                    .page
                    .as_ref()
                    .ok_or_else(|| Error::Nvme("the server offers no doorbell page".into()))?;
                // SAFETY: the doorbell area covers DOORBELLS.. in BAR0 (checked
                // when mapped), so this stays inside the map.
                let base = unsafe { p.map.as_ptr().add((DOORBELLS - p.bar_offset) as usize) };
                Ring::Page { page: base, stride }
            }
            "shadow" => {
                let (db, ei) = self
                    .shadow
                    .ok_or_else(|| Error::Nvme("shadow doorbells are not configured".into()))?;
                Ring::Shadow {
                    db: self.mem.ptr(db, 4096),
                    ei: self.mem.ptr(ei, 4096),
                    stride,
                }
            }
            "trap" => Ring::Mmio,
            other => return Err(Error::Nvme(format!("unknown doorbell method {other:?}"))),
        });
        // One area per queue ID, reused and zeroed (a stale CQE would carry
        // the phase tag the new queue's first entry is expected to have).
        let (sq, cq) = match self.rings.iter().find(|r| r.0 == qid) {
            Some(&(_, sq, cq)) => (sq, cq),
            None => {
                let sq = self.alloc(MAX_ENTRIES as usize * Sqe::SIZE)?;
                let cq = self.alloc(MAX_ENTRIES as usize * Cqe::SIZE)?;
                self.rings.push((qid, sq, cq));
                (sq, cq)
            }
        };
        self.mem
            .write(sq, &vec![0u8; MAX_ENTRIES as usize * Sqe::SIZE]);
        self.mem
            .write(cq, &vec![0u8; MAX_ENTRIES as usize * Cqe::SIZE]);
        let mut c = Sqe::new(ADMIN_CREATE_CQ, 0, 0);
        c.set_prps(cq, 0);
        c.dw[10] = (entries - 1) << 16 | u32::from(qid);
        c.dw[11] = u32::from(qid) << 16 | if ien { 2 } else { 0 } | 1;
        self.admin(c)?;
        let mut s = Sqe::new(ADMIN_CREATE_SQ, 0, 0);
        s.set_prps(sq, 0);
        s.dw[10] = (entries - 1) << 16 | u32::from(qid);
        s.dw[11] = u32::from(qid) << 16 | 1;
        if let Err(e) = self.admin(s) {
            let mut d = Sqe::new(ADMIN_DELETE_CQ, 0, 0);
            d.dw[10] = u32::from(qid);
            // Best effort: the SQ's refusal is the error to report.
            let _ = self.admin(d);
            return Err(e);
        }
        let mut q = HostQueue::new(&self.mem, qid, entries, sq, cq);
        q.ringer = ringer;
        Ok(q)
    }

    /// Deletes SQ then CQ `qid`.
    pub fn delete_pair(&mut self, qid: u16) -> Result<(), Error> {
        let mut s = Sqe::new(ADMIN_DELETE_SQ, 0, 0);
        s.dw[10] = u32::from(qid);
        self.admin(s)?;
        let mut c = Sqe::new(ADMIN_DELETE_CQ, 0, 0);
        c.dw[10] = u32::from(qid);
        self.admin(c)?;
        Ok(())
    }

    /// Where I/O doorbells that are MMIO go: posted REGION_WRITEs.
    pub fn mmio(&self) -> Bar0Doorbells<'_> {
        Bar0Doorbells::new(&self.client, self.stride, true)
    }
}
