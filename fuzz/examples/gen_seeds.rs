//! Writes the seed inputs (seeds/validate, seeds/journal): one encoded InjectRequest per fault
//! kind and target kind, each checked to pass validation, and journal entries built from
//! them, both framed (whole files as the agent writes them) and bare (the message the journal
//! target frames itself). `cargo run --example gen_seeds` in fuzz/.

use std::{collections::HashMap, path::Path, time::Duration};

use faultline_core::{engine::journal, wire::validate};
use faultline_proto::v1::{self as pb, fault::Kind as F, target::Kind as T};
use prost::Message as _;

fn dur(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

fn ms(n: u64) -> Option<prost_types::Duration> {
    dur(Duration::from_millis(n))
}

fn filter(direction: pb::Direction, protocol: pb::Protocol) -> Option<pb::PacketFilter> {
    Some(pb::PacketFilter {
        direction: direction as i32,
        protocol: protocol as i32,
        remote_cidrs: vec!["10.0.0.0/8".into(), "2001:db8::/32".into(), "192.0.2.7".into()],
        exclude_cidrs: vec!["10.1.0.0/16".into()],
        remote_ports: vec![
            pb::PortRange { first: 443, last: 0 },
            pb::PortRange { first: 8000, last: 8080 },
        ],
    })
}

fn requests() -> Vec<(&'static str, pb::InjectRequest)> {
    use pb::{Direction as D, Protocol as P};
    let cgroup = T::CgroupPath("/kubepods/pod1".into());
    let pid = T::Pid(4242);
    let container = T::ContainerId("containerd://3f2a9c1be0d4".into());
    let pod = T::Pod(pb::Pod {
        uid: "6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e11".into(),
        container_id: "3f2a9c1b".into(),
        ..Default::default()
    });
    let iface = T::Interface(pb::NetworkInterface { name: "eth0".into(), netns: "blue".into() });
    let cases: Vec<(&str, T, F)> = vec![
        (
            "net_loss-cgroup",
            cgroup.clone(),
            F::NetLoss(pb::NetLoss {
                filter: filter(D::Egress, P::Tcp),
                percent: 12.5,
                seed: Some(7),
                ..Default::default()
            }),
        ),
        (
            "net_loss_burst-pid",
            pid.clone(),
            F::NetLoss(pb::NetLoss {
                filter: filter(D::Both, P::Udp),
                percent: 20.0,
                burst_length: 3.0,
                ..Default::default()
            }),
        ),
        (
            "net_loss_nth-interface",
            iface.clone(),
            F::NetLoss(pb::NetLoss {
                filter: filter(D::Ingress, P::Icmp),
                every_nth: 3,
                ..Default::default()
            }),
        ),
        (
            "net_delay-container",
            container.clone(),
            F::NetDelay(pb::NetDelay {
                filter: filter(D::Egress, P::Unspecified),
                latency: ms(100),
                jitter: ms(10),
                correlation: 25.0,
                distribution: pb::Distribution::Normal as i32,
                percent: Some(50.0),
                seed: Some(1),
                devices: vec!["eth0".into(), "lo".into()],
            }),
        ),
        (
            "net_delay-interface",
            iface.clone(),
            F::NetDelay(pb::NetDelay {
                filter: filter(D::Ingress, P::Tcp),
                latency: ms(250),
                distribution: pb::Distribution::Uniform as i32,
                ..Default::default()
            }),
        ),
        (
            "net_bandwidth-pod",
            pod.clone(),
            F::NetBandwidth(pb::NetBandwidth {
                filter: filter(D::Egress, P::Tcp),
                rate_bps: 1_000_000,
                burst_bytes: 3000,
                devices: vec!["eth0".into()],
            }),
        ),
        (
            "net_reject-cgroup",
            cgroup.clone(),
            F::NetReject(pb::NetReject {
                filter: filter(D::Unspecified, P::Tcp),
                errno: "EHOSTUNREACH".into(),
                percent: Some(50.0),
            }),
        ),
        (
            "net_partition-host",
            T::Host(true),
            F::NetPartition(pb::NetPartition { filter: filter(D::Unspecified, P::Unspecified) }),
        ),
        (
            "net_corrupt-interface",
            iface.clone(),
            F::NetCorrupt(pb::NetCorrupt {
                filter: filter(D::Ingress, P::Udp),
                percent: 1.0,
                seed: Some(99),
                devices: vec![],
            }),
        ),
        (
            "net_duplicate-cgroup",
            cgroup.clone(),
            F::NetDuplicate(pb::NetDuplicate {
                filter: filter(D::Egress, P::Udp),
                percent: 5.0,
                devices: vec!["eth0".into()],
            }),
        ),
        (
            "net_dns-pod",
            pod.clone(),
            F::NetDns(pb::NetDns {
                names: vec![
                    "db.example.com".into(),
                    "*.example.com".into(),
                    "redis-?.prod.*".into(),
                ],
                answer: pb::DnsAnswer::Servfail as i32,
                percent: Some(50.0),
                filter: Some(pb::PacketFilter {
                    remote_cidrs: vec!["10.96.0.10".into()],
                    ..Default::default()
                }),
            }),
        ),
        (
            "syscall_errno-pid",
            pid.clone(),
            F::SyscallErrno(pb::SyscallErrno {
                syscalls: vec!["openat".into(), "read".into(), "write".into()],
                errno: "ENOSPC".into(),
                percent: Some(50.0),
                max_hits: Some(10),
                path_prefix: "/var/lib/data".into(),
                follow_children: true,
                seed: Some(3),
                ..Default::default()
            }),
        ),
        (
            "syscall_errno_nth-container",
            container.clone(),
            F::SyscallErrno(pb::SyscallErrno {
                syscalls: vec!["connect".into(), "sendto".into(), "clone3".into(), "mmap".into()],
                errno: "5".into(),
                every_nth: Some(2),
                ..Default::default()
            }),
        ),
        (
            "cpu_stress-cgroup",
            cgroup.clone(),
            F::CpuStress(pb::CpuStress { workers: 2, load_percent: 50 }),
        ),
        (
            "memory_stress_bytes-pod",
            pod.clone(),
            F::MemoryStress(pb::MemoryStress {
                size: Some(pb::memory_stress::Size::Bytes(64 << 20)),
                workers: 2,
                ramp: ms(5000),
                oom_score_adj: Some(500),
            }),
        ),
        (
            "memory_stress_percent-pid",
            pid.clone(),
            F::MemoryStress(pb::MemoryStress {
                size: Some(pb::memory_stress::Size::Percent(10.0)),
                ..Default::default()
            }),
        ),
        (
            "io_stress-cgroup",
            cgroup.clone(),
            F::IoStress(pb::IoStress {
                workers: 2,
                mode: pb::IoMode::Mixed as i32,
                block_size: 64 << 10,
                direct: true,
                directory: "/tmp".into(),
                amount: Some(pb::io_stress::Amount::RateBytesPerSecond(10 << 20)),
            }),
        ),
        (
            "io_stress_bytes-container",
            container.clone(),
            F::IoStress(pb::IoStress {
                mode: pb::IoMode::Read as i32,
                amount: Some(pb::io_stress::Amount::Bytes(1 << 30)),
                ..Default::default()
            }),
        ),
        (
            "disk_fill_percent-cgroup",
            cgroup.clone(),
            F::DiskFill(pb::DiskFill {
                path: "/tmp".into(),
                amount: Some(pb::disk_fill::Amount::Percent(90.0)),
            }),
        ),
        (
            "disk_fill_bytes-pod",
            pod.clone(),
            F::DiskFill(pb::DiskFill {
                path: "/".into(),
                amount: Some(pb::disk_fill::Amount::Bytes(1 << 20)),
            }),
        ),
        (
            "process_kill-pid",
            pid.clone(),
            F::ProcessKill(pb::ProcessKill {
                signal: "TERM".into(),
                mode: pb::KillMode::RandomOne as i32,
                interval: ms(5000),
            }),
        ),
        (
            "process_kill-pod",
            pod.clone(),
            F::ProcessKill(pb::ProcessKill { signal: "9".into(), ..Default::default() }),
        ),
        ("process_pause-container", container.clone(), F::ProcessPause(pb::ProcessPause {})),
    ];
    cases
        .into_iter()
        .map(|(name, target, fault)| {
            let req = pb::InjectRequest {
                target: Some(pb::Target { kind: Some(target) }),
                fault: Some(pb::Fault { kind: Some(fault) }),
                duration: ms(90_000),
                labels: HashMap::from([("team".into(), "storage".into())]),
                lease: None,
                ..Default::default()
            };
            (name, req)
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let limits = validate::Limits::default();
    let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let mut n = 0;
    for (i, (name, req)) in requests().into_iter().enumerate() {
        if let Err(err) = validate::inject(&req, &limits) {
            return Err(format!("seed {name} does not validate: {err}").into());
        }
        write(&root.join("validate"), &format!("{name}.pb"), &req.encode_to_vec())?;
        // A journal entry for each: running, ended, or with a deadline far off.
        let (state, deadline) = match i % 3 {
            0 => (pb::State::Active, ts(4_102_444_800)),
            1 => (pb::State::Expired, ts(1_700_000_090)),
            _ => (pb::State::Pending, None),
        };
        let exp = pb::Experiment {
            id: format!("{:016x}", 0x5eed_0000_u64 + i as u64),
            target: req.target,
            fault: req.fault,
            duration: req.duration,
            labels: req.labels,
            state: state as i32,
            resolved_target: Some(pb::ResolvedTarget {
                cgroup_path: "/kubepods/pod1".into(),
                cgroup_id: 4242 + i as u64,
                cgroup_mount: "/sys/fs/cgroup".into(),
                ..Default::default()
            }),
            backend: "cgroup_skb".into(),
            created_at: ts(1_700_000_000),
            started_at: ts(1_700_000_000),
            deadline,
            counters: Some(pb::Counters { packets_matched: 10, ..Default::default() }),
            ..Default::default()
        };
        let entry = journal::encode(&exp);
        if journal::decode(&entry).as_ref() != Ok(&exp) {
            return Err(format!("journal seed {name} does not read back").into());
        }
        write(&root.join("journal"), &format!("{name}.exp"), &entry)?;
        write(&root.join("journal"), &format!("{name}.body"), &exp.encode_to_vec())?;
        n += 1;
    }
    println!("wrote {n} validate seeds and {} journal seeds under {}", 2 * n, root.display());
    Ok(())
}
