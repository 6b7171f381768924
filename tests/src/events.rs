//! `faultline -o json events ID` run beside a test: each event as it arrives, with when the
//! test read it (what an operator watching the events would see, a few ms after the agent
//! sent it).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{Agent, faultline_bin};

pub struct Events {
    child: Child,
    rx: mpsc::Receiver<(Instant, serde_json::Value)>,
}

impl Events {
    /// The events of experiment `id` from now on (not its current state).
    pub fn of(agent: &Agent, id: &str) -> Events {
        let mut child = Command::new(faultline_bin())
            .args(["--endpoint", &agent.endpoint(), "-o", "json", "events", id, "--no-initial"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running faultline events");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str(&line) else { continue };
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        Events { child, rx }
    }

    /// The first event of type `kind` ("STATE", "FOLLOWED", ...) within `limit`, and when it
    /// was read; the events before it are passed over.
    pub fn wait(&self, kind: &str, limit: Duration) -> (Instant, serde_json::Value) {
        let t0 = Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            match self.rx.recv_timeout(left) {
                Ok((at, v)) if v["event"] == kind => return (at, v),
                Ok(_) => {}
                Err(_) => panic!("no {kind} event within {limit:?}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
