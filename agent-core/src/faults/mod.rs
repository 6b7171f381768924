//! Fault drivers, one module per family; each owns its kernel objects and implements
//! `FaultDriver`. `Drivers` only routes a fault to its family.

pub mod delay;
pub mod helper;
pub mod net;
pub mod orphans;
pub mod plan;
pub mod process;
pub mod spawn;
pub mod stress;
pub mod sys;
pub mod time;

use std::sync::Arc;

use crate::engine::{
    driver::{FaultDriver, FaultHandle},
    error::{Error, Result},
    model::{FaultSpec, Plan, Resolved},
};

/// Routes each fault to the driver of its family. A family whose kernel objects failed to
/// load answers every request with the reason, as "unsupported: ...".
pub struct Drivers {
    pub net: Arc<net::plan::NetFaults>,
    /// Loads its programs with the first system-call fault.
    pub sys: Arc<sys::LazySys>,
    /// Loads its datapath with the first delay fault.
    pub delay: Arc<delay::DelayDriver>,
    pub stress: Arc<stress::StressDriver>,
    pub process: Arc<process::ProcessDriver>,
    pub time: time::driver::TimeDriver,
}

impl Drivers {
    fn family(&self, fault: &FaultSpec) -> Result<&dyn FaultDriver> {
        Ok(match fault {
            FaultSpec::NetLoss(_)
            | FaultSpec::NetPartition(_)
            | FaultSpec::NetDelay(_)
            | FaultSpec::NetBandwidth(_)
            | FaultSpec::NetCorrupt(_)
            | FaultSpec::NetDuplicate(_)
            | FaultSpec::NetDns(_)
            | FaultSpec::NetReject(_) => self.net.as_ref(),
            FaultSpec::SyscallErrno(_) => self.sys.get().as_deref().map_err(|why| {
                Error::FailedPrecondition(format!("unsupported: system-call faults: {why}"))
            })?,
            FaultSpec::SyscallDelay(_) => self.delay.as_ref(),
            FaultSpec::CpuStress(_)
            | FaultSpec::MemoryStress(_)
            | FaultSpec::DiskFill(_)
            | FaultSpec::IoStress(_) => self.stress.as_ref(),
            FaultSpec::ProcessKill(_) | FaultSpec::ProcessPause => self.process.as_ref(),
            FaultSpec::TimeSkew(_) => &self.time,
        })
    }
}

impl FaultDriver for Drivers {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        self.family(fault)?.apply(target, fault, expires)
    }

    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        self.plan_fault(target, fault)
    }
}
