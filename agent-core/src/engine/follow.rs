//! Following a restarted container (`follow`): when an experiment's container goes and a new
//! one takes its place (a new cgroup for the same container), the fault moves onto it for the
//! rest of the experiment's duration.
//!
//! The successor is found the way the target was named, except for a Kubernetes container
//! given by id: its restarted instance has a new id, so it is found by its pod's uid and its
//! name in the pod spec, when the kubelet's log links told that name at inject time (else by
//! id only, which finds containers a runtime restarts under the same id: Docker, runc).
//! While no successor is there the experiment stays active, its note says it waits, and its
//! deadline ends it as usual.

use std::{
    sync::{Arc, Weak},
    time::SystemTime,
};

use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    Engine, EventKind,
    driver::{FaultHandle, monotonic_ns},
    model::{
        ContainerRef, Counters, ExperimentSpec, FaultSpec, PodRef, Resolved, ResolvedCgroup, State,
        TargetSpec,
    },
    watch::Watch,
};

/// What a followed experiment's watch task keeps.
pub(super) struct Follow {
    /// What finds the successor.
    target: TargetSpec,
    /// Since when the target has been gone (None while it is there).
    gone_since: Option<Instant>,
}

impl Follow {
    /// For an experiment that `follows`, on a container.
    pub(super) fn new(spec: &ExperimentSpec, resolved: &Resolved) -> Option<Self> {
        let Resolved::Cgroup(cg) = resolved else { return None };
        follows(spec)
            .then(|| Follow { target: successor_target(&spec.target, cg), gone_since: None })
    }
}

/// Whether the experiment moves onto its container's successor: injected with follow, and
/// not a kill sent once, which has done what it was asked when its container goes (a kill
/// with an interval kills the successor in turn, as a crash-loop drill wants).
pub(super) fn follows(spec: &ExperimentSpec) -> bool {
    spec.follow && !matches!(&spec.fault, FaultSpec::ProcessKill(k) if k.interval.is_none())
}

/// How the successor of `cg`, resolved from `target`, is found.
pub(super) fn successor_target(target: &TargetSpec, cg: &ResolvedCgroup) -> TargetSpec {
    let by_id = matches!(
        target,
        TargetSpec::Container(_) | TargetSpec::Pod { container: Some(ContainerRef::Id(_)), .. }
    );
    match (&cg.pod_uid, &cg.container_name, &cg.container_id) {
        (Some(uid), Some(name), _) if by_id => TargetSpec::Pod {
            pod: PodRef::Uid(uid.clone()),
            container: Some(ContainerRef::Name(name.clone())),
        },
        // The full id: a prefix another container shares later would be ambiguous.
        (None, _, Some(id)) if by_id => TargetSpec::Container(id.clone()),
        _ => target.clone(),
    }
}

/// The watch task saw its target gone (`why`): returns how the experiment ends, or None while
/// it follows (waiting for the successor, or moved onto it).
pub(super) async fn gone(me: &Weak<Engine>, w: &mut Watch, why: String) -> Option<(State, String)> {
    let ended = if w.ends_its_target { State::Expired } else { State::Failed };
    match (me.upgrade(), w.follow.is_some()) {
        (Some(engine), true) => engine.follow(w, why).await,
        _ => Some((ended, why)),
    }
}

impl Engine {
    async fn follow(&self, w: &mut Watch, why: String) -> Option<(State, String)> {
        let f = w.follow.as_mut()?;
        let since = match f.gone_since {
            Some(t) => t,
            None => {
                info!(experiment = %w.id, reason = %why, "target gone: waiting for its successor");
                self.set_note(&w.id, format!("waiting for the container to come back ({why})"));
                *f.gone_since.insert(Instant::now())
            }
        };
        let Resolved::Cgroup(old) = &w.target else { return Some((State::Failed, why)) };
        let (resolver, target, old_id) = (self.resolver.clone(), f.target.clone(), old.id);
        let found = tokio::task::spawn_blocking(move || resolver.resolve_cgroup(&target)).await;
        // Not there yet (or, for a moment, not one: an instance starting while the last
        // one's cgroup is removed): the next tick looks again.
        let Ok(Ok(new)) = found else { return None };
        if new.id == old_id {
            return None;
        }
        let end = self.move_to(w, new, since).await;
        if end.is_none()
            && let Some(f) = &mut w.follow
        {
            f.gone_since = None;
        }
        end
    }

    /// Applies the fault to the successor `new` until the experiment's deadline, then swaps
    /// it in for the old one's handle (dropped: its revert tolerates a vanished cgroup).
    async fn move_to(
        &self,
        w: &mut Watch,
        new: ResolvedCgroup,
        since: Instant,
    ) -> Option<(State, String)> {
        let (spec, deadline, lease_until) = {
            let reg = self.lock();
            let rec = reg.records.get(&w.id)?;
            // Being ended by another caller, who reverts what is there.
            if rec.snap.state != State::Active || rec.handle.is_none() {
                return None;
            }
            (rec.snap.spec.clone(), rec.snap.deadline?, rec.snap.lease_expires)
        };
        let resolved = Resolved::Cgroup(new.clone());
        if let Err(e) = self.policy.check(&spec, &resolved, self.resolver.own_cgroup(), 0) {
            return Some((State::Failed, format!("the restarted container is refused: {e}")));
        }
        // The kernel's deadline as at inject: the experiment's, or its lease's end if sooner.
        let now = SystemTime::now();
        let until = lease_until.map_or(deadline, |l| l.min(deadline));
        let left = until.duration_since(now).unwrap_or_default();
        let expires = monotonic_ns().saturating_add(left.as_nanos() as u64);
        let (driver, fault, target) = (self.driver.clone(), spec.fault.clone(), resolved.clone());
        let old = w.handle.clone();
        let span = tracing::info_span!("experiment", id = %w.id);
        // With what the old handle counted, carried over (the new one counts from zero).
        let applied = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let before = old.upgrade().map(|h| h.counters()).unwrap_or_default();
            driver
                .apply(&target, &fault, expires)
                .map(|h| (Arc::<dyn FaultHandle>::from(h), before))
        })
        .await;
        let (handle, before) = match applied {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                warn!(experiment = %w.id, cgroup = %new.path, error = %e,
                      "could not apply to the restarted container");
                return Some((State::Failed, format!("applying to the restarted container: {e}")));
            }
            Err(e) => {
                return Some((State::Failed, format!("applying to the restarted container: {e}")));
            }
        };
        let applied_in = since.elapsed();
        let swapped = {
            let mut reg = self.lock();
            match reg.records.get_mut(&w.id) {
                Some(rec) if rec.snap.state == State::Active && rec.handle.is_some() => {
                    let old = rec.handle.replace(handle.clone());
                    rec.snap.resolved = Some(resolved.clone());
                    rec.snap.followed += 1;
                    rec.snap.note.clear();
                    rec.snap.counters = carried(&rec.snap.counters, &before);
                    Some((old, rec.snap.clone()))
                }
                _ => None,
            }
        };
        let journal = self.journal.clone();
        let Some((old, snap)) = swapped else {
            // Ended meanwhile: what was just applied goes too.
            let _ = tokio::task::spawn_blocking(move || drop(handle)).await;
            return None;
        };
        w.handle = Arc::downgrade(&handle);
        w.target = resolved;
        // Journaled with the successor, so a restarted agent resumes on it.
        let record = crate::wire::convert::experiment(&snap);
        let live = tokio::task::spawn_blocking(move || {
            drop(old);
            if let Some(j) = journal
                && let Err(e) = j.put(&record)
            {
                warn!(error = %e, "journaling the followed container");
            }
            handle.counters()
        })
        .await
        .unwrap_or_default();
        info!(experiment = %w.id, cgroup = %new.path, cgroup_id = new.id,
              container = new.container_id.as_deref().unwrap_or(""), followed = snap.followed,
              applied_in_ms = applied_in.as_millis() as u64,
              "followed the restarted container: the fault acts on it");
        let mut shown = snap;
        shown.counters = carried(&shown.counters, &live);
        self.announce(EventKind::Followed, &shown);
        None
    }

    fn set_note(&self, id: &str, note: String) {
        if let Some(rec) = self.lock().records.get_mut(id) {
            rec.snap.note = note;
        }
    }
}

/// The counters of an experiment whose fault moved to a new handle: what the earlier ones
/// counted plus the live one's counts; a gauge (what is held now) is the live one's alone.
pub(super) fn carried(earlier: &Counters, live: &Counters) -> Counters {
    let (e, l) = (earlier, live);
    Counters {
        packets_matched: e.packets_matched + l.packets_matched,
        packets_dropped: e.packets_dropped + l.packets_dropped,
        packets_delayed: e.packets_delayed + l.packets_delayed,
        calls_seen: e.calls_seen + l.calls_seen,
        calls_failed: e.calls_failed + l.calls_failed,
        packets_corrupted: e.packets_corrupted + l.packets_corrupted,
        packets_duplicated: e.packets_duplicated + l.packets_duplicated,
        cpu_usage_usec: e.cpu_usage_usec + l.cpu_usage_usec,
        bytes_written: e.bytes_written + l.bytes_written,
        bytes_read: e.bytes_read + l.bytes_read,
        processes_signalled: e.processes_signalled + l.processes_signalled,
        calls_delayed: e.calls_delayed + l.calls_delayed,
        delay_added_usec: e.delay_added_usec + l.delay_added_usec,
        bytes_resident: l.bytes_resident,
        bytes_filled: l.bytes_filled,
        processes_frozen: l.processes_frozen,
        processes_skewed: l.processes_skewed,
        skewed_reads: l.skewed_reads,
        processes_unskewed: l.processes_unskewed,
    }
}
