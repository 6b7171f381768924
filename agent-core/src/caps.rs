//! Capability probe: what this kernel can do, learned by loading and attaching real programs
//! and creating real objects (in scratch cgroups and network namespaces), never from
//! version strings.

use std::{path::Path, sync::Arc};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, Lsm, ProgramType, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
    sys::{BpfHelper, is_helper_supported},
};

use crate::kernel::{
    self, lsm,
    probes::probe_atomic_fetch,
    rtnl::{Netlink, Qdisc},
};
use crate::{
    engine::error::chain,
    faults::net::{self, NetDriver},
};

#[derive(Clone, Debug)]
pub struct Probe {
    pub name: &'static str,
    pub supported: bool,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct FaultSupport {
    pub fault: &'static str,
    pub supported: bool,
    pub backend: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct Capabilities {
    pub kernel_release: String,
    pub cgroup2_mount: String,
    pub btf: bool,
    pub probes: Vec<Probe>,
    pub faults: Vec<FaultSupport>,
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn result(name: &'static str, r: Result<String, String>) -> Probe {
    match r {
        Ok(detail) => Probe { name, supported: true, detail },
        Err(detail) => Probe { name, supported: false, detail },
    }
}

/// A scratch cgroup under the mount, removed when dropped.
struct ScratchCgroup(std::path::PathBuf);

impl ScratchCgroup {
    fn new(mount: &Path, tag: &str) -> Result<Self, String> {
        let dir = mount.join(format!("faultline-probe-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating scratch cgroup {}: {e}", dir.display()))?;
        Ok(ScratchCgroup(dir))
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn probe_sock_addr(ebpf: &mut Ebpf, mount: &Path) -> Result<String, String> {
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut("fl_probe_connect4")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| chain(&e))?;
    prog.load().map_err(|e| format!("connect4 program refused at load: {}", chain(&e)))?;
    let cg = ScratchCgroup::new(mount, "sockaddr")?;
    let dir = std::fs::File::open(&cg.0).map_err(|e| e.to_string())?;
    let id = prog
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| format!("connect4 attach refused: {}", chain(&e)))?;
    prog.detach(id).map_err(|e| chain(&e))?;
    Ok("connect4 program loaded and attached to a scratch cgroup".into())
}

fn probe_lsm(ebpf: &mut Ebpf) -> Result<String, String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let prog: &mut Lsm = ebpf
        .program_mut("fl_probe_lsm")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| chain(&e))?;
    prog.load("file_open", &btf)
        .map_err(|e| format!("lsm/file_open refused at load: {}", chain(&e)))?;
    let id =
        prog.attach().map_err(|e| format!("lsm/file_open refused at attach: {}", chain(&e)))?;
    for _ in 0..3 {
        let _ = std::fs::File::open("/proc/self/status");
    }
    let hits = ebpf
        .map("FL_PROBE_HITS")
        .ok_or("probe map missing")
        .and_then(|m| aya::maps::Array::<_, u64>::try_from(m).map_err(|_| "probe map type"))
        .and_then(|a| a.get(&0, 0).map_err(|_| "reading probe map"))
        .map_err(String::from);
    if let Some(prog) = ebpf.program_mut("fl_probe_lsm").and_then(|p| <&mut Lsm>::try_from(p).ok())
    {
        let _ = prog.detach(id);
    }
    match hits? {
        0 => Err("lsm/file_open attached but never ran: bpf is not an active LSM (boot with lsm=...,bpf)".into()),
        n => Ok(format!("lsm/file_open loaded, attached and ran ({n} calls seen)")),
    }
}

/// tcx and clsact + cls_bpf on `lo` of a scratch network namespace. The object moves to the
/// probe thread, so this runs last.
fn probe_tc(mut ebpf: Ebpf) -> (Probe, Probe) {
    let r = kernel::netns::in_scratch_netns(move || {
        let prog: &mut SchedClassifier = match ebpf
            .program_mut("fl_probe_tc")
            .ok_or_else(|| "probe program missing".to_string())
            .and_then(|p| p.try_into().map_err(|e| chain(&e)))
        {
            Ok(p) => p,
            Err(e) => return (Err(e.clone()), Err(e)),
        };
        if let Err(e) = prog.load() {
            let e = format!("sched_cls program refused at load: {}", chain(&e));
            return (Err(e.clone()), Err(e));
        }
        let tcx = prog
            .attach_with_options(
                "lo",
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(Default::default()),
            )
            .map(|id| {
                let _ = prog.detach(id);
                "attached to a device through a tcx link".to_string()
            })
            .map_err(|e| format!("tcx attach refused: {}", chain(&e)));
        let clsact = tc::qdisc_add_clsact("lo")
            .map_err(|e| format!("adding clsact: {}", chain(&e)))
            .and_then(|()| {
                prog.attach_with_options(
                    "lo",
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map(|id| {
                    let _ = prog.detach(id);
                    "clsact qdisc added, cls_bpf filter attached (direct action)".to_string()
                })
                .map_err(|e| format!("cls_bpf attach refused: {}", chain(&e)))
            });
        (tcx, clsact)
    });
    let (tcx, clsact) = r.unwrap_or_else(|e| (Err(e.clone()), Err(e)));
    (result("tcx", tcx), result("clsact_cls_bpf", clsact))
}

/// Adds `kind` as the root qdisc of `lo` in a scratch network namespace.
fn probe_qdisc(name: &'static str, kind: &'static str, options: Vec<u8>) -> Probe {
    let r = kernel::netns::in_scratch_netns(move || -> Result<String, String> {
        let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        let q = Qdisc {
            ifindex: 1,
            handle: 0,
            parent: crate::kernel::rtnl::TC_H_ROOT,
            kind: kind.into(),
            options,
        };
        nl.add_qdisc(&q, true).map_err(|e| {
            format!("adding a {kind} qdisc: {e} (is sch_{kind} built or loadable?)")
        })?;
        let root = nl
            .qdiscs(1)
            .map_err(|e| format!("listing qdiscs: {e}"))?
            .into_iter()
            .find(|q| q.parent == crate::kernel::rtnl::TC_H_ROOT);
        let Some(root) = root.filter(|r| r.kind == kind) else {
            return Err(format!("{kind} was accepted but is not the root qdisc"));
        };
        nl.del_qdisc(1, root.handle, crate::kernel::rtnl::TC_H_ROOT)
            .map_err(|e| format!("deleting the {kind} qdisc: {e}"))?;
        Ok(format!("{kind} qdisc added as root of a scratch device, listed and deleted"))
    });
    result(name, r.and_then(|r| r))
}

/// How system calls are failed here: the backend probe and the syscall_errno fault.
fn sys_support(sys: &Result<Arc<crate::faults::sys::SysDriver>, String>) -> (Probe, FaultSupport) {
    match sys {
        Err(e) => (
            Probe { name: "sys_file_backend", supported: false, detail: e.clone() },
            FaultSupport {
                fault: "syscall_errno",
                supported: false,
                backend: "",
                reason: format!("unsupported: {e}"),
            },
        ),
        Ok(d) => {
            let (backend, mut reason) = match d.files() {
                Ok(b) => (
                    match b {
                        crate::faults::sys::attach::FileBackend::Lsm => "lsm+cgroup_sock",
                        crate::faults::sys::attach::FileBackend::FmodRet => "fmod_ret+cgroup_sock",
                    },
                    "fsync and fdatasync need fmod_ret on syscall entries".to_string(),
                ),
                Err(e) => (
                    "cgroup_sock",
                    format!(
                        "socket calls only (connect, bind, sendmsg, socket): file calls need {e}"
                    ),
                ),
            };
            if !d.has_set_retval {
                reason += "; socket calls fail with EPERM only (no bpf_set_retval)";
            }
            if !d.exact {
                reason += "; every-Nth and max hits may overshoot under concurrent calls (no atomic fetch-and-add)";
            }
            let detail = match d.files() {
                Ok(b) => format!("file calls fail through {} programs", b.name()),
                Err(e) => e.clone(),
            };
            (
                Probe { name: "sys_file_backend", supported: d.files().is_ok(), detail },
                FaultSupport { fault: "syscall_errno", supported: true, backend, reason },
            )
        }
    }
}

/// What ptrace allows here: Yama's scope, if Yama is active.
fn ptrace_probe() -> Probe {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .ok();
    let forbidden = crate::faults::delay::driver::ptrace_forbidden();
    Probe {
        name: "ptrace_seize",
        supported: forbidden.is_none(),
        detail: match (forbidden, scope) {
            (Some(why), _) => why,
            (None, Some(s)) => {
                format!("kernel.yama.ptrace_scope={s}: the agent may seize processes")
            }
            (None, None) => "Yama is not active: the agent may seize processes".into(),
        },
    }
}

/// How system calls are delayed here: the exit hook, the marker signal, ptrace, and the
/// syscall_delay fault they make.
fn delay_support(d: crate::faults::delay::DelayProbe, ptrace: Probe) -> (Vec<Probe>, FaultSupport) {
    use crate::faults::delay::ExitHook;
    let hook = result(
        "delay_exit_hook",
        d.exit_hook
            .as_ref()
            .map(|h| {
                let fexit = d
                    .fexit_refused
                    .as_ref()
                    .map(|why| format!("; fexit refused: {why}"))
                    .unwrap_or_default();
                match h {
                    ExitHook::FExit => {
                        "fexit on each delayed system call's function attached (only those \
                         calls pass the program)"
                            .to_string()
                    }
                    ExitHook::TpBtf => format!(
                        "tp_btf on sys_exit attached (every system call on the node takes \
                         the traced exit path while a delay fault is active{fexit})"
                    ),
                    ExitHook::RawTp => format!(
                        "raw_tp on sys_exit attached (tp_btf refused: every read goes through \
                         bpf_probe_read_kernel{fexit})"
                    ),
                }
            })
            .map_err(Clone::clone),
    );
    let signal = result("send_signal_thread", d.send_signal_thread.clone());
    let walk = result(
        "delay_path_walk",
        d.path_walk.clone().map(|()| {
            "struct file, dentry and mount offsets from BTF: --path is matched in the kernel"
                .to_string()
        }),
    );
    let paths = match &d.path_walk {
        Ok(()) => "--path matched in the kernel by the directory's identity".to_string(),
        Err(why) => format!("no --path: {why}"),
    };
    // The path walk is optional: without it only --path is refused.
    let probes = vec![hook, signal, ptrace, walk];
    let missing = probes[..3].iter().find(|p| !p.supported);
    let fault = match (missing, &d.exit_hook) {
        (None, Ok(h)) => FaultSupport {
            fault: "syscall_delay",
            supported: true,
            backend: crate::faults::delay::driver::backend(*h),
            reason: format!(
                "{paths}; {cost}; a delayed process shows a TracerPid and cannot be debugged \
                 meanwhile",
                cost = match h {
                    ExitHook::FExit => {
                        "only calls of the delayed system calls pass the program (fexit)"
                    }
                    _ => {
                        "while a delay fault is active every system call on the node passes \
                         the syscall-exit tracepoint (tens of ns each)"
                    }
                }
            ),
        },
        (Some(p), _) => FaultSupport {
            fault: "syscall_delay",
            supported: false,
            backend: "",
            reason: format!("unsupported: {}: {}", p.name, p.detail),
        },
        (None, Err(e)) => FaultSupport {
            fault: "syscall_delay",
            supported: false,
            backend: "",
            reason: format!("unsupported: delay_exit_hook: {e}"),
        },
    };
    (probes, fault)
}

/// Each network fault and what it needs, from the probes' results.
fn net_faults(probes: &[Probe]) -> Vec<FaultSupport> {
    let get = |name: &str| probes.iter().find(|p| p.name == name);
    let ok = |name: &str| get(name).is_some_and(|p| p.supported);
    // The first missing requirement, as the reason.
    let missing = |needs: &[&str]| -> Option<String> {
        needs.iter().find(|n| !ok(n)).map(|n| {
            let detail = get(n).map(|p| p.detail.clone()).unwrap_or_default();
            format!("unsupported: {n}: {detail}")
        })
    };
    let tc = if ok("tcx") { "tcx" } else { "clsact_cls_bpf" };
    let fault = |fault, backend, needs: &[&str], partial: Option<String>| {
        let why = missing(needs);
        FaultSupport {
            fault,
            supported: why.is_none(),
            backend,
            reason: why.or(partial).unwrap_or_default(),
        }
    };
    let ingress_edt =
        missing(&[tc, "ifb_redirect", "skb_set_tstamp", "tc_sk_storage"]).map(|why| {
            format!("egress only: ingress needs {}", why.trim_start_matches("unsupported: "))
        });
    let interfaces =
        missing(&[tc]).map(|why| format!("cgroup targets only: interface targets need {why}"));
    vec![
        fault("net_loss", net::BACKEND, &["cgroup_skb"], interfaces.clone()),
        fault("net_partition", net::BACKEND, &["cgroup_skb"], interfaces),
        fault(
            "net_reject",
            "cgroup_sock_addr",
            &["cgroup_skb", "cgroup_sock_addr"],
            (!ok("sock_addr_set_retval")).then(|| {
                "EPERM only: bpf_set_retval is missing (kernel 5.18+ fails connect() with any errno)"
                    .into()
            }),
        ),
        fault("net_delay", "cgroup_skb+fq", &["cgroup_skb", "sch_fq"], ingress_edt.clone()),
        fault("net_bandwidth", "cgroup_skb+fq", &["cgroup_skb", "sch_fq"], ingress_edt),
        fault("net_corrupt", "tc", &["cgroup_skb", tc], None),
        fault("net_duplicate", "tc", &["cgroup_skb", tc], None),
        fault("net_dns", "cgroup_sock_addr", &["cgroup_skb", "cgroup_sock_addr"], None),
    ]
}

/// The probe with no agent running (`faultline caps` when none answers): loads the packet and
/// system-call programs as the agent does, runs every probe, and drops them all on return.
/// Nothing is journaled: the network driver's journal goes to a scratch directory, removed.
pub fn probe_here(debug: bool) -> Result<Capabilities, String> {
    let resolver = crate::targets::Resolver::from_host().map_err(|e| e.to_string())?;
    let scratch = std::env::temp_dir().join(format!("faultline-caps-{}", std::process::id()));
    let net = NetDriver::load(&scratch, debug).map(Arc::new);
    let sys = crate::faults::sys::SysDriver::load(debug).map(Arc::new);
    let caps = probe(resolver.mount(), &net, &sys);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(caps)
}

/// Runs every probe. `mount` is the cgroup2 mount; `net` is the loaded packet driver.
pub fn probe(
    mount: &Path,
    net: &Result<Arc<NetDriver>, String>,
    sys: &Result<Arc<crate::faults::sys::SysDriver>, String>,
) -> Capabilities {
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let mut probes = Vec::new();

    let skb = match net {
        Ok(driver) => result(
            "cgroup_skb",
            driver.probe_attach(mount).map(|()| {
                "ingress and egress programs loaded and attached to a scratch cgroup".into()
            }),
        ),
        Err(e) => Probe { name: "cgroup_skb", supported: false, detail: e.clone() },
    };
    let set_retval = matches!(net, Ok(d) if d.has_set_retval);
    probes.push(skb);
    probes.push(Probe {
        name: "sock_addr_set_retval",
        supported: set_retval,
        detail: if set_retval {
            "cgroup sock_addr programs may call bpf_set_retval (any errno)".into()
        } else {
            "bpf_set_retval unavailable to cgroup sock_addr programs (EPERM only)".into()
        },
    });

    match Ebpf::load(kernel::ebpf_object()) {
        Ok(mut ebpf) => {
            probes.push(result("cgroup_sock_addr", probe_sock_addr(&mut ebpf, mount)));
            probes.push(result("lsm", probe_lsm(&mut ebpf)));
            let (tcx, clsact) = probe_tc(ebpf);
            probes.push(tcx);
            probes.push(clsact);
        }
        Err(e) => {
            for name in ["cgroup_sock_addr", "tcx", "clsact_cls_bpf", "lsm"] {
                probes.push(Probe {
                    name,
                    supported: false,
                    detail: format!("eBPF object: {}", chain(&e)),
                });
            }
        }
    }
    probes.push(result(
        "fmod_ret_security",
        kernel::tracing::fmod_ret("security_file_open")
            .map(|()| "fmod_ret on security_file_open loaded and attached".into()),
    ));
    probes.push(result(
        "fmod_ret_syscall",
        kernel::tracing::fmod_ret("__x64_sys_openat")
            .map(|()| "fmod_ret on __x64_sys_openat loaded and attached".into()),
    ));
    probes.push(result(
        "kprobe_override",
        match is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_override_return) {
            Ok(true) => Ok("kprobe programs may call bpf_override_return".into()),
            Ok(false) => Err("bpf_override_return unavailable to kprobe programs".into()),
            Err(e) => Err(format!("kprobe program refused: {}", chain(&e))),
        },
    ));
    probes.push(result(
        "tc_netns_cookie",
        match is_helper_supported(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_get_netns_cookie,
        ) {
            Ok(true) => Ok("tc programs may call bpf_get_netns_cookie".into()),
            Ok(false) => Err("bpf_get_netns_cookie unavailable to tc programs".into()),
            Err(e) => Err(format!("probe failed: {}", chain(&e))),
        },
    ));
    probes.push(probe_qdisc(
        "sch_fq",
        "fq",
        crate::kernel::rtnl::fq_options(10_000, 1000, 10_000_000),
    ));
    probes.push(probe_qdisc("sch_netem", "netem", crate::kernel::rtnl::netem_options(1000)));
    let lsms = lsm::active_lsms();
    probes.push(Probe {
        name: "bpf_lsm_active",
        supported: lsm::bpf_lsm_inactive_in(lsms.clone()).is_none(),
        detail: match lsms {
            Ok(l) => format!("active LSMs: {}", l.join(",")),
            Err(why) => why,
        },
    });
    probes.push(Probe { name: "btf", supported: btf, detail: "/sys/kernel/btf/vmlinux".into() });
    probes.push(result(
        "skb_set_tstamp",
        match net {
            Ok(d) if d.has_set_tstamp => Ok("tc programs may call bpf_skb_set_tstamp".into()),
            Ok(_) => Err("bpf_skb_set_tstamp unavailable to tc programs (kernel 5.18+)".into()),
            Err(e) => Err(e.clone()),
        },
    ));
    probes.push(result(
        "tc_sk_storage",
        match net {
            Ok(d) if d.has_tc_sk_storage => Ok("tc programs may call bpf_sk_storage_get".into()),
            Ok(_) => Err("bpf_sk_storage_get unavailable to tc programs".into()),
            Err(e) => Err(e.clone()),
        },
    ));
    probes.push(result(
        "ifb_redirect",
        match net {
            Ok(d) => d.ifb_redirect().clone(),
            Err(e) => Err(e.clone()),
        },
    ));
    let mut faults = net_faults(&probes);
    probes.push(result(
        "atomic_fetch",
        probe_atomic_fetch().map(|()| {
            "programs may use atomic fetch-and-add (exact every-Nth and max hits)".into()
        }),
    ));
    let (sys_probe, sys_fault) = sys_support(sys);
    probes.push(sys_probe);
    faults.push(sys_fault);
    let (delay_probes, delay_fault) = delay_support(crate::faults::delay::probe(), ptrace_probe());
    probes.extend(delay_probes);
    faults.push(delay_fault);
    let skew = crate::faults::time::driver::probe();
    let raw = crate::faults::time::datapath::probe();
    faults.push(time_support(&skew, &raw));
    probes.push(result("vdso_patch", skew));
    probes.push(result("time_raw_syscall", raw));

    Capabilities {
        kernel_release: kernel_release(),
        cgroup2_mount: mount.display().to_string(),
        btf,
        probes,
        faults,
    }
}

/// The time_skew row: the vDSO patch is required, the raw-syscall programs widen it.
fn time_support(
    skew: &std::result::Result<String, String>,
    raw: &std::result::Result<String, String>,
) -> FaultSupport {
    use crate::faults::time::driver::{BACKEND, BACKEND_RAW};
    let (backend, reason) = match (skew, raw) {
        (Err(e), _) => ("", format!("unsupported: {e}")),
        (Ok(_), Ok(_)) => (
            BACKEND_RAW,
            "realtime clocks through the vDSO (clock_gettime, gettimeofday, time) and the raw \
             clock_gettime and gettimeofday system calls; file and socket times are not shifted"
                .into(),
        ),
        (Ok(_), Err(why)) => (
            BACKEND,
            format!(
                "realtime clocks through the vDSO (clock_gettime, gettimeofday, time); raw clock \
                 system calls are not shifted here ({why}); file and socket times are not shifted"
            ),
        ),
    };
    FaultSupport { fault: "time_skew", supported: skew.is_ok(), backend, reason }
}

#[cfg(test)]
mod delay_tests {
    use super::*;
    use crate::faults::delay::{DelayProbe, ExitHook};

    fn ptrace(ok: bool) -> Probe {
        Probe { name: "ptrace_seize", supported: ok, detail: "kernel.yama.ptrace_scope=3 x".into() }
    }

    #[test]
    fn the_delay_row_follows_its_probes() {
        let ok = DelayProbe {
            exit_hook: Ok(ExitHook::TpBtf),
            send_signal_thread: Ok("y".into()),
            path_walk: Ok(()),
            fexit_refused: Some("EPERM".into()),
        };
        let (probes, f) = delay_support(ok.clone(), ptrace(true));
        assert!(probes[0].detail.ends_with("; fexit refused: EPERM)"), "{:?}", probes[0]);
        let fexit =
            DelayProbe { exit_hook: Ok(ExitHook::FExit), fexit_refused: None, ..ok.clone() };
        let (_, f_fexit) = delay_support(fexit, ptrace(true));
        assert_eq!(f_fexit.backend, "fexit+ptrace");
        assert!(f_fexit.reason.contains("only calls of the delayed system calls"), "{f_fexit:?}");
        let names: Vec<_> = probes.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["delay_exit_hook", "send_signal_thread", "ptrace_seize", "delay_path_walk"]
        );
        assert!(f.supported && f.backend == "tp_btf+ptrace", "{f:?}");
        assert!(f.reason.starts_with("--path matched in the kernel"), "{f:?}");
        // Without the walk the fault still works, --path aside.
        let no_walk =
            DelayProbe { path_walk: Err("struct file has no member f_path".into()), ..ok.clone() };
        let (probes, f) = delay_support(no_walk, ptrace(true));
        assert!(f.supported && !probes[3].supported, "{f:?}");
        assert!(f.reason.starts_with("no --path: struct file has no member f_path"), "{f:?}");
        let raw = DelayProbe { exit_hook: Ok(ExitHook::RawTp), ..ok.clone() };
        assert_eq!(delay_support(raw, ptrace(true)).1.backend, "raw_tp+ptrace");
        let (_, f) = delay_support(ok.clone(), ptrace(false));
        assert!(!f.supported);
        assert_eq!(f.reason, "unsupported: ptrace_seize: kernel.yama.ptrace_scope=3 x");
        let no_signal = DelayProbe { send_signal_thread: Err("no marker".into()), ..ok };
        let (_, f) = delay_support(no_signal.clone(), ptrace(true));
        assert_eq!(f.reason, "unsupported: send_signal_thread: no marker");
        let none =
            DelayProbe { exit_hook: Err("refused".into()), path_walk: Ok(()), ..no_signal.clone() };
        let (_, f) = delay_support(none, ptrace(true));
        assert_eq!(
            (f.supported, f.reason.as_str()),
            (false, "unsupported: delay_exit_hook: refused")
        );
    }
}
