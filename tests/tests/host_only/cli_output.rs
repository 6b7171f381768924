//! The CLI as a script sees it, against a real agent: a stdout closed by its reader ends
//! every command quietly (an inject's id goes to stderr, and the experiment is in the agent);
//! errors with `-o json` are one JSON object on stderr, with the gRPC code's name; experiment
//! ids by unique prefix; `cancel` of an ended experiment; the completion scripts and the man
//! pages as bash and man(1) read them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use faultline_tests::{Agent, Cgroup, TempDir, faultline_bin};

/// Runs the CLI against `agent` with stdout a pipe whose reading end is already closed, as
/// `faultline ls | head -0` or a reader that went away.
fn with_closed_stdout(agent: &Agent, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(faultline_bin())
        .arg("--endpoint")
        .arg(&agent.socket)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A 10% loss on a fresh cgroup for `secs`; its id.
fn loss(agent: &Agent, cg: &Cgroup, secs: u32) -> String {
    let e = agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--percent",
        "10",
        "--for",
        &format!("{secs}s"),
    ]);
    e["id"].as_str().unwrap().to_string()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let agent = Agent::start();
    let cg = Cgroup::new("pipe");
    let id = loss(&agent, &cg, 120);
    for args in [
        vec!["ls"],
        vec!["-o", "json", "ls"],
        vec!["get", &id],
        vec!["get", &id, "-o", "json"],
        vec!["caps"],
        vec!["caps", "-o", "json"],
        vec!["watch"],
        vec!["events"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let out = with_closed_stdout(&agent, &args);
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("backtrace"),
            "faultline {args:?}: {err}"
        );
        // Quiet: exit 0, as ripgrep does; the reader had what it wanted.
        assert_eq!(out.status.code(), Some(0), "faultline {args:?}: {err}");
        assert!(err.is_empty(), "faultline {args:?} said: {err}");
    }

    // An inject whose output is lost still made its experiment, and says its id on stderr.
    let other = Cgroup::new("pipe-inject");
    for output in ["table", "json"] {
        let out = with_closed_stdout(
            &agent,
            &[
                "-o",
                output,
                "net",
                "loss",
                "--cgroup",
                &other.rel,
                "--percent",
                "5",
                "--for",
                "120s",
                "--label",
                &format!("pipe={output}"),
            ],
        );
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
        let line: Vec<&str> = err.lines().collect();
        assert_eq!(line.len(), 1, "{err}");
        let made = line[0]
            .strip_prefix("faultline: stdout closed; experiment ")
            .and_then(|r| r.strip_suffix(" is active"))
            .unwrap_or_else(|| panic!("no id on stderr: {err}"));
        let e = agent.cli_json(&["get", made]);
        assert_eq!(e["state"], "active", "{e}");
        assert_eq!(e["labels"]["pipe"], output, "{e}");
        agent.cli_json(&["cancel", made]);
    }
    agent.cli_json(&["cancel", &id]);
}

/// The one line of stderr, parsed as JSON.
fn json_error(out: &Output) -> serde_json::Value {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"))
}

/// No cause said twice: no segment of the line is already in the one before it.
fn assert_causes_once(line: &str) {
    let parts: Vec<&str> = line.split(": ").collect();
    for w in parts.windows(2) {
        assert!(!w[0].contains(w[1]), "cause repeated in {line:?}");
    }
}

#[test]
fn errors_are_one_line_or_one_json_object() {
    let agent = Agent::start();
    let cg = Cgroup::new("errors");

    // The agent's refusals: the code as gRPC names it.
    let out = agent.cli(&["-o", "json", "get", "ffffffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    let e = json_error(&out);
    assert_eq!(e["error"]["code"], "NOT_FOUND", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("ffffffffffff"), "{e}");
    let bad = ["net", "loss", "--cgroup", &cg.rel, "--percent", "500", "--for", "5s"];
    let out = agent.cli(&[&["-o", "json"][..], &bad[..]].concat());
    assert_eq!(out.status.code(), Some(1));
    let e = json_error(&out);
    assert_eq!(e["error"]["code"], "INVALID_ARGUMENT", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("percent"), "{e}");
    // As text: one line, the code's gRPC name.
    let out = agent.cli(&bad);
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: INVALID_ARGUMENT: "), "{err}");
    assert!(!err.contains("InvalidArgument"), "{err}");

    // The command line's own refusals, with -o json before or after the verb.
    for args in [
        vec!["-o", "json", "net", "loss", "--cgroup", "x", "--for", "1s"],
        vec!["net", "loss", "--cgroup", "x", "--for", "1s", "-o", "json"],
    ] {
        let out = agent.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = json_error(&out);
        assert_eq!(e["error"]["code"], "INVALID_ARGUMENT", "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("--every-nth"), "{e}");
    }

    // No agent there: UNAVAILABLE, each cause once.
    let dir = TempDir::new("noagent");
    let gone = dir.path().join("none.sock");
    let run = |args: &[&str]| {
        Command::new(faultline_bin()).arg("--endpoint").arg(&gone).args(args).output().unwrap()
    };
    let out = run(&["-o", "json", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let e = json_error(&out);
    assert_eq!(e["error"]["code"], "UNAVAILABLE", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot reach the agent"), "{message}");
    assert_causes_once(message);
    let out = run(&["ls"]);
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_causes_once(err.trim());
    // A TCP endpoint nobody listens on (hyper's "tcp connect error" chain).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(faultline_bin())
        .args(["--endpoint", &format!("http://127.0.0.1:{port}"), "caps"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_causes_once(err.trim());
}

#[test]
fn ids_by_unique_prefix_and_cancel_of_an_ended_experiment() {
    let agent = Agent::start();
    let cg = Cgroup::new("prefix");
    let id = loss(&agent, &cg, 120);
    let prefix = &id[..6];
    assert_eq!(agent.cli_json(&["get", prefix])["id"], id.as_str());
    assert_eq!(agent.cli_json(&["get", &prefix.to_uppercase()])["id"], id.as_str());
    // Too short to look up, or no match: NOT_FOUND in one line.
    for given in [&id[..2], "0000000"] {
        let out = agent.cli(&["get", given]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: NOT_FOUND: no experiment"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    // get --watch by prefix, piped: a line per change until it ends (cancelled below).
    let watch = Command::new(faultline_bin())
        .args(["--endpoint", &agent.endpoint(), "get", prefix, "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // cancel by prefix ends it.
    let c = agent.cli_json(&["cancel", prefix]);
    assert_eq!((c["id"].as_str(), c["state"].as_str()), (Some(id.as_str()), Some("cancelled")));
    let watched = watch.wait_with_output().unwrap();
    assert!(watched.status.success(), "{}", text(&watched.stderr));
    let lines = text(&watched.stdout);
    assert!(lines.contains(&id) && lines.contains("cancelled"), "{lines}");

    // Again: it had already ended; said on stderr, the experiment on stdout, exit 0.
    let out = agent.cli(&["cancel", prefix]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.starts_with(&format!("{id} had already ended: cancelled at ")), "{err}");
    assert!(text(&out.stdout).contains(&id));

    // One that ran out by itself.
    let short = loss(&agent, &cg, 1);
    let start = Instant::now();
    while agent.cli_json(&["get", &short])["state"] == "active" {
        assert!(start.elapsed() < Duration::from_secs(20), "{short} did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = agent.cli(&["cancel", &short]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.starts_with(&format!("{short} had already ended: expired at ")), "{err}");
    // With -o json: the experiment as it ended, nothing on stderr.
    let out = agent.cli(&["-o", "json", "cancel", &short]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", text(&out.stderr));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["state"], "expired");
}

#[test]
fn completions_and_man_pages_load() {
    let dir = TempDir::new("man");
    let run = |args: &[&str]| {
        let out = Command::new(faultline_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "faultline {args:?}: {}", text(&out.stderr));
        out.stdout
    };
    // bash loads the script and completes the verbs.
    let script = dir.path().join("faultline.bash");
    std::fs::write(&script, run(&["completions", "bash"])).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p faultline && COMP_WORDS=(faultline ca); COMP_CWORD=1; \
             COMP_LINE='faultline ca'; COMP_POINT=12; _faultline faultline ca faultline && \
             echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("-F _faultline faultline"), "{said}");
    assert!(said.lines().last().unwrap_or_default().split(' ').any(|w| w == "caps"), "{said}");
    for shell in ["zsh", "fish"] {
        assert!(text(&run(&["completions", shell])).contains("tls-client-cert"), "{shell}");
    }

    // One page per command; man(1) renders them.
    run(&["man", "--dir", &dir.path().display().to_string()]);
    let page = dir.path().join("faultline-net-loss.1");
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("LC_ALL", "C")
        .env("MANWIDTH", "100")
        .output();
    match out {
        Ok(out) => {
            let shown = text(&out.stdout);
            assert!(out.status.success(), "man -l: {}", text(&out.stderr));
            assert!(shown.contains("--every-nth") && shown.contains("--percent"), "{shown}");
        }
        // No man(1) on this host: the roff header at least.
        Err(_) => {
            let roff = std::fs::read_to_string(&page).unwrap();
            assert!(roff.contains(".TH faultline-net-loss 1"), "{roff}");
        }
    }
    let top = text(&run(&["man"]));
    assert!(top.contains(".TH faultline 1") && top.contains("completions"), "{top}");
}

/// `faultline caps` on a node with no agent: as root the CLI probes the host itself, finds
/// what an agent on the same kernel finds, and says so (stderr, and `probed_by` in JSON); not
/// as root, one line saying why it cannot.
#[test]
fn caps_without_an_agent_probes_the_host_itself() {
    let agent = Agent::start();
    let by_agent = agent.cli_json(&["caps"]);
    assert_eq!(by_agent["probed_by"], "agent", "{by_agent}");
    let dir = TempDir::new("caps-no-agent");
    let nobody = dir.path().join("no-agent.sock");
    let out = Command::new(faultline_bin())
        .arg("--endpoint")
        .arg(&nobody)
        .args(["caps", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("probed by the CLI itself"), "{}", text(&out.stderr));
    let here: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(here["probed_by"], "cli", "{here}");
    assert_eq!(here["kernel_release"], by_agent["kernel_release"]);
    let support = |caps: &serde_json::Value, list: &str, key: &str| -> Vec<(String, bool)> {
        caps[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x[key].as_str().unwrap().to_string(), x["supported"].as_bool().unwrap()))
            .collect()
    };
    assert_eq!(support(&here, "faults", "fault"), support(&by_agent, "faults", "fault"));
    assert_eq!(support(&here, "probes", "name"), support(&by_agent, "probes", "name"));
    assert!(support(&here, "faults", "fault").iter().any(|(_, ok)| *ok), "{here}");

    // Not root: no probe, one line, non-zero.
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(faultline_bin())
        .arg("--endpoint")
        .arg(&nobody)
        .arg("caps")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}
