//! A namespace's zones: the state machine under one short lock, and what
//! the hot path reads without it.
//!
//! Concurrency. Writes and Zone Appends from any worker take the lock
//! only to reserve their blocks (state, write pointer, capacity, implicit
//! open with MOR/MAR, the write pointer moved past them, maybe Full); the
//! data is copied after the lock is dropped. Appends from several queues
//! to one zone therefore get distinct, adjacent LBAs. Reads take no lock:
//! each zone publishes its state and data frontier in one atomic word
//! (Release after every change under the lock, Acquire in the reader), so
//! a read checks Offline and Read Across Zone Boundaries and finds the
//! blocks to synthesize as zeroes from one load per zone.
//!
//! Durability (file namespaces, and memory namespaces while a power loss
//! is tracked): a reservation is recorded until its data is written, so
//! the *completed* write pointer of a zone (the lowest block still being
//! written, else the write pointer) is known. A Flush (and a FUA write,
//! and every write with the volatile write cache off) makes it the
//! durable write pointer; Zone Management Send changes are durable when
//! they complete. A power loss rolls every zone back to its durable state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::persist::Companion;
use super::state::{Machine, Zone, ZoneError, ZoneState};
use super::{za, ZnsError, CHANGED_ZONES_MAX};
use crate::backend::Errno;

/// A zoned namespace's geometry, in LBAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub lba_shift: u32,
    /// log2 of the zone size in LBAs (ZSZE).
    pub zone_shift: u32,
    pub zones: u32,
    /// Writable LBAs per zone (ZCAP).
    pub zcap: u64,
    /// Limits as counts, 0 for none.
    pub max_open: u32,
    pub max_active: u32,
    /// Largest Zone Append in bytes, 0 for MDTS.
    pub zasl_bytes: u64,
    pub zde_bytes: u32,
    pub cross_read: bool,
}

impl Geometry {
    /// Zone size in LBAs.
    #[inline]
    pub fn zone_lbas(&self) -> u64 {
        1 << self.zone_shift
    }

    /// The zone holding `lba`.
    #[inline]
    pub fn zone_of(&self, lba: u64) -> u64 {
        lba >> self.zone_shift
    }

    /// The lowest LBA of zone `z`.
    #[inline]
    pub fn zslba(&self, z: u32) -> u64 {
        u64::from(z) << self.zone_shift
    }
}

/// A change the controller makes to a zone by itself (a fault rule, a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneAction {
    ReadOnly,
    Offline,
    FinishRecommended,
    ResetRecommended,
}

impl ZoneAction {
    /// By the names the rule language and the Python API use.
    pub fn parse(s: &str) -> Option<ZoneAction> {
        Some(match s {
            "readonly" | "read-only" => ZoneAction::ReadOnly,
            "offline" => ZoneAction::Offline,
            "finish-recommended" => ZoneAction::FinishRecommended,
            "reset-recommended" => ZoneAction::ResetRecommended,
            _ => return None,
        })
    }
}

/// The blocks a write reserved, to be released once its data is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    /// The LBA the data goes to (a Zone Append's ALBA).
    pub slba: u64,
    /// Set when the reservation is tracked for durability.
    token: Option<u64>,
}

/// What a zone looked like at the last durability point.
pub type Durable = Zone;

/// The state under the lock.
struct Inner {
    machine: Machine,
    /// Zone Descriptor Extensions by zone (only zones with ZDEV).
    ext: HashMap<u32, Box<[u8]>>,
    /// Reservations whose data is being written: (token, zone, offset).
    inflight: Vec<(u64, u32, u64)>,
    next_token: u64,
    /// The durable zones (None until something needs them).
    durable: Option<Vec<Durable>>,
    /// Zones whose durable record the companion file does not hold yet.
    dirty: Vec<u32>,
    /// The Changed Zone List: ZSLBAs, each once.
    changed: Vec<u64>,
    overflow: bool,
}

/// A namespace's zones (see the module documentation).
pub struct Zones {
    pub geo: Geometry,
    inner: Mutex<Inner>,
    /// Per zone: state in bits 63:60, data frontier (offset) below.
    snapshot: Box<[AtomicU64]>,
    /// The companion file of a file namespace.
    companion: Option<Companion>,
    /// The namespace is write protected (a read-only file).
    pub readonly: bool,
}

const STATE_SHIFT: u32 = 60;

fn pack(z: Zone) -> u64 {
    (u64::from(z.state as u8) << STATE_SHIFT) | z.wp
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Zones {
    /// Zones of `geo`, every one Empty; a file namespace's `companion`
    /// (its zones as last made durable) replaces them.
    pub fn new(
        geo: Geometry,
        companion: Option<Companion>,
        readonly: bool,
    ) -> Result<Zones, ZnsError> {
        let mut machine = Machine::new(geo.zones, geo.zcap, geo.max_open, geo.max_active);
        let mut ext = HashMap::new();
        let mut durable = None;
        if let Some(c) = &companion {
            let (zones, exts) = c.load()?;
            machine.restore(zones.iter().copied());
            ext = exts;
            durable = Some((0..geo.zones).map(|z| machine.zone(z)).collect());
        }
        if readonly {
            // A write-protected namespace has no active zones (2.1.1.4):
            // they are Full, their data readable. Without a record of its
            // zones, a read-only image is all data: every zone Full.
            let known = companion.as_ref().is_some_and(Companion::existed);
            let zones: Vec<Zone> = (0..geo.zones)
                .map(|z| {
                    let mut zone = machine.zone(z);
                    if !known {
                        zone.wp = geo.zcap;
                    }
                    if zone.state.is_active() || !known {
                        zone.state = ZoneState::Full;
                    }
                    zone
                })
                .collect();
            machine.restore(zones);
        }
        let snapshot = (0..geo.zones)
            .map(|z| AtomicU64::new(pack(machine.zone(z))))
            .collect();
        Ok(Zones {
            geo,
            inner: Mutex::new(Inner {
                machine,
                ext,
                inflight: Vec::new(),
                next_token: 0,
                durable,
                dirty: Vec::new(),
                changed: Vec::new(),
                overflow: false,
            }),
            snapshot,
            companion,
            readonly,
        })
    }

    /// True when the zones are kept in a companion file.
    pub fn persistent(&self) -> bool {
        self.companion.is_some()
    }

    /// The state and data frontier (offset) of zone `z`, without the lock.
    #[inline]
    pub fn peek(&self, z: u32) -> (ZoneState, u64) {
        // Acquire pairs with the Release in `publish`: a reader that sees
        // a frontier also sees the state written with it.
        let v = self.snapshot[z as usize].load(Ordering::Acquire);
        let state = ZoneState::from_zs((v >> STATE_SHIFT) as u8).unwrap_or(ZoneState::Offline);
        (state, v & ((1 << STATE_SHIFT) - 1))
    }

    fn publish(&self, inner: &Inner, z: u32) {
        // Release: see `peek`.
        self.snapshot[z as usize].store(pack(inner.machine.zone(z)), Ordering::Release);
    }

    fn publish_touched(&self, inner: &Inner, z: u32) {
        self.publish(inner, z);
        for &t in &inner.machine.touched {
            self.publish(inner, t);
        }
    }

    /// Reserves `nlb` blocks of zone `z` for a write at `slba` (None: a
    /// Zone Append, wherever the write pointer is). `track`: the blocks
    /// count as written only once [`Zones::complete`] says so.
    pub fn reserve(
        &self,
        z: u32,
        slba: Option<u64>,
        nlb: u64,
        track: bool,
    ) -> Result<Reservation, ZoneError> {
        let zslba = self.geo.zslba(z);
        let at = slba.map(|s| s - zslba);
        let mut g = lock(&self.inner);
        let start = g.machine.write(z, at, nlb)?;
        self.publish_touched(&g, z);
        let token = if track {
            let t = g.next_token;
            g.next_token = t.wrapping_add(1);
            g.inflight.push((t, z, start));
            Some(t)
        } else {
            None
        };
        Ok(Reservation {
            slba: zslba + start,
            token,
        })
    }

    /// The data of reservation `r` is written (or failed to be).
    pub fn complete(&self, r: Reservation) {
        if let Some(t) = r.token {
            let mut g = lock(&self.inner);
            if let Some(i) = g.inflight.iter().position(|&(x, ..)| x == t) {
                g.inflight.swap_remove(i);
            }
        }
    }

    /// Zone `z` as the durable record would have it now: its write
    /// pointer no further than the first block still being written.
    fn completed(inner: &Inner, z: u32) -> Durable {
        let mut zone = inner.machine.zone(z);
        for &(_, iz, start) in &inner.inflight {
            if iz == z && start < zone.wp {
                zone.wp = start;
            }
        }
        if zone.state == ZoneState::Full && zone.wp < inner.machine.zcap() {
            // Full by writes still in flight: not durable as Full yet.
            let finished = inner.inflight.iter().all(|&(_, iz, _)| iz != z);
            if !finished {
                zone.state = ZoneState::Closed;
            }
        }
        zone
    }

    /// Makes zones `which` (None: every zone) durable as they are now (a
    /// durability point), writing the companion file when there is one.
    fn make_durable(&self, g: &mut Inner, which: Option<&[u32]>) -> Result<(), Errno> {
        let zones = self.geo.zones;
        if g.durable.is_none() {
            g.durable = Some((0..zones).map(|z| g.machine.zone(z)).collect());
        }
        let mut changed = Vec::new();
        let mut update = |g: &mut Inner, z: u32| {
            let now = Self::completed(g, z);
            if let Some(d) = g.durable.as_mut() {
                if d[z as usize] != now {
                    d[z as usize] = now;
                    changed.push(z);
                }
            }
        };
        match which {
            Some(list) => list.iter().for_each(|&z| update(g, z)),
            None => (0..zones).for_each(|z| update(g, z)),
        }
        let Some(c) = &self.companion else {
            return Ok(());
        };
        g.dirty.extend(changed);
        if g.dirty.is_empty() || self.readonly {
            return Ok(());
        }
        g.dirty.sort_unstable();
        g.dirty.dedup();
        let durable = g.durable.as_deref().unwrap_or(&[]);
        c.store(&g.dirty, durable, &g.ext)?;
        g.dirty.clear();
        Ok(())
    }

    /// A durability point (Flush, FUA, a write with the cache off): the
    /// completed write pointers become the durable ones.
    pub fn durable_point(&self) -> Result<(), Errno> {
        let mut g = lock(&self.inner);
        if self.companion.is_none() && g.durable.is_none() {
            // Nothing keeps durable zones (memory, no power loss tracked).
            return Ok(());
        }
        self.make_durable(&mut g, None)
    }

    /// A power loss: every zone back to its durable state (opened zones
    /// come back Closed or Empty, as after a power cycle).
    pub fn power_loss(&self) {
        let mut g = lock(&self.inner);
        g.inflight.clear();
        let back: Vec<Zone> = match &g.durable {
            Some(d) => d.clone(),
            None => (0..self.geo.zones).map(|z| g.machine.zone(z)).collect(),
        };
        g.machine.restore(back);
        let zdev: Vec<u32> = (0..self.geo.zones)
            .filter(|&z| g.machine.zone(z).attrs & za::ZDEV != 0)
            .collect();
        g.ext.retain(|z, _| zdev.contains(z));
        for z in 0..self.geo.zones {
            self.publish(&g, z);
        }
    }

    /// Runs `op` on the machine under the lock, then publishes zone `z` and
    /// whatever else it touched and makes them durable (Zone Management
    /// Send changes are durable when they complete).
    pub(super) fn manage<T>(
        &self,
        z: Option<u32>,
        op: impl FnOnce(&mut Machine, &mut HashMap<u32, Box<[u8]>>) -> Result<(T, Vec<u32>), ZoneError>,
    ) -> Result<Result<T, ZoneError>, Errno> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let (value, mut list) = match op(&mut inner.machine, &mut inner.ext) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        list.extend(z);
        list.extend(inner.machine.touched.iter().copied());
        for &t in &list {
            self.publish(inner, t);
        }
        if self.companion.is_some() || inner.durable.is_some() {
            self.make_durable(inner, Some(&list))?;
        }
        Ok(Ok(value))
    }

    /// Sanitize: every zone that is not Read Only or Offline is Empty, its
    /// descriptor extension gone, durably.
    pub fn sanitize(&self) -> Result<(), Errno> {
        self.manage(None, |m, ext| {
            let l = m.reset_all();
            l.iter().for_each(|z| drop(ext.remove(z)));
            Ok(((), l))
        })
        .map(drop)
    }

    /// The controller's own change to zone `z`: true when the zone changed
    /// (it joins the Changed Zone List; the caller raises the event).
    pub fn controller_action(&self, z: u32, action: ZoneAction) -> Result<bool, Errno> {
        let r = self.manage(Some(z), |m, ext| {
            let changed = match action {
                ZoneAction::ReadOnly => m.make_read_only(z),
                ZoneAction::Offline => {
                    let c = m.make_offline(z);
                    ext.remove(&z);
                    c
                }
                ZoneAction::FinishRecommended => m.recommend(z, za::FZR),
                ZoneAction::ResetRecommended => m.recommend(z, za::RZR),
            };
            Ok((changed, Vec::new()))
        })?;
        let changed = r.unwrap_or(false);
        if changed {
            let zslba = self.geo.zslba(z);
            let mut g = lock(&self.inner);
            if !g.changed.contains(&zslba) {
                if g.changed.len() < CHANGED_ZONES_MAX {
                    g.changed.push(zslba);
                } else {
                    g.overflow = true;
                }
            }
        }
        Ok(changed)
    }

    /// The Changed Zone List (ZSLBAs) and whether it overflowed; `clear`
    /// empties it (a read with RAE cleared).
    pub fn changed_zones(&self, clear: bool) -> (Vec<u64>, bool) {
        let mut g = lock(&self.inner);
        let r = (g.changed.clone(), g.overflow);
        if clear {
            g.changed.clear();
            g.overflow = false;
        }
        r
    }

    /// Every zone as (state, write pointer offset, attributes), in order.
    pub fn zones(&self) -> Vec<Zone> {
        let g = lock(&self.inner);
        (0..self.geo.zones).map(|z| g.machine.zone(z)).collect()
    }

    /// The extension of zone `z`, when it has one.
    pub fn extension(&self, z: u32) -> Option<Box<[u8]>> {
        lock(&self.inner).ext.get(&z).cloned()
    }

    /// (open, active) resources in use.
    pub fn resources(&self) -> (u32, u32) {
        lock(&self.inner).machine.resources()
    }

    /// Runs `f` over the zones with the lock held (Zone Management
    /// Receive: one consistent report).
    pub(super) fn with<T>(&self, f: impl FnOnce(&Machine, &HashMap<u32, Box<[u8]>>) -> T) -> T {
        let g = lock(&self.inner);
        f(&g.machine, &g.ext)
    }

    /// Tracking of power losses starts on a memory namespace: what is
    /// there now counts as durable.
    pub fn track(&self, on: bool) {
        let mut g = lock(&self.inner);
        if self.companion.is_some() {
            return;
        }
        g.durable = if on {
            Some((0..self.geo.zones).map(|z| g.machine.zone(z)).collect())
        } else {
            None
        };
    }

    /// Flushes the companion file's pending records (an orderly close).
    pub fn close(&self) -> Result<(), Errno> {
        self.durable_point()
    }
}
