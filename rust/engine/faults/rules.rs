//! Fault rules: what a fetched command is matched on, and what is done to
//! it when a rule fires.
//!
//! A rule matches on the queue (any I/O queue, the admin queue, or one
//! queue ID), the opcode, the NSID, an LBA range (overlap with the
//! command's) and a zone (of a zoned namespace: one the command touches). A matching command counts as *matched*; the rule then lets
//! its first `skip` matches pass, fires with `probability` (a deterministic
//! draw from the rule's seed and the match's number, so a run can be
//! repeated), and stops firing after `count` hits. Rules are tried in the
//! order they were added and the first that fires decides: a command gets
//! one fault at most.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::trace::Fetched;
use crate::spec::opcode::io;
use crate::spec::Status;
use crate::zns::ZoneAction;

/// Errors of rule construction (embedder input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// The probability is not in (0, 1].
    #[error("probability {0} must be in (0, 1]")]
    Probability(String),
    /// An LBA range whose end is before its start.
    #[error("LBA range {first}..={last} is empty: the first LBA must not exceed the last")]
    LbaRange { first: u64, last: u64 },
    /// An action that cannot apply to the queue matched.
    #[error("{action} applies to I/O commands only; match queue \"io\" or an I/O queue ID")]
    IoOnly { action: &'static str },
    /// An LBA range on the admin queue (admin commands have none).
    #[error("admin commands have no LBA range; drop lba or match I/O queues")]
    AdminLba,
    /// Corrupt with an opcode other than Read.
    #[error(
        "corrupt changes the data a Read returns; it matches opcode 02h (read) only, not {0:#04x}"
    )]
    CorruptOpcode(u8),
    /// A status of Successful Completion would not be a fault.
    #[error("status 0/0 is Successful Completion; give a non-zero SCT or SC")]
    SuccessStatus,
    /// A zone matcher on the admin queue (admin commands touch no zone).
    #[error("admin commands touch no zone; drop zone or match I/O queues")]
    AdminZone,
    /// A delay longer than an hour (a typo of units, surely).
    #[error(
        "delay of {0} ns is longer than an hour; use \"never\" for a command that never completes"
    )]
    Delay(u64),
}

/// Which queues a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMatch {
    /// Every I/O queue.
    Io,
    /// The admin queue (queue 0).
    Admin,
    /// One queue by ID (0 is the admin queue).
    Qid(u16),
}

impl QueueMatch {
    fn admin(self) -> bool {
        matches!(self, QueueMatch::Admin | QueueMatch::Qid(0))
    }
}

/// What a rule matches (None: anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub queue: QueueMatch,
    pub opcode: Option<u8>,
    pub nsid: Option<u32>,
    /// Inclusive LBA range; matches commands whose range overlaps it (only
    /// commands with an LBA range: Read, Write, Compare, Write Zeroes, ...).
    pub lba: Option<(u64, u64)>,
    /// Zone index (of a zoned namespace); matches commands that touch it:
    /// an LBA range in it, or a zone command naming it (Select All: every zone).
    pub zone: Option<u64>,
}

/// What happens to a command a rule fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not executed; completes with this status (SCT, SC, DNR, More).
    Status(Status),
    /// Not executed; completes with Data Transfer Error (Parameter Error
    /// Location: the data pointer), retryable as a transport fault is.
    TransferError,
    /// Executed; its completion is posted `ns` nanoseconds later. With
    /// `abortable`, an Abort for it completes it at once with Command Abort
    /// Requested; otherwise Abort finds it not abortable.
    Delay { ns: u64, abortable: bool },
    /// Not executed and never completed (until a reset, a Delete SQ, or an
    /// Abort when `abortable`): the host's timeout paths.
    Never { abortable: bool },
    /// A Read executed, then byte `offset` of the data it returned is
    /// XORed with `xor` (past the end of the transfer: the last byte).
    Corrupt { offset: u32, xor: u8 },
    /// A Read executed, then the last byte of this protection information
    /// field of its first block is XORed with `xor` in what it returns (or,
    /// when the PI is stripped, before the device's own check).
    CorruptPi {
        field: crate::pi::tuple::Field,
        xor: u8,
    },
    /// Executed and posted; the interrupt of the batch carrying it is not sent.
    DropIrq,
    /// Executed and posted; the interrupt of the batch carrying it is sent
    /// `ns` nanoseconds late.
    DelayIrq { ns: u64 },
    /// The controller fails: CSTS.CFS, nothing more fetched, this command
    /// never completes (a controller reset recovers).
    Cfs,
    /// Surprise power loss: writes not yet flushed are dropped, every
    /// command is lost, the controller is off until powered on.
    PowerLoss,
    /// The controller's own change to the zone matched (the rule's zone,
    /// else the zone of the command's first LBA), with a Zone Descriptor
    /// Changed event when it changed; then the command runs.
    Zone(ZoneAction),
}

impl Action {
    /// The action's name in the rule language.
    pub fn name(self) -> &'static str {
        match self {
            Action::Status(_) => "status",
            Action::TransferError => "transfer-error",
            Action::Delay { .. } => "delay",
            Action::Never { .. } => "never",
            Action::Corrupt { .. } => "corrupt",
            Action::CorruptPi { .. } => "corrupt-pi",
            Action::DropIrq => "drop-irq",
            Action::DelayIrq { .. } => "delay-irq",
            Action::Cfs => "cfs",
            Action::PowerLoss => "power-loss",
            Action::Zone(ZoneAction::ReadOnly) => "zone-readonly",
            Action::Zone(ZoneAction::Offline) => "zone-offline",
            Action::Zone(ZoneAction::FinishRecommended) => "zone-finish-recommended",
            Action::Zone(ZoneAction::ResetRecommended) => "zone-reset-recommended",
        }
    }

    /// True when the command runs (its effects happen) before the fault.
    pub fn executes(self) -> bool {
        matches!(
            self,
            Action::Delay { .. }
                | Action::Corrupt { .. }
                | Action::CorruptPi { .. }
                | Action::DropIrq
                | Action::DelayIrq { .. }
        )
    }

    /// The PI field and XOR of a `corrupt-pi` action.
    pub fn pi_corruption(self) -> Option<(crate::pi::tuple::Field, u8)> {
        match self {
            Action::CorruptPi { field, xor } => Some((field, xor)),
            _ => None,
        }
    }

    /// True for the actions that change what a Read returns.
    fn corrupts(self) -> bool {
        matches!(self, Action::Corrupt { .. } | Action::CorruptPi { .. })
    }
}

/// How often a rule fires once it matches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Firing {
    /// Matches let through before the rule may fire.
    pub skip: u64,
    /// Hits after which the rule stops firing (0: no limit).
    pub count: u64,
    /// Chance of firing on each match past `skip`, in (0, 1].
    pub probability: f64,
    /// Seed of the deterministic draw.
    pub seed: u64,
}

impl Default for Firing {
    fn default() -> Self {
        Firing {
            skip: 0,
            count: 0,
            probability: 1.0,
            seed: 0,
        }
    }
}

/// One rule with its counters.
#[derive(Debug)]
pub struct Rule {
    pub id: u64,
    pub matcher: Match,
    pub action: Action,
    pub firing: Firing,
    /// `probability` as a threshold on a 64-bit draw (None: always).
    threshold: Option<u64>,
    matched: AtomicU64,
    hits: AtomicU64,
}

/// An hour: delays past it are refused (see [`RuleError::Delay`]).
const MAX_DELAY_NS: u64 = 3_600_000_000_000;

impl Rule {
    /// A rule, checked for contradictions.
    pub fn new(id: u64, matcher: Match, action: Action, firing: Firing) -> Result<Rule, RuleError> {
        let p = firing.probability;
        if !(p > 0.0 && p <= 1.0) {
            return Err(RuleError::Probability(format!("{p}")));
        }
        if let Some((first, last)) = matcher.lba {
            if first > last {
                return Err(RuleError::LbaRange { first, last });
            }
        }
        if matcher.queue.admin() {
            if matcher.lba.is_some() {
                return Err(RuleError::AdminLba);
            }
            if matcher.zone.is_some() {
                return Err(RuleError::AdminZone);
            }
            if action.corrupts() || matches!(action, Action::Zone(_)) {
                return Err(RuleError::IoOnly {
                    action: action.name(),
                });
            }
        }
        match action {
            Action::Corrupt { .. } | Action::CorruptPi { .. } => match matcher.opcode {
                None | Some(io::READ) => {}
                Some(o) => return Err(RuleError::CorruptOpcode(o)),
            },
            Action::Status(s) if s.is_success() => return Err(RuleError::SuccessStatus),
            Action::Delay { ns, .. } | Action::DelayIrq { ns } if ns > MAX_DELAY_NS => {
                return Err(RuleError::Delay(ns))
            }
            _ => {}
        }
        let threshold = (p < 1.0).then_some((p * u64::MAX as f64) as u64);
        Ok(Rule {
            id,
            matcher,
            action,
            firing,
            threshold,
            matched: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// Commands that matched (fired or not).
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::Relaxed)
    }

    /// Times the rule fired.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// True when `cmd`, touching zones `zones` (first, last) of a zoned
    /// namespace, matches the rule's matcher.
    fn matches(&self, cmd: &Fetched, zones: Option<(u64, u64)>) -> bool {
        let m = &self.matcher;
        if let Some(n) = m.zone {
            if !zones.is_some_and(|(a, b)| a <= n && n <= b) {
                return false;
            }
        }
        let queue = match m.queue {
            QueueMatch::Io => cmd.qid != 0,
            QueueMatch::Admin => cmd.qid == 0,
            QueueMatch::Qid(q) => cmd.qid == q,
        };
        if !queue
            || m.opcode.is_some_and(|o| o != cmd.opcode)
            || m.nsid.is_some_and(|n| n != cmd.nsid)
        {
            return false;
        }
        if self.action.corrupts() && cmd.opcode != io::READ {
            return false;
        }
        match m.lba {
            None => true,
            // Only commands with an LBA range (nlb > 0) overlap one.
            Some((first, last)) => {
                cmd.nlb > 0
                    && cmd.slba <= last
                    && cmd
                        .slba
                        .checked_add(u64::from(cmd.nlb) - 1)
                        .is_none_or(|end| end >= first)
            }
        }
    }

    /// Counts a match of `cmd` and decides whether the rule fires on it.
    fn fire(&self, cmd: &Fetched, zones: Option<(u64, u64)>) -> bool {
        if !self.matches(cmd, zones) {
            return false;
        }
        let n = self.matched.fetch_add(1, Ordering::Relaxed);
        if n < self.firing.skip {
            return false;
        }
        if let Some(t) = self.threshold {
            if draw(self.firing.seed, n) > t {
                return false;
            }
        }
        let count = self.firing.count;
        // A hit is taken atomically: two workers cannot both take the last.
        self.hits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (count == 0 || h < count).then_some(h + 1)
            })
            .is_ok()
    }

    /// True when the rule can never fire again (its count is used up).
    pub fn spent(&self) -> bool {
        self.firing.count != 0 && self.hits() >= self.firing.count
    }
}

/// splitmix64 of the seed and the match number: the same rule, seed and
/// command stream fire on the same commands every run.
fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The first rule of `rules` that fires on `cmd` (touching zones `zones`
/// of a zoned namespace): its id, action and zone matcher.
pub fn first_firing(
    rules: &[std::sync::Arc<Rule>],
    cmd: &Fetched,
    zones: Option<(u64, u64)>,
) -> Option<(u64, Action, Option<u64>)> {
    rules
        .iter()
        .find(|r| r.fire(cmd, zones))
        .map(|r| (r.id, r.action, r.matcher.zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn read(qid: u16, nsid: u32, slba: u64, nlb: u32) -> Fetched {
        Fetched {
            qid,
            opcode: io::READ,
            nsid,
            slba,
            nlb,
            ..Fetched::default()
        }
    }

    fn any_io() -> Match {
        Match {
            queue: QueueMatch::Io,
            opcode: None,
            nsid: None,
            lba: None,
            zone: None,
        }
    }

    impl Rule {
        fn matches_t(&self, cmd: &Fetched) -> bool {
            self.matches(cmd, None)
        }
        fn fire_t(&self, cmd: &Fetched) -> bool {
            self.fire(cmd, None)
        }
    }

    fn rule(m: Match, firing: Firing) -> Rule {
        Rule::new(1, m, Action::DropIrq, firing).unwrap()
    }

    #[test]
    fn matchers_select_queue_opcode_nsid_and_overlapping_lbas() {
        let r = rule(
            Match {
                queue: QueueMatch::Qid(2),
                opcode: Some(io::READ),
                nsid: Some(1),
                lba: Some((100, 199)),
                zone: None,
            },
            Firing::default(),
        );
        assert!(r.matches_t(&read(2, 1, 100, 1)));
        assert!(r.matches_t(&read(2, 1, 90, 11)), "overlaps its first LBA");
        assert!(r.matches_t(&read(2, 1, 199, 8)), "overlaps its last LBA");
        assert!(!r.matches_t(&read(2, 1, 90, 10)), "ends just before");
        assert!(!r.matches_t(&read(2, 1, 200, 1)), "starts just after");
        assert!(!r.matches_t(&read(1, 1, 100, 1)), "other queue");
        assert!(!r.matches_t(&read(2, 2, 100, 1)), "other namespace");
        let mut w = read(2, 1, 100, 1);
        w.opcode = io::WRITE;
        assert!(!r.matches_t(&w), "other opcode");
        let mut flush = read(2, 1, 0, 0);
        flush.opcode = io::FLUSH;
        let lba_only = rule(
            Match {
                lba: Some((0, u64::MAX)),
                ..any_io()
            },
            Firing::default(),
        );
        assert!(
            !lba_only.matches_t(&flush),
            "no LBA range, no overlap with one"
        );
        assert!(
            lba_only.matches_t(&read(1, 1, u64::MAX, 65536)),
            "no overflow at the end"
        );
        let io_rule = rule(any_io(), Firing::default());
        assert!(
            !io_rule.matches_t(&read(0, 0, 0, 0)),
            "io does not match admin"
        );
        let admin = rule(
            Match {
                queue: QueueMatch::Admin,
                ..any_io()
            },
            Firing::default(),
        );
        assert!(admin.matches_t(&read(0, 0, 0, 0)) && !admin.matches_t(&read(1, 1, 0, 1)));
    }

    #[test]
    fn skip_then_count_bound_the_hits() {
        let r = rule(
            any_io(),
            Firing {
                skip: 2,
                count: 3,
                ..Firing::default()
            },
        );
        let fired: Vec<bool> = (0..8).map(|i| r.fire_t(&read(1, 1, i, 1))).collect();
        assert_eq!(fired, [false, false, true, true, true, false, false, false]);
        assert_eq!((r.matched(), r.hits()), (8, 3));
        assert!(r.spent());
    }

    #[test]
    fn probability_is_a_repeatable_draw_near_its_rate() {
        let firing = Firing {
            probability: 0.25,
            seed: 7,
            ..Firing::default()
        };
        let a = rule(any_io(), firing);
        let b = rule(any_io(), firing);
        let fa: Vec<bool> = (0..4000).map(|i| a.fire_t(&read(1, 1, i, 1))).collect();
        let fb: Vec<bool> = (0..4000).map(|i| b.fire_t(&read(1, 1, i, 1))).collect();
        assert_eq!(fa, fb, "same seed, same commands, same hits");
        let hits = a.hits();
        assert!((800..1200).contains(&hits), "{hits} hits of 4000 at p=0.25");
        let c = rule(any_io(), Firing { seed: 8, ..firing });
        let fc: Vec<bool> = (0..4000).map(|i| c.fire_t(&read(1, 1, i, 1))).collect();
        assert_ne!(fa, fc, "another seed, other commands");
    }

    #[test]
    fn the_first_rule_that_fires_decides() {
        let once = Arc::new(
            Rule::new(
                1,
                any_io(),
                Action::Status(Status::WRITE_FAULT),
                Firing {
                    count: 1,
                    ..Firing::default()
                },
            )
            .unwrap(),
        );
        let always = Arc::new(Rule::new(2, any_io(), Action::DropIrq, Firing::default()).unwrap());
        let rules = [once.clone(), always.clone()];
        assert_eq!(
            first_firing(&rules, &read(1, 1, 0, 1), None).map(|(i, a, _)| (i, a)),
            Some((1, Action::Status(Status::WRITE_FAULT)))
        );
        assert_eq!(
            first_firing(&rules, &read(1, 1, 0, 1), None).map(|(i, a, _)| (i, a)),
            Some((2, Action::DropIrq))
        );
        assert_eq!((once.hits(), always.hits()), (1, 1));
        assert_eq!(always.matched(), 1, "the first command stopped at rule 1");
    }

    #[test]
    fn contradictions_are_refused_with_what_to_change() {
        let m = any_io();
        let f = Firing::default();
        let err = |m, a, f| Rule::new(1, m, a, f).unwrap_err();
        assert_eq!(
            err(
                m,
                Action::DropIrq,
                Firing {
                    probability: 0.0,
                    ..f
                }
            ),
            RuleError::Probability("0".into())
        );
        assert!(matches!(
            err(
                Match {
                    lba: Some((5, 4)),
                    ..m
                },
                Action::DropIrq,
                f
            ),
            RuleError::LbaRange { first: 5, last: 4 }
        ));
        let admin = Match {
            queue: QueueMatch::Admin,
            ..m
        };
        assert_eq!(
            err(admin, Action::Corrupt { offset: 0, xor: 1 }, f),
            RuleError::IoOnly { action: "corrupt" }
        );
        assert_eq!(
            err(
                Match {
                    lba: Some((0, 1)),
                    ..admin
                },
                Action::DropIrq,
                f
            ),
            RuleError::AdminLba
        );
        assert_eq!(
            err(
                Match {
                    opcode: Some(io::WRITE),
                    ..m
                },
                Action::Corrupt { offset: 0, xor: 1 },
                f
            ),
            RuleError::CorruptOpcode(io::WRITE)
        );
        assert_eq!(
            err(m, Action::Status(Status::SUCCESS), f),
            RuleError::SuccessStatus
        );
        assert!(matches!(
            err(
                m,
                Action::Delay {
                    ns: MAX_DELAY_NS + 1,
                    abortable: false
                },
                f
            ),
            RuleError::Delay(_)
        ));
    }

    #[test]
    fn corrupt_skips_commands_other_than_read() {
        let r = Rule::new(
            1,
            any_io(),
            Action::Corrupt { offset: 0, xor: 1 },
            Firing::default(),
        )
        .unwrap();
        let mut w = read(1, 1, 0, 1);
        w.opcode = io::WRITE;
        assert!(!r.fire_t(&w));
        assert!(r.fire_t(&read(1, 1, 0, 1)));
        assert_eq!(r.matched(), 1);
    }
}
