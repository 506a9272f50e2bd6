//! The state machine against a reference model written from the spec's
//! tables (ZNS 1.1, 2.1.1.3 transitions, 2.1.1.4 resources, 3.4.3.1 Zone
//! Send Actions), on random operation sequences. The model keeps no
//! counters: it counts open and active zones by looking at every zone, and
//! remembers when each zone became implicitly opened (the controller closes
//! the oldest such zone to free an open resource, as QEMU does).

use proptest::prelude::*;

use super::state::{Machine, Zone, ZoneError, ZoneState};
use super::za;

use ZoneState::*;

const ZONES: u32 = 6;
const CAP: u64 = 8;

#[derive(Clone, Debug)]
enum Op {
    /// A write of `nlb` at the write pointer plus `skew` (0: at it).
    Write {
        z: u32,
        skew: u64,
        nlb: u64,
    },
    Append {
        z: u32,
        nlb: u64,
    },
    Open(u32),
    Close(u32),
    Finish(u32),
    Reset(u32),
    Offline(u32),
    SetZde(u32),
    OpenAll,
    CloseAll,
    FinishAll,
    ResetAll,
    OfflineAll,
    ReadOnly(u32),
    TakeOffline(u32),
    /// 5.4 / 5.5: the controller recommends finishing or resetting.
    Recommend(u32, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let z = 0..ZONES;
    prop_oneof![
        6 => (z.clone(), prop_oneof![4 => Just(0u64), 1 => 1..3u64], 1..4u64)
            .prop_map(|(z, skew, nlb)| Op::Write { z, skew, nlb }),
        3 => (z.clone(), 1..4u64).prop_map(|(z, nlb)| Op::Append { z, nlb }),
        2 => z.clone().prop_map(Op::Open),
        2 => z.clone().prop_map(Op::Close),
        1 => z.clone().prop_map(Op::Finish),
        1 => z.clone().prop_map(Op::Reset),
        1 => z.clone().prop_map(Op::Offline),
        1 => z.clone().prop_map(Op::SetZde),
        1 => Just(Op::OpenAll),
        1 => Just(Op::CloseAll),
        1 => Just(Op::FinishAll),
        1 => Just(Op::ResetAll),
        1 => Just(Op::OfflineAll),
        1 => z.clone().prop_map(Op::ReadOnly),
        1 => z.clone().prop_map(Op::TakeOffline),
        2 => (z, prop_oneof![Just(za::FZR), Just(za::RZR)]).prop_map(|(z, b)| Op::Recommend(z, b)),
    ]
}

/// The reference: zones, limits as counts (None: no limit), and the time
/// each zone last became implicitly opened.
#[derive(Clone, Debug)]
struct Model {
    zones: Vec<Zone>,
    since: Vec<u64>,
    clock: u64,
    mor: Option<u32>,
    mar: Option<u32>,
}

fn open(s: ZoneState) -> bool {
    matches!(s, ImplicitlyOpened | ExplicitlyOpened)
}

fn active(s: ZoneState) -> bool {
    matches!(s, ImplicitlyOpened | ExplicitlyOpened | Closed)
}

impl Model {
    fn count(&self, f: fn(ZoneState) -> bool) -> u32 {
        self.zones.iter().filter(|z| f(z.state)).count() as u32
    }

    fn set(&mut self, z: u32, s: ZoneState) {
        let zone = &mut self.zones[z as usize];
        if s == ImplicitlyOpened && zone.state != ImplicitlyOpened {
            self.clock += 1;
            self.since[z as usize] = self.clock;
        }
        zone.state = s;
        if !active(s) {
            zone.attrs &= !za::FZR;
        }
    }

    /// 2.1.1.4.1: resources for zone `z` to become opened (`to_open`) or
    /// closed. A transition needing an active resource with none left is
    /// Too Many Active Zones; an open resource, Too Many Open Zones unless
    /// an implicitly opened zone can be closed (the oldest).
    fn resources(&mut self, z: u32, to_open: bool) -> Result<(), ZoneError> {
        let s = self.zones[z as usize].state;
        if s == Empty && self.mar.is_some_and(|m| self.count(active) >= m) {
            return Err(ZoneError::TooManyActive);
        }
        if to_open && !open(s) && self.mor.is_some_and(|m| self.count(open) >= m) {
            let oldest = (0..ZONES)
                .filter(|&v| v != z && self.zones[v as usize].state == ImplicitlyOpened)
                .min_by_key(|&v| self.since[v as usize]);
            match oldest {
                Some(v) => self.set(v, Closed),
                None => return Err(ZoneError::TooManyOpen),
            }
        }
        Ok(())
    }

    fn write(&mut self, z: u32, at: Option<u64>, nlb: u64) -> Result<u64, ZoneError> {
        let zone = self.zones[z as usize];
        match zone.state {
            Full => return Err(ZoneError::Full),
            Offline => return Err(ZoneError::Offline),
            ReadOnly => return Err(ZoneError::ReadOnly),
            _ => {}
        }
        if at.is_some_and(|a| a != zone.wp) {
            return Err(ZoneError::InvalidWrite);
        }
        if zone.wp + nlb > CAP {
            return Err(ZoneError::Boundary);
        }
        if matches!(zone.state, Empty | Closed) {
            self.resources(z, true)?;
            self.set(z, ImplicitlyOpened);
        }
        self.zones[z as usize].wp += nlb;
        if self.zones[z as usize].wp == CAP {
            self.set(z, Full);
        }
        Ok(zone.wp)
    }

    /// Figure 7 / 3.4.3.1 for one zone: `allowed` states move to `to`,
    /// `same` is a no-op, the rest is Invalid Zone State Transition.
    fn send(
        &mut self,
        z: u32,
        allowed: &[ZoneState],
        same: ZoneState,
        to: ZoneState,
    ) -> Result<(), ZoneError> {
        let s = self.zones[z as usize].state;
        if s == same {
            return Ok(());
        }
        if !allowed.contains(&s) {
            return Err(ZoneError::InvalidTransition);
        }
        if open(to) || to == Closed {
            self.resources(z, open(to))?;
        }
        self.set(z, to);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<u64, ZoneError> {
        let all = |m: &Model, from: &[ZoneState]| -> Vec<u32> {
            (0..ZONES)
                .filter(|&z| from.contains(&m.zones[z as usize].state))
                .collect()
        };
        let clear = |m: &mut Model, z: u32| {
            m.zones[z as usize].wp = 0;
            m.zones[z as usize].attrs = 0;
        };
        match *op {
            Op::Write { z, skew, nlb } => {
                let at = self.zones[z as usize].wp + skew;
                self.write(z, Some(at), nlb)
            }
            Op::Append { z, nlb } => self.write(z, None, nlb),
            Op::Open(z) => self
                .send(
                    z,
                    &[Empty, ImplicitlyOpened, Closed],
                    ExplicitlyOpened,
                    ExplicitlyOpened,
                )
                .map(|()| 0),
            Op::Close(z) => self
                .send(z, &[ImplicitlyOpened, ExplicitlyOpened], Closed, Closed)
                .map(|()| 0),
            Op::Finish(z) => self
                .send(
                    z,
                    &[Empty, ImplicitlyOpened, ExplicitlyOpened, Closed],
                    Full,
                    Full,
                )
                .map(|()| 0),
            Op::Reset(z) => {
                let was = self.zones[z as usize].state;
                self.send(
                    z,
                    &[ImplicitlyOpened, ExplicitlyOpened, Closed, Full],
                    Empty,
                    Empty,
                )?;
                if was != Empty {
                    clear(self, z);
                }
                Ok(0)
            }
            Op::Offline(z) => {
                self.send(z, &[ReadOnly], Offline, Offline)?;
                self.zones[z as usize].attrs &= !za::ZDEV;
                Ok(0)
            }
            Op::SetZde(z) => {
                if self.zones[z as usize].state != Empty {
                    return Err(ZoneError::InvalidTransition);
                }
                self.resources(z, false)?;
                self.set(z, Closed);
                self.zones[z as usize].attrs |= za::ZDEV;
                Ok(0)
            }
            Op::CloseAll => {
                for z in all(self, &[ImplicitlyOpened, ExplicitlyOpened]) {
                    self.set(z, Closed);
                }
                Ok(0)
            }
            Op::FinishAll => {
                for z in all(self, &[ImplicitlyOpened, ExplicitlyOpened, Closed]) {
                    self.set(z, Full);
                }
                Ok(0)
            }
            Op::ResetAll => {
                for z in all(self, &[ImplicitlyOpened, ExplicitlyOpened, Closed, Full]) {
                    self.set(z, Empty);
                    clear(self, z);
                }
                Ok(0)
            }
            Op::OfflineAll => {
                for z in all(self, &[ReadOnly]) {
                    self.set(z, Offline);
                    self.zones[z as usize].attrs &= !za::ZDEV;
                }
                Ok(0)
            }
            Op::OpenAll => {
                // 3.4.3.1.3: all Closed zones, or (no resources) no
                // transition at all.
                let closed = all(self, &[Closed]);
                let before = self.clone();
                for &z in &closed {
                    if let Err(e) = self.resources(z, true) {
                        *self = before;
                        return Err(e);
                    }
                    self.set(z, ExplicitlyOpened);
                }
                Ok(0)
            }
            Op::ReadOnly(z) => {
                if !matches!(self.zones[z as usize].state, ReadOnly | Offline) {
                    self.set(z, ReadOnly);
                }
                Ok(0)
            }
            Op::Recommend(z, bit) => {
                // FZR for opened or closed zones (5.5), RZR for Full ones (5.4).
                let zone = &mut self.zones[z as usize];
                let fits = if bit == za::FZR {
                    active(zone.state)
                } else {
                    zone.state == Full
                };
                let set = fits && zone.attrs & bit == 0;
                if set {
                    zone.attrs |= bit;
                }
                Ok(u64::from(set))
            }
            Op::TakeOffline(z) => {
                if self.zones[z as usize].state != Offline {
                    self.set(z, Offline);
                    self.zones[z as usize].attrs &= !za::ZDEV;
                }
                Ok(0)
            }
        }
    }
}

fn run(m: &mut Machine, op: &Op) -> Result<u64, ZoneError> {
    match *op {
        Op::Write { z, skew, nlb } => {
            let at = m.zone(z).wp + skew;
            m.write(z, Some(at), nlb)
        }
        Op::Append { z, nlb } => m.write(z, None, nlb),
        Op::Open(z) => m.open(z).map(|()| 0),
        Op::Close(z) => m.close(z).map(|()| 0),
        Op::Finish(z) => m.finish(z).map(|()| 0),
        Op::Reset(z) => m.reset(z).map(|_| 0),
        Op::Offline(z) => m.offline(z).map(|()| 0),
        Op::SetZde(z) => m.set_zde(z).map(|()| 0),
        Op::OpenAll => m.open_all().map(|_| 0),
        Op::CloseAll => Ok(m.close_all()).map(|_| 0),
        Op::FinishAll => Ok(m.finish_all()).map(|_| 0),
        Op::ResetAll => Ok(m.reset_all()).map(|_| 0),
        Op::OfflineAll => Ok(m.offline_all()).map(|_| 0),
        Op::ReadOnly(z) => {
            m.make_read_only(z);
            Ok(0)
        }
        Op::TakeOffline(z) => {
            m.make_offline(z);
            Ok(0)
        }
        Op::Recommend(z, bit) => Ok(u64::from(m.recommend(z, bit))),
    }
}

fn limits() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((0u32, 0u32)),
        (1..=3u32).prop_map(|n| (n, n)),
        (1..=3u32, 0..=3u32).prop_map(|(o, extra)| (o, (o + extra).min(ZONES))),
        (1..=3u32).prop_map(|o| (o, 0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn machine_follows_the_spec_tables((mor, mar) in limits(), ops in prop::collection::vec(op(), 1..80)) {
        let mut m = Machine::new(ZONES, CAP, mor, mar);
        let mut r = Model {
            zones: vec![Zone { state: Empty, wp: 0, attrs: 0 }; ZONES as usize],
            since: vec![0; ZONES as usize],
            clock: 0,
            mor: (mor != 0).then_some(mor),
            mar: (mar != 0).then_some(mar),
        };
        for (i, op) in ops.iter().enumerate() {
            let got = run(&mut m, op);
            let want = r.apply(op);
            prop_assert_eq!(got, want, "step {} {:?}", i, op);
            let zones: Vec<Zone> = (0..ZONES).map(|z| m.zone(z)).collect();
            prop_assert_eq!(&zones, &r.zones, "zones after step {} {:?}", i, op);
            let (open_n, active_n) = m.resources();
            prop_assert_eq!((open_n, active_n), (r.count(open), r.count(active)));
            prop_assert!(mor == 0 || open_n <= mor, "more open zones than MOR allows");
            prop_assert!(mar == 0 || active_n <= mar, "more active zones than MAR allows");
        }
    }
}
