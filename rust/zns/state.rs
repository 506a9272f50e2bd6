//! The zone state machine (ZNS 1.1, 2.1.1.3) and zone resources
//! (2.1.1.4), as plain data: a [`Machine`] holds every zone of a namespace
//! with its state, write pointer and attributes, and the open and active
//! counts MOR and MAR limit. The table (`table.rs`) keeps it under a lock.
//!
//! Write pointers are offsets in the zone (0..=ZCAP). For Full, Read Only
//! and Offline zones the pointer is invalid to the host, but the machine
//! keeps it as the data frontier: blocks at and above it read as
//! deallocated (zeroes, DLFEAT 001b).

use std::collections::VecDeque;

use super::za;
use crate::spec::Status;

/// A zone's state (ZS, Zone Descriptor byte 1 bits 7:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ZoneState {
    Empty = 0x1,
    ImplicitlyOpened = 0x2,
    ExplicitlyOpened = 0x3,
    Closed = 0x4,
    ReadOnly = 0xd,
    Full = 0xe,
    Offline = 0xf,
}

impl ZoneState {
    /// The state of ZS value `v`, if it is one.
    pub fn from_zs(v: u8) -> Option<ZoneState> {
        Some(match v {
            0x1 => ZoneState::Empty,
            0x2 => ZoneState::ImplicitlyOpened,
            0x3 => ZoneState::ExplicitlyOpened,
            0x4 => ZoneState::Closed,
            0xd => ZoneState::ReadOnly,
            0xe => ZoneState::Full,
            0xf => ZoneState::Offline,
            _ => return None,
        })
    }

    /// Implicitly or explicitly opened (holds an open resource).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened
        )
    }

    /// Opened or closed (holds an active resource).
    pub fn is_active(self) -> bool {
        self.is_open() || self == ZoneState::Closed
    }

    /// The write pointer means something to the host (Figure 4).
    pub fn wp_valid(self) -> bool {
        self == ZoneState::Empty || self.is_active()
    }
}

/// Why a zone refused an operation: the ZNS status it completes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneError {
    Boundary,
    Full,
    ReadOnly,
    Offline,
    InvalidWrite,
    TooManyActive,
    TooManyOpen,
    InvalidTransition,
}

impl ZoneError {
    /// The status (Command Specific, ZNS 1.1 Figure 11), without DNR.
    pub fn status(self) -> Status {
        match self {
            ZoneError::Boundary => Status::ZONE_BOUNDARY_ERROR,
            ZoneError::Full => Status::ZONE_IS_FULL,
            ZoneError::ReadOnly => Status::ZONE_IS_READ_ONLY,
            ZoneError::Offline => Status::ZONE_IS_OFFLINE,
            ZoneError::InvalidWrite => Status::ZONE_INVALID_WRITE,
            ZoneError::TooManyActive => Status::TOO_MANY_ACTIVE_ZONES,
            ZoneError::TooManyOpen => Status::TOO_MANY_OPEN_ZONES,
            ZoneError::InvalidTransition => Status::INVALID_ZONE_STATE_TRANSITION,
        }
    }
}

/// One zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone {
    pub state: ZoneState,
    /// Offset of the write pointer (the data frontier) in the zone.
    pub wp: u64,
    /// ZA bits (`za::*`).
    pub attrs: u8,
}

impl Zone {
    const EMPTY: Zone = Zone {
        state: ZoneState::Empty,
        wp: 0,
        attrs: 0,
    };
}

/// Every zone of a namespace and its resources.
#[derive(Clone, Debug)]
pub struct Machine {
    zones: Vec<Zone>,
    zcap: u64,
    /// Limits as counts (MOR + 1, MAR + 1); None: no limit.
    max_open: Option<u32>,
    max_active: Option<u32>,
    open: u32,
    active: u32,
    /// Implicitly opened zones, oldest first (kept only with an open
    /// limit: the zone closed to make room is the oldest one).
    imp_open: VecDeque<u32>,
    /// Zones other than the one named that the last operation changed
    /// (a zone closed to free an open resource).
    pub touched: Vec<u32>,
}

fn limit(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}

impl Machine {
    /// `zones` Empty zones of `zcap` writable blocks; limits 0 = none.
    pub fn new(zones: u32, zcap: u64, max_open: u32, max_active: u32) -> Self {
        Machine {
            zones: vec![Zone::EMPTY; zones as usize],
            zcap,
            max_open: limit(max_open),
            max_active: limit(max_active),
            open: 0,
            active: 0,
            imp_open: VecDeque::new(),
            touched: Vec::new(),
        }
    }

    /// Zone `z` (the caller keeps `z` below the zone count).
    #[inline]
    pub fn zone(&self, z: u32) -> Zone {
        self.zones[z as usize]
    }

    /// Number of zones.
    pub fn len(&self) -> u32 {
        self.zones.len() as u32
    }

    /// True without zones (never: a geometry has at least one).
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// (open, active) resources in use.
    pub fn resources(&self) -> (u32, u32) {
        (self.open, self.active)
    }

    /// Writable blocks per zone.
    pub fn zcap(&self) -> u64 {
        self.zcap
    }

    /// Moves zone `z` to `to`, keeping the counts and the implicit-open
    /// list in step (2.1.1.4.1 a-g).
    fn set_state(&mut self, z: u32, to: ZoneState) {
        let from = self.zones[z as usize].state;
        if from == to {
            return;
        }
        if from.is_open() {
            self.open -= 1;
        }
        if from.is_active() {
            self.active -= 1;
        }
        if to.is_open() {
            self.open += 1;
        }
        if to.is_active() {
            self.active += 1;
        }
        if self.max_open.is_some() {
            if from == ZoneState::ImplicitlyOpened {
                if let Some(i) = self.imp_open.iter().position(|&x| x == z) {
                    self.imp_open.remove(i);
                }
            }
            if to == ZoneState::ImplicitlyOpened {
                self.imp_open.push_back(z);
            }
        }
        let zone = &mut self.zones[z as usize];
        zone.state = to;
        if !to.is_active() {
            // Finish Zone Recommended applies to active zones only (5.5).
            zone.attrs &= !za::FZR;
        }
    }

    /// Takes the resources zone `z` needs to become open (`open`) or only
    /// active, closing the oldest implicitly opened zone when that frees
    /// the open resource. Nothing changes on failure.
    fn acquire(&mut self, z: u32, open: bool) -> Result<(), ZoneError> {
        let state = self.zones[z as usize].state;
        let needs_active = state == ZoneState::Empty;
        let needs_open = open && !state.is_open();
        if needs_active && self.max_active.is_some_and(|m| self.active >= m) {
            return Err(ZoneError::TooManyActive);
        }
        if needs_open && self.max_open.is_some_and(|m| self.open >= m) {
            // The controller may close an implicitly opened zone to free
            // its open resource (2.1.1.4.1), never an explicitly opened one.
            let victim = self.imp_open.iter().copied().find(|&v| v != z);
            match victim {
                Some(v) => {
                    self.set_state(v, ZoneState::Closed);
                    self.touched.push(v);
                }
                None => return Err(ZoneError::TooManyOpen),
            }
        }
        Ok(())
    }

    /// A write of `nlb` blocks to zone `z`: at offset `at` (a Write, Write
    /// Zeroes or Copy), or wherever the write pointer is (`at` None: Zone
    /// Append). Checks in QEMU's order (state, write pointer, capacity,
    /// resources), opens the zone implicitly, moves the write pointer and
    /// makes the zone Full when it reaches ZCAP. Returns the offset written.
    pub fn write(&mut self, z: u32, at: Option<u64>, nlb: u64) -> Result<u64, ZoneError> {
        self.touched.clear();
        let zone = self.zones[z as usize];
        match zone.state {
            ZoneState::Full => return Err(ZoneError::Full),
            ZoneState::Offline => return Err(ZoneError::Offline),
            ZoneState::ReadOnly => return Err(ZoneError::ReadOnly),
            _ => {}
        }
        if at.is_some_and(|a| a != zone.wp) {
            return Err(ZoneError::InvalidWrite);
        }
        if zone.wp.checked_add(nlb).is_none_or(|end| end > self.zcap) {
            return Err(ZoneError::Boundary);
        }
        if matches!(zone.state, ZoneState::Empty | ZoneState::Closed) {
            self.acquire(z, true)?;
            self.set_state(z, ZoneState::ImplicitlyOpened);
        }
        let start = zone.wp;
        self.zones[z as usize].wp = start + nlb;
        if start + nlb == self.zcap {
            self.set_state(z, ZoneState::Full);
        }
        Ok(start)
    }

    /// Open Zone (ZSA 03h) of zone `z`.
    pub fn open(&mut self, z: u32) -> Result<(), ZoneError> {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::ExplicitlyOpened => Ok(()),
            ZoneState::Empty | ZoneState::ImplicitlyOpened | ZoneState::Closed => {
                self.acquire(z, true)?;
                self.set_state(z, ZoneState::ExplicitlyOpened);
                Ok(())
            }
            _ => Err(ZoneError::InvalidTransition),
        }
    }

    /// Close Zone (ZSA 01h) of zone `z`.
    pub fn close(&mut self, z: u32) -> Result<(), ZoneError> {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::Closed => Ok(()),
            s if s.is_open() => {
                self.set_state(z, ZoneState::Closed);
                Ok(())
            }
            _ => Err(ZoneError::InvalidTransition),
        }
    }

    /// Finish Zone (ZSA 02h) of zone `z`. The data frontier stays.
    pub fn finish(&mut self, z: u32) -> Result<(), ZoneError> {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::Full => Ok(()),
            ZoneState::ReadOnly | ZoneState::Offline => Err(ZoneError::InvalidTransition),
            _ => {
                self.set_state(z, ZoneState::Full);
                Ok(())
            }
        }
    }

    /// Reset Zone (ZSA 04h) of zone `z`: true when the zone was reset (its
    /// blocks are to be deallocated), false for an Empty zone (no change).
    pub fn reset(&mut self, z: u32) -> Result<bool, ZoneError> {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::Empty => Ok(false),
            ZoneState::ReadOnly | ZoneState::Offline => Err(ZoneError::InvalidTransition),
            _ => {
                self.set_state(z, ZoneState::Empty);
                let zone = &mut self.zones[z as usize];
                zone.wp = 0;
                zone.attrs = 0;
                Ok(true)
            }
        }
    }

    /// Offline Zone (ZSA 05h) of zone `z`: Read Only to Offline.
    pub fn offline(&mut self, z: u32) -> Result<(), ZoneError> {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::Offline => Ok(()),
            ZoneState::ReadOnly => {
                self.set_state(z, ZoneState::Offline);
                self.zones[z as usize].attrs &= !za::ZDEV;
                Ok(())
            }
            _ => Err(ZoneError::InvalidTransition),
        }
    }

    /// Set Zone Descriptor Extension (ZSA 10h): Empty to Closed, ZDEV set.
    pub fn set_zde(&mut self, z: u32) -> Result<(), ZoneError> {
        self.touched.clear();
        if self.zones[z as usize].state != ZoneState::Empty {
            return Err(ZoneError::InvalidTransition);
        }
        self.acquire(z, false)?;
        self.set_state(z, ZoneState::Closed);
        self.zones[z as usize].attrs |= za::ZDEV;
        Ok(())
    }

    /// The zones in `states`, in order.
    fn all_in(&self, states: &[ZoneState]) -> Vec<u32> {
        (0..self.len())
            .filter(|&z| states.contains(&self.zones[z as usize].state))
            .collect()
    }

    /// Close Zone with Select All: every opened zone. Returns the zones closed.
    pub fn close_all(&mut self) -> Vec<u32> {
        let zs = self.all_in(&[ZoneState::ImplicitlyOpened, ZoneState::ExplicitlyOpened]);
        for &z in &zs {
            self.set_state(z, ZoneState::Closed);
        }
        zs
    }

    /// Finish Zone with Select All: every opened or closed zone (not Empty ones).
    pub fn finish_all(&mut self) -> Vec<u32> {
        let zs = self.all_in(&[
            ZoneState::ImplicitlyOpened,
            ZoneState::ExplicitlyOpened,
            ZoneState::Closed,
        ]);
        for &z in &zs {
            self.set_state(z, ZoneState::Full);
        }
        zs
    }

    /// Reset Zone with Select All: every opened, closed or full zone.
    pub fn reset_all(&mut self) -> Vec<u32> {
        let zs = self.all_in(&[
            ZoneState::ImplicitlyOpened,
            ZoneState::ExplicitlyOpened,
            ZoneState::Closed,
            ZoneState::Full,
        ]);
        for &z in &zs {
            // Cannot fail: every zone listed is in a state Reset accepts.
            let _ = self.reset(z);
        }
        zs
    }

    /// Offline Zone with Select All: every Read Only zone.
    pub fn offline_all(&mut self) -> Vec<u32> {
        let zs = self.all_in(&[ZoneState::ReadOnly]);
        for &z in &zs {
            let _ = self.offline(z);
        }
        zs
    }

    /// Open Zone with Select All: every Closed zone, or none when the open
    /// resources do not suffice (implicitly opened zones are closed to
    /// make room only when that makes room for all of them).
    pub fn open_all(&mut self) -> Result<Vec<u32>, ZoneError> {
        self.touched.clear();
        let zs = self.all_in(&[ZoneState::Closed]);
        if let Some(m) = self.max_open {
            let n = zs.len() as u32;
            let free = m.saturating_sub(self.open);
            let closable = self.imp_open.len() as u32;
            if n > free.saturating_add(closable) {
                return Err(ZoneError::TooManyOpen);
            }
            for _ in free..n.min(free + closable) {
                if let Some(v) = self.imp_open.front().copied() {
                    self.set_state(v, ZoneState::Closed);
                    self.touched.push(v);
                }
            }
        }
        for &z in &zs {
            self.set_state(z, ZoneState::ExplicitlyOpened);
        }
        Ok(zs)
    }

    /// The controller makes zone `z` Read Only (any state but Read Only
    /// and Offline). True when it changed.
    pub fn make_read_only(&mut self, z: u32) -> bool {
        self.touched.clear();
        match self.zones[z as usize].state {
            ZoneState::ReadOnly | ZoneState::Offline => false,
            _ => {
                self.set_state(z, ZoneState::ReadOnly);
                true
            }
        }
    }

    /// The controller takes zone `z` offline (any state but Offline).
    pub fn make_offline(&mut self, z: u32) -> bool {
        self.touched.clear();
        if self.zones[z as usize].state == ZoneState::Offline {
            return false;
        }
        self.set_state(z, ZoneState::Offline);
        self.zones[z as usize].attrs &= !za::ZDEV;
        true
    }

    /// The controller recommends finishing (`za::FZR`, active zones only)
    /// or resetting (`za::RZR`, Full zones only) zone `z`. True when set.
    pub fn recommend(&mut self, z: u32, bit: u8) -> bool {
        self.touched.clear();
        let zone = &mut self.zones[z as usize];
        let applies = match bit {
            za::FZR => zone.state.is_active(),
            za::RZR => zone.state == ZoneState::Full,
            _ => false,
        };
        if !applies || zone.attrs & bit != 0 {
            return false;
        }
        zone.attrs |= bit;
        true
    }

    /// Replaces every zone (a restart or a power loss): opened zones come
    /// back Closed, or Empty when nothing was written to them and no
    /// extension is attached (2.1.1.3); the counts follow.
    pub fn restore(&mut self, zones: impl IntoIterator<Item = Zone>) {
        self.open = 0;
        self.active = 0;
        self.imp_open.clear();
        self.touched.clear();
        for (i, mut z) in zones.into_iter().enumerate().take(self.zones.len()) {
            if z.state.is_active() || z.state == ZoneState::Empty {
                z.state = if z.wp == 0 && z.attrs & za::ZDEV == 0 {
                    ZoneState::Empty
                } else {
                    ZoneState::Closed
                };
            }
            z.wp = z.wp.min(self.zcap);
            if z.state == ZoneState::Empty {
                z.attrs = 0;
            }
            if z.state.is_active() {
                self.active += 1;
            }
            self.zones[i] = z;
        }
    }
}
