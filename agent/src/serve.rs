//! The daemon: wires drivers, engine and gRPC together, and removes every fault on exit.

use std::{fs::File, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::watch;
use tracing::{error, info, warn};

use faultline_core::{
    caps,
    engine::Engine,
    faults::{
        Drivers,
        net::{NetDriver, devices, dns::Responders, fq::FqManager, ifb::Ifbs, plan::NetFaults},
        sys::LazySys,
    },
    store::Recoverer,
    targets::Resolver,
    wire::validate::Limits,
};

use crate::{api, cli::ServeArgs, telemetry};

/// Holds an exclusive flock on the state dir so two agents never share one. The directory
/// is made on a first start, when its parent exists; a missing parent (a volume that is not
/// mounted) or a directory that cannot be written stops the agent: every fault is journaled
/// there before it is applied.
fn lock_state_dir(args: &ServeArgs) -> anyhow::Result<Flock<File>> {
    let dir = &args.state_dir;
    if !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => bail!(
                "state directory {} is missing, and so is its parent {} (a volume not mounted?): \
                 nothing is started without the journal",
                dir.display(),
                p.display()
            ),
            _ => {
                std::fs::create_dir(dir)
                    .with_context(|| format!("creating state directory {}", dir.display()))?;
                info!(dir = %dir.display(), "state directory created");
            }
        }
    } else if !dir.is_dir() {
        bail!("state directory {} is not a directory", dir.display());
    }
    let path = dir.join("agent.lock");
    let f = match File::create(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => bail!(
            "state directory {} is read-only: every fault is journaled there before it is \
             applied ({e})",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    // A killed agent's lock goes with its last process; a helper it was forking when it died
    // holds a copy until its exec, a moment later (found by the crash campaign, once in 900
    // restarts). So the lock is tried for a little while before another agent is assumed.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut f = f;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, _)) if std::time::Instant::now() < deadline => {
                f = back;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => bail!("another agent holds {}", path.display()),
        }
    }
}

/// The TCP listener's settings: TLS unless the operator explicitly asked for plain text.
fn tcp_listener(args: &ServeArgs) -> anyhow::Result<Option<api::Tcp>> {
    let Some(addr) = args.tcp_listen else {
        if args.tls_cert.is_some() || args.token_file.is_some() {
            bail!("--tls-cert and --token-file apply to --tcp-listen, which is not set");
        }
        return Ok(None);
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
            if let Some(ca) = &args.tls_client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            Some(tls)
        }
        _ if args.insecure_tcp => None,
        _ => bail!(
            "--tcp-listen needs --tls-cert and --tls-key (add --tls-client-ca for mutual TLS), \
             or --insecure-tcp for plain text"
        ),
    };
    let token = match &args.token_file {
        Some(p) => {
            let t = String::from_utf8(read(p)?).context("token file is not UTF-8")?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                bail!("the token in {} is shorter than 16 characters", p.display());
            }
            Some(t)
        }
        None => None,
    };
    if args.rate_limit <= 0.0 || args.rate_burst < 1.0 {
        bail!("--rate-limit must be > 0 and --rate-burst >= 1");
    }
    Ok(Some(api::Tcp { addr, tls, token, rate: args.rate_limit, burst: args.rate_burst }))
}

/// Returns the free memory at the top and in the middle of glibc's heaps to the kernel, so
/// the agent's RSS follows what it holds, not what it once held (a few ms on a large heap).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: (no nix wrapper: glibc only) malloc_trim takes the allocator's own locks and
    // touches only free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn signalled(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "stopping: removing every fault");
    let _ = tx.send(true);
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, args.debug_bpf);
    if !nix::unistd::geteuid().is_root() {
        warn!("not running as root: loading eBPF programs will likely fail");
    }
    // First: without its journal the agent starts nothing.
    let _lock = lock_state_dir(&args)?;
    let mut policy = match &args.config {
        Some(path) => faultline_core::policy::Policy::load(path).map_err(|e| {
            // The toml crate's rendering (the line, a caret under the column) is for a person:
            // printed as it is, ahead of the one-line error that follows it.
            if let Some(excerpt) = &e.excerpt {
                eprintln!("{excerpt}\n");
            }
            anyhow::anyhow!("{e}")
        })?,
        None => faultline_core::policy::Policy::default(),
    };
    if let Some(d) = args.max_duration {
        policy.max_duration = d;
    }
    let from = match (&args.config, args.max_duration) {
        (Some(path), None) => path.display().to_string(),
        (Some(path), Some(_)) => format!("{} with --max-duration", path.display()),
        (None, None) => "built-in defaults".to_string(),
        (None, Some(_)) => "built-in defaults with --max-duration".to_string(),
    };
    info!("policy from {from}: {}", policy.summary());
    // Before anything is loaded: a socket directory that others may write is refused now.
    api::prepare_socket_dir(&args.socket)?;
    let resolver = Resolver::from_host()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_pods_log_dir(policy.pods_log_dir.clone());
    info!(cgroup2 = %resolver.mount().display(), kernel = %caps::kernel_release(), "starting");

    let net = NetDriver::load(&args.state_dir, args.debug_bpf).map(Arc::new);
    if let Err(e) = &net {
        warn!(error = %e, "network faults unavailable");
    }
    let fq = Arc::new(FqManager::new(&args.state_dir));
    let ifbs = Arc::new(Ifbs::new(&args.state_dir));
    let stress = Arc::new(faultline_core::faults::stress::StressDriver::new(
        &args.state_dir,
        policy.max_stress_memory,
    ));
    let process = Arc::new(faultline_core::faults::process::ProcessDriver::new(&args.state_dir));
    let sys = Arc::new(LazySys::new(args.debug_bpf));
    let drivers = Arc::new(Drivers {
        net: Arc::new(NetFaults {
            net: net.clone(),
            fq: fq.clone(),
            dns: Responders::new(),
            ifbs: ifbs.clone(),
        }),
        sys: sys.clone(),
        delay: Arc::new(faultline_core::faults::delay::DelayDriver::new(args.debug_bpf)),
        stress: stress.clone(),
        process: process.clone(),
        time: faultline_core::faults::time::driver::TimeDriver::default(),
    });
    let journal = faultline_core::engine::journal::Journal::new(&args.state_dir);
    let policy_max_duration = policy.max_duration;
    let engine = Engine::new(drivers, resolver.clone(), policy, Some(journal));
    // What a killed agent left, kind by kind, before anything is served: the tc filters it
    // attached over netlink, the qdiscs it replaced with fq, its ifb devices, the v1 cgroups
    // it created, the cgroups it froze and the vDSOs a killed time skewer patched are undone; after that (the kernel clean again)
    // its experiments are resumed or recorded as ended.
    let resume =
        faultline_core::engine::journal::Resume { engine: engine.clone(), resume: !args.no_resume };
    let tc = devices::Leftovers::new(&args.state_dir);
    let skew = faultline_core::faults::time::repair::Leftovers;
    // A killed agent's helpers (delay tracers, thaw guards, stress workers) are still ending
    // for a moment after it died: nothing is recovered or resumed until they are gone.
    faultline_core::faults::orphans::reap(Duration::from_secs(2));
    // Before the experiments: an agent halted when it died stays halted and resumes nothing.
    let halt = faultline_core::engine::halt::HaltRecovery(engine.clone());
    let kinds: [&dyn Recoverer; 8] =
        [&tc, &*fq, &*ifbs, &*stress, &*process, &skew, &halt, &resume];
    for kind in kinds {
        kind.run(&args.state_dir).await;
    }
    // After the halt record: an agent started halted is not halted again.
    engine.watch_node().map_err(|e| anyhow::anyhow!("policy guards: {e}"))?;
    // Loading parsed the eBPF object and the kernel's BTF more than once: tens of MiB that
    // are free now but stay in the heap unless handed back.
    release_free_heap();
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            release_free_heap();
        }
    });
    let mount = resolver.mount().to_path_buf();
    let caps: api::service::CapsFn = Arc::new(move || caps::probe(&mount, &net, sys.get()));

    let (tx, rx) = watch::channel(false);
    tokio::spawn(signalled(tx));
    // Faults are removed as soon as the signal arrives, while the servers drain.
    let remover = {
        let (engine, mut rx) = (engine.clone(), rx.clone());
        tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
            engine.shutdown().await;
        })
    };
    let metrics = Arc::new(telemetry::metrics::Metrics::default());
    let exporter = if args.no_metrics {
        None
    } else {
        let ex = telemetry::http::Exporter {
            engine: engine.clone(),
            metrics: metrics.clone(),
            grace: args.metrics_grace,
        };
        Some(telemetry::http::serve(args.metrics_addr, ex, rx.clone()).await?)
    };
    let audit = Arc::new(api::audit::Audit::open(
        &args.audit_log.clone().unwrap_or_else(|| args.state_dir.join("audit.log")),
    )?);
    let listen = api::Listen {
        socket: args.socket.clone(),
        tcp: tcp_listener(&args)?,
        max_request_bytes: args.max_request_bytes,
        audit,
    };
    let limits = Limits { policy_max_duration: Some(policy_max_duration), ..Limits::default() };
    let served = api::serve(engine.clone(), limits, caps, listen, metrics, rx.clone()).await;
    if let Some(t) = exporter {
        t.abort();
    }

    if *rx.borrow() {
        let _ = remover.await;
    } else {
        remover.abort();
    }
    // Also when serving failed without a signal. Only after this do the programs and maps
    // (held by the drivers) go away with the process.
    if tokio::time::timeout(Duration::from_secs(10), engine.shutdown()).await.is_err() {
        error!("timed out removing faults; exiting drops every kernel object anyway");
    }
    info!("stopped");
    served
}
