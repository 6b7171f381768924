//! Every journal kind at the next start, with damaged records next to intact ones: a
//! truncated record, a flipped byte, a record of a newer format version and a temporary
//! file a crash left are moved aside and logged, the agent starts, and what the intact
//! records describe is still recovered (a resumed experiment, a thawed cgroup, a removed v1
//! cgroup directory, a removed clsact, a deleted ifb, a restored qdisc).
//!
//! Records other than the experiment's are written here in the store's format (agent-core/src/
//! store), framed independently of the agent: the point is the reader, and some kinds only
//! exist with kernel features this host lacks (fq needs sch_fq).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use faultline_tests::{Agent, Cgroup, Netns, net::UdpSink, probe, udp_loss, wait_until};
use serde_json::json;

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A record file: `FLR1` | kind length (u8) | kind | version (u32 LE) | payload length
/// (u32 LE) | payload | CRC-32 of everything before it (u32 LE).
fn frame(kind: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = b"FLR1".to_vec();
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The damaged files written for one kind, and where each must end up.
struct Torn {
    written: Vec<PathBuf>,
    aside: Vec<PathBuf>,
}

/// Next to the kind's records: `good` (a whole record file of the kind) truncated, with a
/// flipped byte, and half-written as a temporary file, under keys of their own; and a record
/// of the kind in a newer format version than this agent reads.
fn tear(state: &Path, kind: &str, good: &[u8], payload: &[u8]) -> Torn {
    let dir = state.join(kind);
    let mut flipped = good.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let files = [
        ("aaaa01.rec", &good[..good.len() - 5], "aaaa01.corrupt"),
        ("aaaa02.rec", &flipped[..], "aaaa02.corrupt"),
        (".aaaa03.77-0.tmp", &good[..good.len() / 2], "aaaa03.77-0.tmp.corrupt"),
        ("aaaa04.rec", &frame(kind, 2, payload)[..], "aaaa04.corrupt"),
    ];
    let mut t = Torn { written: Vec::new(), aside: Vec::new() };
    for (name, bytes, aside) in files {
        write(&dir.join(name), bytes);
        t.written.push(dir.join(name));
        t.aside.push(dir.join(aside));
    }
    t
}

fn put(state: &Path, kind: &str, key: &str, payload: &serde_json::Value) -> (PathBuf, Vec<u8>) {
    let payload = serde_json::to_vec(payload).unwrap();
    let path = state.join(kind).join(format!("{key}.rec"));
    write(&path, &frame(kind, 1, &payload));
    (path, payload)
}

fn tc(ns: &Netns, args: &[&str]) -> bool {
    Command::new("tc").arg("-n").arg(&ns.name).args(args).output().is_ok_and(|o| o.status.success())
}

fn qdiscs(ns: &Netns) -> String {
    let out = Command::new("tc").args(["-n", &ns.name, "qdisc", "show", "dev", "lo"]).output();
    String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
}

#[test]
fn torn_records_of_every_kind_are_moved_aside_and_the_intact_ones_recovered() {
    let mut agent = Agent::start();
    let state = agent.dir.path().join("state");

    // experiments: a real one, journaled by the agent, which then dies.
    let cg = Cgroup::new("store-exp");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&udp_loss(&["--cgroup", &cg.rel], "100", &port, "60s"));
    let id = e["id"].as_str().unwrap().to_string();
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    let exp_file = state.join("experiments").join(format!("{id}.rec"));
    let exp = std::fs::read(&exp_file).expect("the experiment was not journaled as a record");
    let mut torn = vec![tear(&state, "experiments", &exp, b"")];

    // frozen: a cgroup frozen by "a previous agent".
    let frozen_cg = Cgroup::new("store-frozen");
    let mut sleeper = frozen_cg.command("sleep").arg("120").spawn().unwrap();
    std::fs::write(frozen_cg.fs.join("cgroup.freeze"), "1").unwrap();
    let ino = std::fs::metadata(&frozen_cg.fs).unwrap().ino();
    let (file, payload) =
        put(&state, "frozen", &ino.to_string(), &json!({ "ino": ino, "dir": frozen_cg.fs }));
    torn.push(tear(&state, "frozen", &std::fs::read(&file).unwrap(), &payload));

    // stress: directories a placement created (empty ones anywhere read the same).
    let created = agent.dir.path().join("v1-leftover");
    std::fs::create_dir_all(created.join("child")).unwrap();
    let dirs = json!({ "key": "4242-0", "dirs": [created, created.join("child")] });
    let (file, payload) = put(&state, "stress", "4242-0", &dirs);
    torn.push(tear(&state, "stress", &std::fs::read(&file).unwrap(), &payload));

    // tc, ifb, qdisc: in a namespace of the test's own.
    let ns = Netns::new("store");
    let ns_ino = std::fs::metadata(ns.path()).unwrap().ino();
    assert!(tc(&ns, &["qdisc", "add", "dev", "lo", "clsact"]), "adding clsact");
    let rec = json!({
        "netns_ino": ns_ino, "netns_path": ns.path(), "ifindex": 1, "name": "lo",
        "added_clsact": true,
    });
    let (file, payload) = put(&state, "tc", &format!("{ns_ino}-1"), &rec);
    torn.push(tear(&state, "tc", &std::fs::read(&file).unwrap(), &payload));

    let ifb_name = format!("flifbst{}", std::process::id() % 100_000);
    let has_ifb = Command::new("ip")
        .args(["-n", &ns.name, "link", "add", &ifb_name, "type", "ifb"])
        .status()
        .is_ok_and(|s| s.success());
    let rec = json!({
        "netns_ino": ns_ino, "netns_path": ns.path(), "name": ifb_name, "ifindex": 2,
    });
    let (file, payload) = put(&state, "ifb", &ns_ino.to_string(), &rec);
    torn.push(tear(&state, "ifb", &std::fs::read(&file).unwrap(), &payload));

    // The qdisc journal of lo, whose original root was the kernel's default. Where sch_fq
    // exists, fq is really there to be taken out.
    let has_fq = tc(&ns, &["qdisc", "add", "dev", "lo", "root", "fq"]);
    let rec = json!({
        "netns_ino": ns_ino, "netns_path": ns.path(), "ifindex": 1, "ifname": "lo",
        "original": "Default",
    });
    let (file, payload) = put(&state, "qdisc", &format!("{ns_ino}-1"), &rec);
    torn.push(tear(&state, "qdisc", &std::fs::read(&file).unwrap(), &payload));

    agent.restart();
    let log = agent.log();

    // Every damaged file is aside and logged; nothing of it was acted on.
    for t in &torn {
        for (written, aside) in t.written.iter().zip(&t.aside) {
            assert!(!written.exists(), "{} left in place", written.display());
            assert!(aside.exists(), "{} not moved aside to {}", written.display(), aside.display());
            assert!(log.contains(&aside.display().to_string()), "{} not logged", aside.display());
        }
    }
    assert!(log.contains("unreadable journal entry"), "{log}");
    assert!(log.contains("format version 2; this agent reads version 1"), "{log}");

    // The intact records: the experiment resumed, and everything else undone and dropped.
    let r = agent.cli_json(&["get", &id]);
    assert_eq!(r["state"], "active", "{r}");
    probe(Some(&cg), &["udp-send", &sink.addr().to_string(), "20"]);
    assert_eq!(sink.drain(), 0, "the resumed experiment is not in effect");
    assert!(exp_file.exists(), "a resumed experiment stays journaled");

    wait_until("the thaw", || {
        std::fs::read_to_string(frozen_cg.fs.join("cgroup.freeze")).unwrap().trim() == "0"
    });
    assert!(!created.exists(), "the journaled directories were not removed");
    assert!(!qdiscs(&ns).contains("clsact"), "clsact not removed: {}", qdiscs(&ns));
    if has_ifb {
        assert!(ns.links_of_kind("ifb").is_empty(), "the journaled ifb was not deleted");
    }
    if has_fq {
        assert_eq!(ns.root_qdisc("lo"), "noqueue", "the journaled qdisc was not restored");
    }
    assert!(log.contains("restored the qdisc a previous agent replaced"), "{log}");
    for kind in ["frozen", "stress", "tc", "ifb", "qdisc"] {
        let left: Vec<_> = std::fs::read_dir(state.join(kind))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".corrupt"))
            .collect();
        assert!(left.is_empty(), "{kind}: records left after recovery: {left:?}");
    }

    agent.cli_json(&["cancel", &id]);
    assert!(!exp_file.exists());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
