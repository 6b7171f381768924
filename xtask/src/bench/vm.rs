//! The VM-tier items, in one Debian 6.12 guest under QEMU (TCG: absolute rates are
//! meaningless there, ratios and the size of a fault's effect are not): openat cost with the
//! BPF LSM program attached but not matching, the cost of a sys delay fault (fexit backend)
//! to calls it does not delay, delay against netem, bandwidth against tbf.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    host::{Env, median},
    report::{Better, Figure, Goal, Report},
};

pub const KERNEL: &str = "debian-6.12";

/// The guest's job. Each measurement prints `BENCH-VM SECTION VARIANT ROUND JSON`.
const JOB: &str = r#"set -u
R=__ROUNDS__; RO=__OPEN_ROUNDS__; N=__COUNT__; S=__SECS__; T=__RATE_SECS__
faultline serve --socket /run/b.sock --state-dir /tmp/bst --no-metrics >/tmp/agent.log 2>&1 &
AGENT=$!
# Runs of the agent's tracing programs (type 26: the delay fault's fexit), from the kernel's
# own statistics (kernel.bpf_stats_enabled, on for the sys delay section only).
runs() { cat /proc/$AGENT/fdinfo/* 2>/dev/null | awk '/^prog_type:/ {t=$2} /^run_cnt:/ {if (t == 26) s += $2} END {print s + 0}'; }
i=0; while [ ! -S /run/b.sock ] && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
F="faultline --endpoint /run/b.sock -o json"
mkdir -p /sys/fs/cgroup/bench
inside() { sh -c 'echo $$ > /sys/fs/cgroup/bench/cgroup.procs && exec "$@"' inside "$@"; }
idof() { sed -n 's/^  "id": "\([0-9a-f]*\)",*$/\1/p' | head -n 1; }
inject() { id=$($F "$@" | idof); [ -n "$id" ] || { echo "inject failed: $*"; cat /tmp/agent.log | tail -5; exit 1; }; }
order() { if [ $(($1 % 2)) -eq 0 ]; then echo "$2"; else echo "$2" | awk '{for(i=NF;i>0;i--) printf "%s ", $i}'; fi; }
# Like a NIC: both tools see 1500-byte packets.
ip link set lo mtu 1500

echo "== openat+close: LSM file_open attached, not matching, vs none, vs an empty program"
mkdir -p /sys/fs/cgroup/other
# The floor: an empty BPF_LSM_CGROUP file_open program on a cgroup (fl-probe holds it).
floor() {
  fl-probe lsm-floor /sys/fs/cgroup/$1 >/tmp/floor.out 2>&1 & FP=$!
  i=0; while ! grep -q attached /tmp/floor.out && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  grep -q attached /tmp/floor.out || { echo "lsm-floor failed: $(cat /tmp/floor.out)"; exit 1; }
}
r=0
while [ $r -lt $RO ]; do
  for v in $(order $r "none other path floor-other floor-here"); do
    case $v in
      other) inject sys fail --cgroup /other --syscall openat --path /data --errno EIO --for 10m ;;
      path) inject sys fail --cgroup /bench --syscall openat --path /nonexistent --errno EIO --for 10m ;;
      floor-other) floor other ;;
      floor-here) floor bench ;;
    esac
    echo "BENCH-VM openat $v $r $(inside fl-probe rate open /etc/passwd $S)"
    case $v in
      other|path) $F cancel $id >/dev/null ;;
      floor-*) kill $FP; wait $FP 2>/dev/null ;;
    esac
  done
  r=$((r+1))
done

# The file programs' own time per call (kernel.bpf_stats_enabled, one extra run each).
echo 1 > /proc/sys/kernel/bpf_stats_enabled
for v in other path; do
  case $v in
    other) inject sys fail --cgroup /other --syscall openat --path /data --errno EIO --for 10m ;;
    path) inject sys fail --cgroup /bench --syscall openat --path /nonexistent --errno EIO --for 10m ;;
  esac
  a=$(fl-probe progs $AGENT); out=$(inside fl-probe rate open /etc/passwd $S); b=$(fl-probe progs $AGENT)
  echo "BENCH-VM openat-progs $v 0 {\"rate\":$out,\"before\":$a,\"after\":$b}"
  $F cancel $id >/dev/null
done
echo 0 > /proc/sys/kernel/bpf_stats_enabled

echo "== sys delay: calls it does not delay, in the target and elsewhere, vs no fault"
dd if=/dev/zero of=/tmp/pread bs=4096 count=1 2>/dev/null
echo 1 > /proc/sys/kernel/bpf_stats_enabled
r=0
while [ $r -lt $RO ]; do
  for v in $(order $r "none target other"); do
    case $v in
      target) inject sys delay --cgroup /bench --syscall fsync --latency 100ms --for 10m ;;
      other) inject sys delay --cgroup /other --syscall fsync --latency 100ms --for 10m ;;
    esac
    for call in getppid pread; do
      arg=-; [ $call = pread ] && arg=/tmp/pread
      a=$(runs); out=$(inside fl-probe rate $call $arg $S); b=$(runs)
      echo "BENCH-VM sysdelay-$call $v $r $out"
      echo "BENCH-VM sysdelay-runs-$call $v $r {\"runs\":$((b - a))}"
    done
    if [ $v = target ]; then
      # The control: one fsync of the target passes the program (and is delayed).
      a=$(runs); inside dd if=/dev/zero of=/tmp/fsync bs=4096 count=1 conv=fsync 2>/dev/null; b=$(runs)
      echo "BENCH-VM sysdelay-runs-fsync $v $r {\"runs\":$((b - a))}"
    fi
    [ $v != none ] && $F cancel $id >/dev/null
  done
  r=$((r+1))
done
echo 0 > /proc/sys/kernel/bpf_stats_enabled

echo "== delay 100 ms: faultline (EDT + fq) vs netem, one-way"
r=0
while [ $r -lt $R ]; do
  for v in $(order $r "base faultline netem"); do
    case $v in
      faultline) inject net delay --cgroup /bench --latency 100ms --protocol udp --port 40100 --for 10m ;;
      netem) /usr/sbin/tc qdisc add dev lo root netem delay 100ms limit 100000 ;;
    esac
    echo "BENCH-VM delay $v $r $(inside fl-probe owd 127.0.0.1:40100 $N 20)"
    case $v in
      faultline) $F cancel $id >/dev/null ;;
      netem) /usr/sbin/tc qdisc del dev lo root ;;
    esac
  done
  r=$((r+1))
done

echo "== bandwidth 8 Mbit/s: faultline (EDT + fq) vs tbf, TCP"
r=0
while [ $r -lt $R ]; do
  for v in $(order $r "base faultline tbf"); do
    case $v in
      faultline) inject net bandwidth --cgroup /bench --rate 8mbit --port 40200 --for 10m ;;
      tbf) /usr/sbin/tc qdisc add dev lo root tbf rate 8mbit burst 10kb latency 100ms ;;
    esac
    echo "BENCH-VM rate $v $r $(inside fl-probe tcp-rate 127.0.0.1:40200 $T)"
    case $v in
      faultline) $F cancel $id >/dev/null ;;
      tbf) /usr/sbin/tc qdisc del dev lo root ;;
    esac
  done
  r=$((r+1))
done
echo "== done"
"#;

/// samples[(section, variant)][round]
type Samples = BTreeMap<(String, String), Vec<Value>>;

fn parse(log: &str) -> Samples {
    let mut s = Samples::new();
    for line in log.lines() {
        let Some(rest) = line.trim_end_matches('\r').split_once("BENCH-VM ").map(|(_, r)| r) else {
            continue;
        };
        let mut it = rest.splitn(4, ' ');
        let (Some(sec), Some(var), Some(_round), Some(json)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(json) {
            s.entry((sec.to_string(), var.to_string())).or_default().push(v);
        }
    }
    s
}

fn get<'a>(s: &'a Samples, sec: &str, var: &str) -> anyhow::Result<&'a Vec<Value>> {
    s.get(&(sec.to_string(), var.to_string()))
        .with_context(|| format!("no {sec}/{var} results from the guest"))
}

fn field(v: &[Value], k: &str) -> Vec<f64> {
    v.iter().filter_map(|x| x[k].as_f64()).collect()
}

pub fn vm(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    let (rounds, count, secs, rate_secs) = env.pick((2, 30, 1, 3), (5, 100, 1, 6));
    // openat rates in TCG swing with the host's load: more, shorter rounds.
    let open_rounds = env.pick(2, 12);
    println!("== VM tier ({KERNEL}, QEMU TCG): openat cost, delay vs netem, bandwidth vs tbf");
    let job = JOB
        .replace("__ROUNDS__", &rounds.to_string())
        .replace("__OPEN_ROUNDS__", &open_rounds.to_string())
        .replace("__COUNT__", &count.to_string())
        .replace("__SECS__", &secs.to_string())
        .replace("__RATE_SECS__", &rate_secs.to_string());
    let cmd = ["sh".to_string(), "-c".to_string(), job];
    let rc = crate::vm::vm_run(KERNEL, None, &cmd, Duration::from_secs(1800))?;
    let log_path = crate::vm::cache().join("run").join(format!("{KERNEL}.log"));
    let log = std::fs::read_to_string(&log_path)?;
    if rc != 0 {
        bail!("the guest job exited with {rc} (log: {})", log_path.display());
    }
    let s = parse(&log);
    let tier = format!("VM tier: {KERNEL} under QEMU TCG");

    // openat: paired by round; `var`'s rate over `under`'s: (median ratio, median rates).
    let paired = |var: &str, under: &str| -> anyhow::Result<(f64, f64, f64)> {
        let (with, under) =
            (field(get(&s, "openat", var)?, "per_s"), field(get(&s, "openat", under)?, "per_s"));
        let ratios: Vec<f64> = under.iter().zip(&with).map(|(a, b)| b / a).collect();
        Ok((median(&ratios), median(&with), median(&under)))
    };
    // The floors: an empty BPF_LSM_CGROUP file_open program on another cgroup (what every
    // task pays for any such program: the hook's shim) and on this one (one program run).
    for (var, id, what) in [
        (
            "floor-other",
            "syscall.openat.floor_other",
            "an empty file_open program on another cgroup",
        ),
        ("floor-here", "syscall.openat.floor_here", "an empty file_open program on this cgroup"),
    ] {
        let (ratio, with, none) = paired(var, "none")?;
        rep.add(
            Figure::new(
                "Syscall path cost",
                id,
                &format!("openat()+close rate, {what} / none (the floor)"),
                ratio,
                "ratio",
            )
            .note(format!(
                "{tier}; medians {with:.0} / {none:.0} calls/s; {open_rounds} rounds of {secs} \
                 s; `return 1` as BPF_LSM_CGROUP, loaded and linked by fl-probe"
            )),
        );
    }
    for (var, floor, id, what) in [
        ("other", "floor-other", "syscall.openat.other_over_floor", "a fault on another cgroup"),
        (
            "path",
            "floor-here",
            "syscall.openat.path_over_floor",
            "a fault on this cgroup, path not matching",
        ),
    ] {
        rep.add(
            Figure::new(
                "Syscall path cost",
                id,
                &format!("openat()+close rate, {what} / the empty program where it sits"),
                paired(var, floor)?.0,
                "ratio",
            )
            .note(format!("{tier}: what the agent's program costs over the kernel's dispatch")),
        );
    }
    for (var, id, what, goal) in [
        ("other", "syscall.openat.other", "a fault (with a path) on another cgroup", 0.97),
        ("path", "syscall.openat.path", "a fault on this cgroup, path not matching", 0.90),
    ] {
        let (ratio, with, none) = paired(var, "none")?;
        rep.add(
            Figure::new(
                "Syscall path cost",
                id,
                &format!("openat()+close rate, BPF LSM attached for {what} / none"),
                ratio,
                "ratio",
            )
            .goal(Goal::AtLeast(goal))
            .check(Better::Higher)
            .note(format!(
                "{tier}; medians {with:.0} / {none:.0} calls/s; {open_rounds} rounds of {secs} s"
            )),
        );
        // Each program's time per call, from the kernel's statistics.
        let run = get(&s, "openat-progs", var)?.first().context("openat-progs")?;
        let ops = run["rate"]["ops"].as_f64().context("openat-progs: ops")?.max(1.0);
        let (before, after) = (&run["before"], &run["after"]);
        let mut total = 0.0;
        let mut each = Vec::new();
        for (name, v) in after.as_object().context("openat-progs: after")? {
            let at = |x: &Value, i: usize| x[name.as_str()][i].as_f64().unwrap_or(0.0);
            let (ns, runs) = (at(after, 0) - at(before, 0), at(after, 1) - at(before, 1));
            if runs >= 1.0 && v.is_array() {
                total += ns / ops;
                each.push(format!("{name} {:.2} x {:.0} ns", runs / ops, ns / runs));
            }
        }
        rep.add(
            Figure::new(
                "Syscall path cost",
                &format!("{id}.prog_ns"),
                &format!("Program time per openat()+close, {what}"),
                total,
                "ns",
            )
            .note(format!(
                "{tier}; {}; kernel.bpf_stats_enabled, one extra run of {secs} s",
                if each.is_empty() { "no program ran".to_string() } else { each.join(", ") }
            )),
        );
    }

    // sys delay on fsync: what calls it does not delay pay (fexit on __x64_sys_fsync here:
    // getppid and pread pass no program at all). Per CPU second of the calling process: the
    // guest has one emulated CPU, so the agent's and the tracer's own work (rescans every
    // 250 ms) takes wall time from the caller there, which it would not on a node with cores
    // to spare; that share is given beside it (wall-clock ratio).
    for (call, what) in [("getppid", "getppid (null call)"), ("pread", "4 KiB pread")] {
        let sec = format!("sysdelay-{call}");
        // The kernel's count of the delay program's runs while the workload ran, over its
        // calls: 0 means no call of it passed any program, whatever the rates say.
        let control: f64 = field(get(&s, "sysdelay-runs-fsync", "target")?, "runs").iter().sum();
        if control < 1.0 {
            bail!("the program-run count saw no run for the target's fsync: bpf_stats unread");
        }
        let mut runs = 0.0;
        let mut calls = 0.0;
        for var in ["target", "other"] {
            runs +=
                field(get(&s, &format!("sysdelay-runs-{call}"), var)?, "runs").iter().sum::<f64>();
            calls += field(get(&s, &sec, var)?, "ops").iter().sum::<f64>();
        }
        rep.add(
            Figure::new(
                "System-call latency",
                &format!("delay.vm.runs.{call}"),
                &format!("sys delay on fsync (fexit): delay program runs per {what} call it does not delay"),
                runs / calls.max(1.0),
                "runs",
            )
            .goal(Goal::Below(1e-6))
            .note(format!(
                "{tier}; {runs:.0} runs of the tracing programs over {calls:.0} calls of the \
                 targeted process and one outside, from kernel.bpf_stats_enabled (run_cnt in \
                 the agent's fdinfo); the control, one fsync of the target per round, \
                 {control:.0} runs"
            )),
        );
        let none = get(&s, &sec, "none")?;
        for (var, goal, whose) in [
            ("target", 0.95, "of the targeted process"),
            ("other", 0.99, "of a process outside the target"),
        ] {
            let with = get(&s, &sec, var)?;
            let paired = |k: &str| -> Vec<f64> {
                field(none, k).iter().zip(field(with, k)).map(|(a, b)| b / a).collect()
            };
            let (per_cpu, wall) = (paired("per_cpu_s"), paired("per_s"));
            rep.add(
                Figure::new(
                    "System-call latency",
                    &format!("delay.vm.{var}.{call}"),
                    &format!(
                        "sys delay on fsync (fexit), {what} calls per CPU second {whose} / no fault"
                    ),
                    median(&per_cpu),
                    "ratio",
                )
                .goal(Goal::AtLeast(goal))
                .check(Better::Higher)
                .note(format!(
                    "{tier}; medians {:.0} / {:.0} calls per CPU second; wall-clock rate ratio \
                     {:.3} (the agent's background work shares the guest's one CPU); \
                     {open_rounds} rounds of {secs} s, paired by round",
                    median(&field(with, "per_cpu_s")),
                    median(&field(none, "per_cpu_s")),
                    median(&wall),
                )),
            );
        }
    }

    // Delay: one-way, added to the base.
    let base_med = median(&field(get(&s, "delay", "base")?, "median_ms"));
    let base_p99 = median(&field(get(&s, "delay", "base")?, "p99_ms"));
    for who in ["faultline", "netem"] {
        let v = get(&s, "delay", who)?;
        let med = median(&field(v, "median_ms"));
        let p99 = median(&field(v, "p99_ms"));
        let recv: f64 = field(v, "n").iter().sum();
        let sent: f64 = field(v, "sent").iter().sum();
        let tool = if who == "faultline" { "faultline (EDT)" } else { "netem" };
        rep.add(
            Figure::new("Accuracy", &format!("accuracy.delay.{who}.median"), &format!("Delay 100 ms, {tool}: one-way median"), med, "ms")
                .goal(Goal::Within(100.0, 5.0))
                .check(Better::NearOne)
                .reference(who != "faultline")
                .note(format!("{tier}; base median {base_med:.2} ms; {recv}/{sent} datagrams arrived; median of {rounds} runs of {count}")),
        );
        rep.add(
            Figure::new(
                "Accuracy",
                &format!("accuracy.delay.{who}.p99"),
                &format!("Delay 100 ms, {tool}: one-way p99"),
                p99,
                "ms",
            )
            .goal(Goal::Within(100.0, 10.0))
            .reference(who != "faultline")
            .note(format!("base p99 {base_p99:.2} ms")),
        );
    }

    // Bandwidth: goodput at the sink after the first second.
    let base_rate = median(&field(get(&s, "rate", "base")?, "rate_bps")) / 1e6;
    for who in ["faultline", "tbf"] {
        let r = median(&field(get(&s, "rate", who)?, "rate_bps")) / 1e6;
        let tool = if who == "faultline" { "faultline (EDT)" } else { "tbf" };
        rep.add(
            Figure::new("Accuracy", &format!("accuracy.rate.{who}"), &format!("Bandwidth 8 Mbit/s, {tool}: TCP goodput"), r, "Mbit/s")
                .goal(Goal::Within(8.0, 0.8))
                .check(Better::NearOne)
                .reference(who != "faultline")
                .note(format!("{tier}; unshaped {base_rate:.0} Mbit/s; median of {rounds} runs of {rate_secs} s (first second left out)")),
        );
    }
    rep.detail(
        "Accuracy",
        "Delay and bandwidth (VM tier: this host has no sch_fq or netem): lo at MTU 1500, the \
         sender in a cgroup. Delay: one datagram every 20 ms carrying its send time \
         (CLOCK_MONOTONIC) to a receiver in the same process, so the one-way delay of each; \
         faultline delays the cgroup's egress to that port (EDT, fq installed on lo by the \
         agent), netem is `tc qdisc add dev lo root netem delay 100ms`. Bandwidth: one TCP \
         connection for a few seconds, goodput at the sink after its first second; faultline \
         paces the cgroup's traffic to the sink's port, tbf is `tc qdisc add dev lo root tbf rate \
         8mbit burst 10kb latency 100ms` (burst 10 ms at the rate, as faultline's default). \
         Runs alternate base, faultline, incumbent and back.",
    );
    Ok(())
}
