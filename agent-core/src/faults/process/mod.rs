//! Process faults: signals to the target's processes, and freezing them (cgroup v2 freezer).

mod freeze;
mod kill;

use std::path::Path;

use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle},
        error::{Error, Result},
        model::{FaultSpec, Plan, Resolved},
    },
    store::{BoxFuture, Recover, Store},
};

pub use freeze::guard_main;

/// Journals the cgroups it freezes (state dir), so a crash leaves none frozen.
pub struct ProcessDriver {
    journal: Store<freeze::Frozen>,
}

impl ProcessDriver {
    pub fn new(state_dir: &Path) -> ProcessDriver {
        ProcessDriver { journal: Store::new(state_dir) }
    }
}

impl Recover for ProcessDriver {
    type Record = freeze::Frozen;

    /// Thaws the cgroups an earlier agent froze and did not thaw (it crashed).
    fn recover(&self, records: Vec<freeze::Frozen>) -> BoxFuture<'_> {
        freeze::recover(&self.journal, records);
        Box::pin(std::future::ready(()))
    }
}

impl FaultDriver for ProcessDriver {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let cg = target.cgroup("process faults need a cgroup, pid, container or pod")?;
        match fault {
            FaultSpec::ProcessKill(k) => kill::start(cg, k, expires),
            FaultSpec::ProcessPause => freeze::freeze(cg, &self.journal, expires),
            other => Err(Error::Internal(format!("{} is not a process fault", other.kind()))),
        }
    }

    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        let cg = target.cgroup("process faults need a cgroup, pid, container or pod")?;
        match fault {
            FaultSpec::ProcessKill(k) => kill::plan(cg, k),
            FaultSpec::ProcessPause => freeze::plan(cg),
            other => Err(Error::Internal(format!("{} is not a process fault", other.kind()))),
        }
    }
}

/// Every process in the cgroup at `dir` and below it.
pub fn members(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}
