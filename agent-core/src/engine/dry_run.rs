//! Dry runs: an Inject checked all the way (validation happened before, then the halt, the
//! target, the policy, the kernel's support) and answered with what would be attached where,
//! applying and recording nothing: no record, no event, no journal entry.

use super::{
    Engine,
    error::{Error, Result},
    model::{ExperimentSpec, Plan},
};

impl Engine {
    pub async fn plan(&self, spec: ExperimentSpec) -> Result<Plan> {
        self.check_not_halted()?;
        let resolved = self.resolve(&spec).await?;
        self.admit(&self.lock(), &spec, &resolved)?;
        let driver = self.driver.clone();
        let (fault, target) = (spec.fault.clone(), resolved.clone());
        let mut plan = tokio::task::spawn_blocking(move || driver.plan(&target, &fault))
            .await
            .map_err(|e| Error::internal("planning", e))??;
        plan.resolved = Some(resolved);
        Ok(plan)
    }
}
