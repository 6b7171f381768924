//! Dry runs: `Drivers` routes a plan to its family, as it routes `apply`; each family plans
//! beside its apply. Here: how a plan names what it acts on.

use crate::{
    engine::{
        error::Result,
        model::{FaultSpec, Plan, Resolved, ResolvedCgroup},
    },
    kernel::ptrace::{comm, status_field},
};

/// Pids listed by name before "and N more".
const LISTED: usize = 10;

impl super::Drivers {
    pub(super) fn plan_fault(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        self.family(fault)?.plan(target, fault)
    }
}

/// "cgroup /a/b (id 1234)".
pub fn on_cgroup(cg: &ResolvedCgroup) -> String {
    format!("cgroup {} (id {})", cg.path, cg.id)
}

/// "pid 12", "pids 12, 13", "pids 1, 2, ... 10 and 5 more", "no process (none in it now)".
pub fn on_pids(pids: &[i32]) -> String {
    match pids {
        [] => "no process (none in the target now)".into(),
        [one] => format!("pid {one}"),
        _ => {
            let shown: Vec<String> = pids.iter().take(LISTED).map(i32::to_string).collect();
            let more = pids.len().saturating_sub(LISTED);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("pids {}{more}", shown.join(", "))
        }
    }
}

/// "device eth0 (ifindex 2, netns 4026531840)".
pub fn on_device(name: &str, ifindex: i32, netns_ino: u64) -> String {
    format!("device {name} (ifindex {ifindex}, netns {netns_ino})")
}

/// "traced by 1234 (strace)" when another tracer holds `pid`, as the ptrace helpers word it.
pub fn traced_by(pid: i32) -> Option<String> {
    status_field(pid, "TracerPid")
        .filter(|&t| t != 0)
        .map(|t| format!("traced by {t} ({})", comm(t)))
}

/// "1 process", "3 processes".
pub fn processes(n: usize) -> String {
    if n == 1 { "1 process".into() } else { format!("{n} processes") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lists_stop_at_ten() {
        assert_eq!(on_pids(&[]), "no process (none in the target now)");
        assert_eq!(on_pids(&[7]), "pid 7");
        assert_eq!(on_pids(&[7, 8]), "pids 7, 8");
        let many: Vec<i32> = (1..=13).collect();
        assert_eq!(on_pids(&many), "pids 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 3 more");
        let ten: Vec<i32> = (1..=10).collect();
        assert!(!on_pids(&ten).contains("more"));
    }

    #[test]
    fn targets_are_named_with_their_ids() {
        let cg = ResolvedCgroup { path: "/a/b".into(), id: 42, ..Default::default() };
        assert_eq!(on_cgroup(&cg), "cgroup /a/b (id 42)");
        assert_eq!(on_device("eth0", 2, 9), "device eth0 (ifindex 2, netns 9)");
        assert_eq!(processes(1), "1 process");
        assert_eq!(processes(0), "0 processes");
    }

    #[test]
    fn an_untraced_process_has_no_tracer() {
        assert_eq!(traced_by(std::process::id() as i32), None);
    }
}
