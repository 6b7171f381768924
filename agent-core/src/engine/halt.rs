//! The halt switch: every active experiment of every family ended at once, and new ones
//! refused (FAILED_PRECONDITION "halted: REASON") until `resume`. Journaled (one record,
//! kind `halt`), so an agent restarted while halted stays halted and resumes nothing.

use std::{sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Engine,
    error::{Error, Result},
    model::{Snapshot, State},
};
use crate::store::{self, BoxFuture, Recover, Store};

/// The journaled halt: why, and since when (seconds since the epoch).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Halted {
    pub reason: String,
    pub since_s: u64,
}

impl store::Record for Halted {
    const KIND: &'static str = "halt";
    const VERSION: u32 = 1;
    fn key(&self) -> String {
        "halt".into()
    }
    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        store::json::encode(self)
    }
    fn decode(_version: u32, payload: &[u8]) -> std::result::Result<Self, String> {
        store::json::decode(payload)
    }
}

impl Engine {
    /// Why new experiments are refused, when the agent is halted.
    pub fn halted(&self) -> Option<Halted> {
        self.lock().halted.clone()
    }

    /// Refuses an Inject while halted.
    pub(super) fn check_not_halted(&self) -> Result<()> {
        match &self.lock().halted {
            Some(h) => Err(Error::FailedPrecondition(format!("halted: {}", h.reason))),
            None => Ok(()),
        }
    }

    /// Halts: journaled first, then every active experiment ends as cancelled ("halted:
    /// REASON"), all at once. Returns them. Halting a halted agent ends what is left and keeps
    /// the first reason.
    pub async fn halt(self: &Arc<Self>, reason: String) -> Result<Vec<Snapshot>> {
        let reason = if reason.trim().is_empty() { "no reason given".to_string() } else { reason };
        let record = {
            let mut reg = self.lock();
            let h = reg.halted.get_or_insert_with(|| Halted {
                reason,
                since_s: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
            h.clone()
        };
        if let Some(store) = self.halt_store() {
            store.put(&record).map_err(|e| Error::journal("the halt", &e))?;
        }
        let ids: Vec<String> = {
            let reg = self.lock();
            let live = |s: State| matches!(s, State::Active | State::Pending);
            reg.records
                .iter()
                .filter(|(_, r)| live(r.snap.state))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let why = format!("halted: {}", record.reason);
        // All at once: each revert runs on its own task.
        let ends: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let (engine, why) = (self.clone(), why.clone());
                tokio::spawn(async move { engine.end(&id, State::Cancelled, why).await })
            })
            .collect();
        let mut ended = Vec::new();
        for e in ends {
            if let Ok(Some(snap)) = e.await {
                ended.push(snap);
            }
        }
        warn!(reason = %record.reason, ended = ended.len(), "halted: every experiment ended");
        Ok(ended)
    }

    /// Lifts the halt; returns the one lifted, if the agent was halted.
    pub fn resume(&self) -> Option<Halted> {
        let was = self.lock().halted.take();
        if let Some(store) = self.halt_store() {
            store.remove("halt");
        }
        if let Some(h) = &was {
            info!(reason = %h.reason, "halt lifted: experiments are taken again");
        }
        was
    }
}

impl Engine {
    /// Where the halt is journaled: beside the experiments, in the same state directory.
    fn halt_store(&self) -> Option<Store<Halted>> {
        let dir = self.journal.as_ref()?.dir().parent()?.to_path_buf();
        Some(Store::new(&dir))
    }
}

/// The start's step for the halt record, before any experiment is resumed.
pub struct HaltRecovery(pub Arc<Engine>);

impl Recover for HaltRecovery {
    type Record = Halted;
    fn recover(&self, records: Vec<Halted>) -> BoxFuture<'_> {
        Box::pin(async move {
            if let Some(h) = records.into_iter().next() {
                warn!(reason = %h.reason, "started halted: nothing is resumed, Inject is refused");
                self.0.lock().halted = Some(h);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, h) in store::fixtures::<Halted>() {
            assert!(!h.reason.is_empty() && h.since_s > 0, "{release}: {h:?}");
        }
    }
}
