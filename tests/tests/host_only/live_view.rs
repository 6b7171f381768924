//! `faultline watch` in a real terminal (a detached tmux session): the experiment's row with
//! a counter that moves, the agent going away and coming back, Ctrl-C restoring the terminal
//! with exit 0, the terminal's own width (and a resize) used, SIGTERM restoring the terminal
//! of `get --watch` too; and piped, one snapshot. Host only: the VM guests have no tmux.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use faultline_tests::{Agent, Cgroup, TempDir, faultline_bin, net::UdpSink, probe, udp_loss};

const COLS: usize = 160;
const ROWS: usize = 40;

/// A tmux server of this test's own (its own socket, so nothing of a user's tmux is touched)
/// with one detached session running a shell command; killed on drop, also when the test
/// failed.
struct Tmux {
    socket: String,
    session: String,
    _dir: TempDir,
}

fn tmux_missing() -> ! {
    panic!(
        "tmux is missing: the live-view tests need a real terminal. \
         Run `cargo xtask setup` (it installs the Debian package tmux)."
    )
}

impl Tmux {
    fn start(tag: &str, command: &str) -> Tmux {
        Tmux::start_sized(tag, command, COLS)
    }

    /// A session `cols` columns wide (and ROWS high).
    fn start_sized(tag: &str, command: &str, cols: usize) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => tmux_missing(),
        }
        let dir = TempDir::new(tag);
        // No user configuration; the pane stays after its command exits.
        let conf: PathBuf = dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\n").unwrap();
        let t = Tmux {
            socket: format!("fl-{tag}-{}", std::process::id()),
            session: format!("live-{tag}-{}", std::process::id()),
            _dir: dir,
        };
        let out = Command::new("tmux")
            .args(["-L", &t.socket, "-f"])
            .arg(&conf)
            .args(["new-session", "-d", "-s", &t.session])
            .args(["-x", &cols.to_string(), "-y", &ROWS.to_string()])
            .arg(command)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|_| tmux_missing());
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// What the pane shows now, line by line.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    /// The view's process: the shell's child.
    fn view_pid(&self) -> i32 {
        let shell = self.format("#{pane_pid}");
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"));
        children.unwrap().split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM to the view.
    fn terminate_view(&self) {
        let view = self.view_pid();
        // SAFETY: signalling the view this test started.
        assert_eq!(unsafe { libc::kill(view, libc::SIGTERM) }, 0);
    }

    fn format(&self, f: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", &self.session, f]).trim().to_string()
    }

    /// Waits for the screen to satisfy `f`; the last screen goes in the failure message.
    fn wait_screen(&self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tmux screen ----\n{}",
                Command::new("tmux")
                    .args(["-L", &self.socket, "capture-pane", "-p", "-t", &self.session])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default()
            );
        }
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// The screen line of experiment `id`.
fn row<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.starts_with(id))
}

/// The number after `label ` in a row: "dropped 503" -> 503.
fn counter(row: &str, label: &str) -> Option<u64> {
    let rest = &row[row.find(&format!(" {label} "))? + label.len() + 2..];
    rest.split_whitespace().next()?.parse().ok()
}

fn dropped(agent: &Agent, id: &str) -> u64 {
    agent.cli_json(&["get", id])["counters"]["packets_dropped"].as_u64().unwrap()
}

/// An agent, a cgroup, a 50% UDP loss on it for 60s, and some traffic already lost.
fn loss_experiment(tag: &str) -> (Agent, Cgroup, UdpSink, String) {
    let agent = Agent::start();
    let cg = Cgroup::new(tag);
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&udp_loss(&["--cgroup", &cg.rel], "50", &port, "60s"));
    assert_eq!(e["state"], "active");
    let id = e["id"].as_str().unwrap().to_string();
    send(&cg, &sink, 200);
    assert!(dropped(&agent, &id) > 0, "50% loss dropped none of 200 datagrams");
    (agent, cg, sink, id)
}

fn send(cg: &Cgroup, sink: &UdpSink, n: usize) {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), &n.to_string()]);
    sink.drain();
}

/// Shell text: a marker on the shell's screen, the live view, then its exit status on the
/// same screen, and a sleep that keeps the pane (a dead pane is cleared by tmux). The shell
/// ignores SIGINT, so Ctrl-C ends only the view; the view inherits SIG_IGN, so it exits on
/// Ctrl-C only because it handles SIGINT itself.
fn watch_command(agent: &Agent) -> String {
    view_command(agent, "watch --interval 200ms")
}

/// The shell text of `watch_command` around any view (`args` after the endpoint).
fn view_command(agent: &Agent, args: &str) -> String {
    format!(
        "trap '' INT; echo BEFORE-THE-VIEW; '{}' --endpoint '{}' {args}; \
         echo \"EXIT=$?\"; exec sleep 600",
        faultline_bin().display(),
        agent.endpoint()
    )
}

/// After the view ended: its exit status 0, and the terminal as the shell left it: the
/// normal screen with what was on it, the cursor shown, nothing of the view.
fn assert_restored(tmux: &Tmux, id: &str) {
    let s = tmux.wait_screen("the live view to exit", |s| s.contains("EXIT="));
    assert!(s.lines().any(|l| l == "EXIT=0"), "exit status:\n{s}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "the alternate screen was left");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "the cursor is shown again");
    let before = s.lines().position(|l| l == "BEFORE-THE-VIEW");
    let exit = s.lines().position(|l| l == "EXIT=0");
    assert!(before.is_some() && before < exit, "the shell's screen is back:\n{s}");
    assert!(!s.contains("FIRST HIT") && !s.contains(id), "the view left lines behind:\n{s}");
}

#[test]
fn live_view_shows_a_moving_counter_and_ctrl_c_restores_the_terminal() {
    let (agent, cg, sink, id) = loss_experiment("live");
    let tmux = Tmux::start("live", &watch_command(&agent));

    // The row: state, fault, target, a counter equal to the kernel's, a bar for the time left.
    let d1 = dropped(&agent, &id);
    let s = tmux.wait_screen(&format!("the row of {id} with dropped {d1}"), |s| {
        row(s, &id).and_then(|r| counter(r, "dropped")) == Some(d1)
    });
    assert_eq!(tmux.format("#{alternate_on}"), "1", "the view draws on the alternate screen");
    let r = row(&s, &id).unwrap();
    assert!(s.lines().any(|l| l.starts_with("ID ") && l.contains("FIRST HIT")), "{s}");
    assert!(r.contains("active") && r.contains("loss 50%") && r.contains(&cg.rel), "{r}");
    assert!(counter(r, "matched").unwrap() >= 200, "{r}");
    let bar = r.contains("[#") && (r.contains("-] ") || r.contains("#] "));
    assert!(bar, "no bar for the time left: {r}");
    assert!(r.chars().count() <= COLS, "the row is wider than the terminal: {r}");
    assert!(s.contains("1 active"), "{s}");

    // More traffic: the counter moves, and the first hit shows.
    send(&cg, &sink, 400);
    let d2 = dropped(&agent, &id);
    assert!(d2 > d1, "more traffic dropped nothing more: {d1} then {d2}");
    let s = tmux.wait_screen(&format!("dropped to move from {d1} to {d2}"), |s| {
        row(s, &id).is_some_and(|r| counter(r, "dropped") == Some(d2) && r.contains(" +"))
    });
    eprintln!("{s}");

    // Ctrl-C: exit 0, the shell's screen back (with what was there before), cursor shown.
    tmux.tmux(&["send-keys", "-t", &tmux.session, "C-c"]);
    assert_restored(&tmux, &id);
}

#[test]
fn live_view_says_when_the_agent_is_unreachable_and_recovers() {
    let (mut agent, _cg, _sink, id) = loss_experiment("restart");
    let tmux = Tmux::start("restart", &watch_command(&agent));
    tmux.wait_screen("the row", |s| row(s, &id).is_some());

    agent.signal(libc::SIGKILL);
    let s = tmux
        .wait_screen("the agent to show as unreachable", |s| s.contains("agent unreachable at"));
    assert_eq!(tmux.format("#{pane_dead}"), "0", "the view must outlive the agent:\n{s}");

    agent.restart();
    // Back: no unreachable line, and the view shows what the new agent says.
    tmux.wait_screen("the view to reconnect", |s| {
        !s.contains("agent unreachable") && s.lines().any(|l| l.ends_with(" active"))
    });
    // SIGTERM ends it as cleanly as Ctrl-C.
    tmux.terminate_view();
    assert_restored(&tmux, &id);
}

/// A 50% loss on a cgroup with a long path (about 100 characters: wider than an 80-column
/// terminal on its own).
fn long_target(tag: &str) -> (Agent, Cgroup, Cgroup, UdpSink, String) {
    let agent = Agent::start();
    let parent = Cgroup::new(tag);
    let cg = parent.child(&format!("a-service-with-a-long-cgroup-name-{}", "x".repeat(30)));
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&udp_loss(&["--cgroup", &cg.rel], "50", &port, "60s"));
    let id = e["id"].as_str().unwrap().to_string();
    send(&cg, &sink, 100);
    (agent, parent, cg, sink, id)
}

#[test]
fn live_view_uses_the_terminal_width_and_follows_a_resize() {
    let (agent, _parent, cg, _sink, id) = long_target("wide");
    assert!(cg.rel.len() > 90, "{}", cg.rel);
    let wide = 250;
    let tmux = Tmux::start_sized("wide", &watch_command(&agent), wide);
    // 250 columns: the whole row, nothing cut, the bar at its longest.
    let s = tmux.wait_screen("the whole row on a wide terminal", |s| {
        row(s, &id).is_some_and(|r| r.contains(&cg.rel) && counter(r, "dropped").is_some())
    });
    let r = row(&s, &id).unwrap();
    eprintln!("{r}");
    assert!(!r.contains("..."), "nothing is cut at {wide} columns: {r}");
    assert!(r.chars().count() > 160, "the row uses the width: {r}");
    assert!(r.chars().count() < wide, "{r}");
    assert!(r.contains(&format!("[{}", "#".repeat(30))), "a long bar: {r}");

    // Narrower (SIGWINCH): the next frame fits the new width, the target cut.
    let narrow = 100;
    tmux.tmux(&["resize-window", "-t", &tmux.session, "-x", &narrow.to_string()]);
    let s = tmux.wait_screen("the row cut to the narrower terminal", |s| {
        row(s, &id).is_some_and(|r| r.contains("..."))
    });
    let r = row(&s, &id).unwrap();
    assert!(r.chars().count() < narrow, "{r}");
    assert!(!r.contains(&cg.rel), "{r}");
    assert!(r.contains("dropped") && r.contains("] "), "counters and bar stay: {r}");
    tmux.terminate_view();
    assert_restored(&tmux, &id);
}

#[test]
fn get_watch_uses_the_width_and_sigterm_restores_the_terminal() {
    let (agent, _parent, cg, _sink, id) = long_target("getw");
    let tmux = Tmux::start_sized(
        "getw",
        &view_command(&agent, &format!("get {id} --watch --interval 200ms")),
        250,
    );
    let s = tmux.wait_screen("the detail with its time bar", |s| {
        s.lines().any(|l| l.starts_with("time left") && l.contains("[#"))
            && s.lines().any(|l| l.starts_with("target") && l.ends_with(&cg.rel))
    });
    assert_eq!(tmux.format("#{alternate_on}"), "1", "{s}");
    assert!(s.lines().any(|l| l.starts_with("packets dropped")), "{s}");
    assert!(!s.contains("calls seen") && !s.contains("processes"), "a loss's counters only:\n{s}");
    tmux.terminate_view();
    let s = tmux.wait_screen("the view to exit", |s| s.contains("EXIT="));
    assert!(s.lines().any(|l| l == "EXIT=0"), "exit status:\n{s}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "the alternate screen was left");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "the cursor is shown again");
    assert!(s.lines().any(|l| l == "BEFORE-THE-VIEW"), "the shell's screen is back:\n{s}");
    assert!(!s.contains("time left") && !s.contains(&cg.rel), "the view left lines behind:\n{s}");
}

#[test]
fn piped_watch_prints_one_snapshot() {
    let (agent, _cg, _sink, id) = loss_experiment("piped");
    for json in [false, true] {
        let mut cmd = Command::new(faultline_bin());
        cmd.arg("--endpoint").arg(&agent.socket);
        if json {
            cmd.args(["-o", "json"]);
        }
        let mut child = cmd
            .args(["watch", "--interval", "200ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("piped `faultline watch` still runs after 5s: it must print once and exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains('\x1b'), "no terminal codes into a pipe: {text:?}");
        if json {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let list = v.as_array().unwrap();
            assert_eq!(list.len(), 1, "{text}");
            assert_eq!(list[0]["id"], id.as_str());
            assert!(list[0]["counters"]["packets_dropped"].as_u64().unwrap() > 0, "{text}");
        } else {
            eprintln!("{text}");
            assert_eq!(text.matches("FIRST HIT").count(), 1, "one snapshot, one header:\n{text}");
            assert_eq!(text.matches(id.as_str()).count(), 1, "one row:\n{text}");
            let r = row(&text, &id).unwrap();
            assert!(counter(r, "dropped").unwrap() > 0, "{r}");
        }
    }
}
