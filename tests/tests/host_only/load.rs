//! Load: many experiments on many cgroups, driven by many concurrent clients. No call that
//! should succeed fails, the agent's memory is flat from one round to the next (no leak), and
//! every fault is gone after. CI runs the reduced form (200 experiments, 20 clients, 10 s per
//! round); `cargo xtask bench` the full one (FAULTLINE_LOAD=full: 1,000, 100, 60 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};
use faultline_tests::{Agent, Cgroup, TempDir};

struct Scale {
    experiments: usize,
    clients: usize,
    round: Duration,
}

fn scale() -> Scale {
    if std::env::var("FAULTLINE_LOAD").as_deref() == Ok("full") {
        Scale { experiments: 1000, clients: 100, round: Duration::from_secs(60) }
    } else {
        Scale { experiments: 200, clients: 20, round: Duration::from_secs(10) }
    }
}

fn inject_req(cg: &str) -> pb::InjectRequest {
    // 1% loss on the discard port: a real rule on a real attachment that no traffic meets.
    let filter = pb::PacketFilter {
        protocol: pb::Protocol::Udp as i32,
        remote_ports: vec![pb::PortRange { first: 9, last: 9 }],
        ..Default::default()
    };
    pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cg.to_string())) }),
        fault: Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent: 1.0,
                filter: Some(filter),
                ..Default::default()
            })),
        }),
        duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        labels: [("load".to_string(), "yes".to_string())].into(),
        lease: None,
        ..Default::default()
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    failed: AtomicU64,
    /// Microseconds of every call, for the percentiles.
    latencies: std::sync::Mutex<Vec<u64>>,
}

impl Stats {
    fn record<T>(&self, t0: Instant, r: &Result<T, tonic::Status>, what: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.latencies.lock().unwrap().push(t0.elapsed().as_micros() as u64);
        if let Err(e) = r {
            self.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("{what} failed: {e:?}");
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies.lock().unwrap().clone();
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// How long a round's clients keep cancelling and re-injecting.
#[derive(Clone, Copy)]
enum Budget {
    Time(Instant),
    /// Cycles per client: the work the first round did in its time, so that later rounds
    /// are identical and their memory comparable.
    Cycles(usize),
}

/// One round: an experiment on every cgroup, then `clients` clients each cancelling and
/// re-injecting on their share of the cgroups and listing, within the budget; then every
/// experiment cancelled. Returns the cycles each client did.
async fn round(
    agent: &Agent,
    cgs: &[String],
    s: &Scale,
    budget: Budget,
    stats: &Arc<Stats>,
) -> Vec<usize> {
    let per = cgs.len().div_ceil(s.clients);
    let mut tasks = Vec::new();
    for share in cgs.chunks(per) {
        let share = share.to_vec();
        let stats = stats.clone();
        let mut c = FaultServiceClient::new(agent.channel().await);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for cg in &share {
                let t0 = Instant::now();
                let r = c.inject(inject_req(cg)).await;
                stats.record(t0, &r, "inject");
                ids.push(r.ok().and_then(|r| r.into_inner().experiment).map(|e| e.id));
            }
            let mut i = 0;
            while match budget {
                Budget::Time(t_end) => Instant::now() < t_end,
                Budget::Cycles(n) => i < n,
            } {
                let k = i % share.len();
                if let Some(id) = ids[k].take() {
                    let t0 = Instant::now();
                    let r = c.cancel(pb::CancelRequest { id }).await;
                    stats.record(t0, &r, "cancel");
                }
                let t0 = Instant::now();
                let r = c.inject(inject_req(&share[k])).await;
                stats.record(t0, &r, "inject");
                ids[k] = r.ok().and_then(|r| r.into_inner().experiment).map(|e| e.id);
                if i % 10 == 0 {
                    let t0 = Instant::now();
                    let r = c
                        .list(pb::ListRequest {
                            states: vec![pb::State::Active as i32],
                            ..Default::default()
                        })
                        .await;
                    stats.record(t0, &r, "list");
                }
                i += 1;
            }
            for id in ids.into_iter().flatten() {
                let t0 = Instant::now();
                let r = c.cancel(pb::CancelRequest { id }).await;
                stats.record(t0, &r, "cancel");
            }
            i
        }));
    }
    let mut cycles = Vec::new();
    for t in tasks {
        cycles.push(t.await.unwrap());
    }
    cycles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_on_many_experiments_fail_nothing_and_leak_nothing() {
    // It measures the agent's CPU and latency under load, and loads the host: alone.
    let _alone = faultline_tests::serial::alone();
    let s = scale();
    let dir = TempDir::new("load");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("max_concurrent = {}\n", s.experiments + s.clients + 16))
        .unwrap();
    let agent = Agent::start_with(&["--config", policy.to_str().unwrap()]);
    let parent = Cgroup::new("load");
    let cgs: Vec<Cgroup> = (0..s.experiments).map(|i| parent.child(&format!("c{i}"))).collect();
    let rels: Vec<String> = cgs.iter().map(|c| c.rel.clone()).collect();
    let pid = agent.pid();
    let (rss_start, cpu0) = (rss_kib(pid), cpu_s(pid));

    let mut rss_after = Vec::new();
    let mut total = 0;
    // The first round runs for the round's time and warms up (the registry fills to its
    // bound of ended experiments, the allocator settles); the rounds after it repeat its
    // work, call for call per client, and must not grow.
    let rounds: usize =
        std::env::var("FAULTLINE_LOAD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut first_round_cycles = None;
    for n in 1..=rounds {
        let stats = Arc::new(Stats::default());
        let t0 = Instant::now();
        let budget = first_round_cycles.map_or(Budget::Time(t0 + s.round), Budget::Cycles);
        let cycles = round(&agent, &rels, &s, budget, &stats).await;
        first_round_cycles.get_or_insert(cycles.iter().sum::<usize>() / cycles.len().max(1));
        let took = t0.elapsed().as_secs_f64();
        let calls = stats.calls.load(Ordering::Relaxed);
        total += calls;
        // The ended experiments' timers and handles are gone once their drops ran.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_after.push(rss_kib(pid));
        eprintln!(
            "round {n}: {} experiments, {} clients, {calls} calls in {took:.1} s ({:.0}/s), \
             latency p50 {:.2} ms p99 {:.2} ms, agent RSS {} KiB",
            s.experiments,
            s.clients,
            calls as f64 / took,
            stats.percentile(0.5),
            stats.percentile(0.99),
            rss_after[n - 1]
        );
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0, "calls that should succeed failed");
    }
    let cpu = cpu_s(pid) - cpu0;
    eprintln!(
        "agent RSS {rss_start} KiB at start, after each round {rss_after:?} KiB; \
         {cpu:.1} CPU s for {total} calls"
    );
    // Flat after the warm-up: 2% plus 1 MiB of allocator noise at most.
    let (prev, last) = (rss_after[rounds - 2], rss_after[rounds - 1]);
    assert!(
        last <= prev + prev / 50 + 1024,
        "agent RSS grew from {prev} to {last} KiB over an identical round: {rss_after:?}"
    );

    // Every fault gone: no attachment, no journal entry, nothing active.
    for c in &cgs {
        assert_eq!(c.programs(), 0, "{} still has programs", c.rel);
    }
    let journal = agent.dir.path().join("state/experiments");
    let left: Vec<_> =
        std::fs::read_dir(&journal).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "journal entries left: {}", left.len());
    let active = agent.cli_json(&["ls", "--state", "active"]);
    assert!(active.as_array().unwrap().is_empty(), "{active}");
}
