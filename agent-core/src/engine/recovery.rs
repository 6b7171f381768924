//! After a restart: the experiments a previous agent journaled are resumed for their
//! remaining time, or recorded as expired or cancelled.

use super::*;

/// What `recover` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub resumed: usize,
    pub expired: usize,
    pub not_resumed: usize,
    pub failed: usize,
    /// Read intact, but no longer a valid request.
    pub corrupt: usize,
}

impl Engine {
    /// Reads what a previous agent journaled: experiments whose deadline passed are recorded
    /// as expired, the others resumed for their remaining time (or, without `resume`,
    /// recorded as cancelled). Kernel leftovers were undone by the drivers before this.
    /// `entries` are the journal's intact records (the store moved the others aside).
    pub async fn recover(
        &self,
        entries: Vec<faultline_proto::v1::Experiment>,
        resume: bool,
    ) -> Recovered {
        let mut out = Recovered::default();
        let Some(j) = &self.journal else { return out };
        // Halted before the restart: nothing comes back.
        let halted = self.halted();
        // In the order they were first applied: faults on one target can depend on it (a
        // time skew applied before a pause shifts threads a pause would leave frozen, so
        // resumed the other way round it could not be applied).
        let mut entries = entries;
        entries.sort_by_key(|e| {
            let t = e.started_at.or(e.created_at).unwrap_or_default();
            (t.seconds, t.nanos, e.id.clone())
        });
        for e in entries {
            let id = e.id.clone();
            let req = journal::request_of(&e);
            let spec = match crate::wire::validate::inject(&req, &Default::default()) {
                Ok(s) => s,
                Err(err) => {
                    warn!(experiment = %id, error = %err, "journaled experiment no longer valid, dropped");
                    j.remove(&id);
                    out.corrupt += 1;
                    continue;
                }
            };
            let time = journal::time_of;
            let old = e.resolved_target.clone().unwrap_or_default();
            let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let old_cgroup = old.interface.is_empty().then(|| model::ResolvedCgroup {
                path: old.cgroup_path.clone(),
                id: old.cgroup_id,
                mount: self.resolver.mount().to_path_buf(),
                container_id: given(&old.container_id),
                pod_uid: given(&old.pod_uid),
                container_name: given(&old.container_name),
                ..Default::default()
            });
            let mut snap = Snapshot {
                id: id.clone(),
                spec: spec.clone(),
                state: State::Pending,
                reason: String::new(),
                resolved: old_cgroup.clone().map(Resolved::Cgroup),
                backend: e.backend.clone(),
                note: String::new(),
                created_at: time(&e.created_at).unwrap_or_else(SystemTime::now),
                started_at: time(&e.started_at),
                deadline: time(&e.deadline),
                ended_at: None,
                first_hit_at: None,
                counters: Counters::default(),
                lease_expires: time(&e.lease_expires_at),
                abort: None,
                no_hit: false,
                followed: e.followed,
            };
            let now = SystemTime::now();
            let left = snap.deadline.and_then(|d| d.duration_since(now).ok()).unwrap_or_default();
            let ended = |mut snap: Snapshot, state: State, reason: &str, at: SystemTime| {
                snap.state = state;
                snap.reason = reason.to_string();
                snap.ended_at = Some(at);
                info!(experiment = %snap.id, state = ?state, reason, "recovered from the journal");
                self.insert(snap);
                j.remove(&id);
            };
            if left.is_zero() {
                let at = snap.deadline.unwrap_or(now);
                ended(snap, State::Expired, "expired while the agent was down", at);
                out.expired += 1;
                continue;
            }
            // A lease that ran out meanwhile: its client is gone, as the lease is there to say.
            if let Some(until) = snap.lease_expires.filter(|u| *u <= now) {
                ended(snap, State::Failed, "lease expired while the agent was down", until);
                out.failed += 1;
                continue;
            }
            if let Some(h) = &halted {
                ended(snap, State::Cancelled, &format!("halted: {}", h.reason), now);
                out.not_resumed += 1;
                continue;
            }
            if !resume {
                ended(snap, State::Cancelled, "not resumed after a restart (--no-resume)", now);
                out.not_resumed += 1;
                continue;
            }
            // The same target, or none: a new container with the old name is not it, unless
            // the experiment follows its container (found as its watch task would).
            let resolver = self.resolver.clone();
            let target = match &old_cgroup {
                Some(cg) if follow::follows(&spec) => follow::successor_target(&spec.target, cg),
                _ => spec.target.clone(),
            };
            let now_resolved = tokio::task::spawn_blocking(move || resolver.resolve(&target)).await;
            let same = match &now_resolved {
                Ok(Ok(Resolved::Cgroup(c))) if c.id != old.cgroup_id && follow::follows(&spec) => {
                    snap.followed += 1;
                    info!(experiment = %id, cgroup = %c.path, "its container restarted while the agent was down: following it");
                    true
                }
                Ok(Ok(Resolved::Cgroup(c))) => c.id == old.cgroup_id,
                Ok(Ok(Resolved::Interface(i))) => i.ifindex == old.ifindex,
                _ => false,
            };
            let (true, Ok(Ok(resolved))) = (same, now_resolved) else {
                ended(snap, State::Failed, "target gone while the agent was down", now);
                out.failed += 1;
                continue;
            };
            snap.resolved = Some(resolved.clone());
            let started = snap.started_at.unwrap_or(now);
            let deadline = snap.deadline.unwrap_or(now + left);
            self.insert(snap);
            match self.activate(&id, &spec, resolved, started, deadline, None).await {
                Ok(_) => {
                    info!(experiment = %id, left = ?left, "resumed from the journal");
                    out.resumed += 1;
                }
                Err(err) => {
                    warn!(experiment = %id, error = %err, "could not resume");
                    out.failed += 1;
                }
            }
        }
        out
    }
}
