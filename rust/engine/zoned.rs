//! The engine's side of zoned namespaces: zones attached to a namespace
//! as it opens, the calls the control plane makes (geometry, report,
//! Changed Zone List, the controller's own zone changes, which command
//! sets are enabled), and the zone a fault rule's command falls in. The
//! command set itself is in `crate::zns`.

use std::sync::Arc;

use super::trace::Fetched;
use super::{Engine, EngineError, NamespaceSpec, Shared};
use crate::backend::Backend;
use crate::cmd::io::Namespace;
use crate::spec::opcode::io as op;
use crate::spec::Sqe;
use crate::zns::persist::Companion;
use crate::zns::{Geometry, ZoneAction, ZoneState, Zones};

/// Called with a namespace's NSID when the controller changed one of its
/// zones by itself (the Zone Descriptor Changed notice).
pub type ZoneEventCallback = Arc<dyn Fn(u32) + Send + Sync>;

/// A zone as the control plane sees it: (ZSLBA, ZCAP, write pointer as
/// Zone Management Receive reports it, ZS, ZA).
pub type ZoneRow = (u64, u64, u64, u8, u8);

/// Gives namespace `nsid` (1-based) the zones `spec` asks for; a file
/// namespace keeps them in its companion file.
pub(super) fn attach(
    n: &mut Namespace,
    spec: &NamespaceSpec,
    nsid: usize,
) -> Result<(), EngineError> {
    let Some(zs) = &spec.zones else {
        return Ok(());
    };
    if spec.metadata.ms != 0 {
        // The zone rules live on the data path without metadata; a zoned
        // namespace with metadata would bypass them (rust/cmd/protect.rs).
        return Err(EngineError::Config(format!(
            "namespace {nsid}: a zoned namespace cannot have metadata or protection information \
             (yet); drop the zones or the metadata"
        )));
    }
    let cfg = |e: crate::zns::ZnsError| EngineError::Config(format!("namespace {nsid}: {e}"));
    let geo = zs
        .geometry(n.size_bytes(), 1 << n.lba_shift())
        .map_err(cfg)?;
    let (companion, readonly) = match &n.backend {
        Backend::File(f) => {
            let regular = std::fs::metadata(f.path()).is_ok_and(|m| m.is_file());
            if !regular {
                return Err(EngineError::Config(format!(
                    "namespace {nsid}: {} is not a regular file, so its zone state has nowhere to live \
                     beside it; serve an image file (its zones go to IMAGE.zones) or drop the zones",
                    f.path()
                )));
            }
            let path = Companion::path_for(f.path());
            (
                Some(Companion::open(&path, geo, f.readonly()).map_err(cfg)?),
                f.readonly(),
            )
        }
        _ => (None, false),
    };
    n.zones = Some(Box::new(Zones::new(geo, companion, readonly).map_err(cfg)?));
    Ok(())
}

impl Shared {
    /// Namespace `nsid`, if it is zoned: its zones are `ns.zones`.
    pub(super) fn zoned(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.namespace(nsid).filter(|ns| ns.zones.is_some())
    }

    /// The zones command `sqe` touches, first and last (a fault rule's
    /// `zone=N` matcher, and where its zone action applies).
    pub(super) fn zone_span(&self, sqe: &Sqe, cmd: &Fetched) -> Option<(u64, u64)> {
        let ns = self.zoned(cmd.nsid)?;
        let g = &ns.zones.as_deref()?.geo;
        let slba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
        let (first, last) = match sqe.opcode() {
            // Select All: every zone.
            op::ZONE_MGMT_SEND if sqe.cdw(13) & (1 << 8) != 0 => (0, u64::from(g.zones) - 1),
            op::ZONE_MGMT_SEND | op::ZONE_MGMT_RECV | op::ZONE_APPEND => {
                (g.zone_of(slba), g.zone_of(slba))
            }
            _ if cmd.nlb > 0 => (
                g.zone_of(cmd.slba),
                g.zone_of(cmd.slba.saturating_add(u64::from(cmd.nlb) - 1)),
            ),
            _ => return None,
        };
        (first < u64::from(g.zones)).then_some((first, last.min(u64::from(g.zones) - 1)))
    }

    /// A fault rule's zone action on zone `zone` of namespace `nsid`: true
    /// when the zone changed (a Zone Descriptor Changed event is due).
    pub(super) fn zone_fault(&self, nsid: u32, zone: u64, action: ZoneAction) -> bool {
        let Some(ns) = self.namespace(nsid) else {
            return false;
        };
        let Some(z) = ns.zones.as_deref() else {
            return false;
        };
        u32::try_from(zone)
            .ok()
            .filter(|&i| i < z.geo.zones)
            .is_some_and(|i| z.controller_action(i, action).unwrap_or(false))
    }

    /// Tells the control plane that namespace `nsid` has changed zones.
    pub(super) fn zone_event(&self, nsid: u32) {
        let cb = super::lock(&self.zone_events).clone();
        if let Some(cb) = cb {
            cb(nsid);
        }
    }
}

impl Engine {
    /// The geometry of namespace `nsid`, None when it is not zoned.
    pub fn zone_geometry(&self, nsid: u32) -> Option<Geometry> {
        Some(self.shared.zoned(nsid)?.zones.as_deref()?.geo)
    }

    /// Every zone of namespace `nsid` (None when it is not zoned).
    pub fn zone_report(&self, nsid: u32) -> Option<Vec<ZoneRow>> {
        let ns = self.shared.zoned(nsid)?;
        let z = ns.zones.as_deref()?;
        let g = z.geo;
        let rows = z
            .zones()
            .iter()
            .enumerate()
            .map(|(i, zone)| {
                let zslba = g.zslba(i as u32);
                let wp = if zone.state.wp_valid() {
                    zslba + zone.wp
                } else {
                    u64::MAX
                };
                (zslba, g.zcap, wp, zone.state as u8, zone.attrs)
            })
            .collect();
        Some(rows)
    }

    /// The data frontier of every zone of `nsid` (the write pointer, kept
    /// also where the host's is invalid): blocks at and above it read as zeroes.
    pub fn zone_frontiers(&self, nsid: u32) -> Option<Vec<(ZoneState, u64)>> {
        let ns = self.shared.zoned(nsid)?;
        let z = ns.zones.as_deref()?;
        Some(z.zones().iter().map(|zone| (zone.state, zone.wp)).collect())
    }

    /// (open, active) zones of `nsid` now.
    pub fn zone_resources(&self, nsid: u32) -> Option<(u32, u32)> {
        Some(self.shared.zoned(nsid)?.zones.as_deref()?.resources())
    }

    /// The Changed Zone List of `nsid` and whether it overflowed; `clear`
    /// empties it.
    pub fn take_changed_zones(&self, nsid: u32, clear: bool) -> Option<(Vec<u64>, bool)> {
        Some(
            self.shared
                .zoned(nsid)?
                .zones
                .as_deref()?
                .changed_zones(clear),
        )
    }

    /// Receives the NSID of a namespace whose zones the controller changed
    /// by itself (fault rules, [`Engine::zone_action`]).
    pub fn set_zone_event_handler(&self, cb: Option<ZoneEventCallback>) {
        *super::lock(&self.shared.zone_events) = cb;
    }

    /// The controller changes zone `zone` of `nsid` by itself; true when it
    /// changed (then it is in the Changed Zone List and the handler ran).
    pub fn zone_action(
        &self,
        nsid: u32,
        zone: u32,
        action: ZoneAction,
    ) -> Result<bool, EngineError> {
        let ns = self.shared.namespace(nsid);
        let Some(z) = ns.as_deref().and_then(|ns| ns.zones.as_deref()) else {
            return Err(EngineError::Config(format!(
                "namespace {nsid} is not zoned"
            )));
        };
        if zone >= z.geo.zones {
            return Err(EngineError::Config(format!(
                "zone {zone} does not exist: namespace {nsid} has zones 0..{}",
                z.geo.zones
            )));
        }
        let changed = z.controller_action(zone, action).map_err(|e| {
            EngineError::Config(format!(
                "the zone state file of namespace {nsid} cannot be written: {}",
                std::io::Error::from_raw_os_error(e)
            ))
        })?;
        if changed {
            self.shared.zone_event(nsid);
        }
        Ok(changed)
    }

    /// Which I/O command sets are enabled (CC.CSS): a namespace of another
    /// set is inactive (Invalid Field in Command). Namespaces added later
    /// follow the setting in force.
    pub fn set_io_command_sets(&self, nvm: bool, zoned: bool) {
        let _changing = super::lock(&self.shared.ns_lock);
        self.shared.css.store(
            u8::from(nvm) | u8::from(zoned) << 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        for (_, ns) in self.table().iter() {
            self.shared.apply_css(ns);
        }
    }
}

impl Shared {
    /// Makes `ns` inactive when CC.CSS leaves its command set disabled.
    pub(super) fn apply_css(&self, ns: &Namespace) {
        let css = self.css.load(std::sync::atomic::Ordering::Relaxed);
        let on = if ns.zones.is_some() {
            css & 2 != 0
        } else {
            css & 1 != 0
        };
        ns.set_inactive(crate::cmd::io::INACTIVE_CSS, !on);
    }
}
