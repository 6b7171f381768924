//! The commands that keep running: `faultline watch` (a live table, or one snapshot when
//! piped), `faultline get ID --watch` (one experiment until it ends) and `faultline events`
//! (the agent's event stream, one line per event). The live views poll the agent and ride out
//! its restarts: they reconnect, and say it is unreachable meanwhile.

use std::{
    io::Write as _,
    time::{Duration, Instant, SystemTime},
};

use anyhow::bail;
use faultline_proto::v1 as pb;
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;

use super::{
    Output, client,
    live::{self, Seen},
    print_experiment, status,
    term::{self, Screen, Signals, Wake},
    view,
};
use faultline_core::wire::convert;

/// A connection to the agent that is made again after it broke.
struct Agent {
    endpoint: String,
    client: Option<client::Client>,
    /// Longest wait for a connection or an answer.
    timeout: Duration,
}

/// Why a call to the agent did not give an answer.
enum Failure {
    /// The agent said no such experiment.
    NotFound(String),
    /// Not reachable, or an error worth retrying: the text for the status line.
    Retry(String),
}

impl Agent {
    fn new(endpoint: &str, interval: Duration) -> Agent {
        Agent {
            endpoint: endpoint.to_string(),
            client: None,
            timeout: interval.max(Duration::from_secs(3)),
        }
    }

    async fn client(&mut self) -> Result<client::Client, Failure> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = match tokio::time::timeout(self.timeout, client::connect(&self.endpoint)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.unreachable(&e.root_cause().to_string())),
            Err(_) => return Err(self.unreachable("no answer")),
        };
        self.client = Some(c.clone());
        Ok(c)
    }

    fn unreachable(&self, why: &str) -> Failure {
        Failure::Retry(format!("agent unreachable at {}: {why}", self.endpoint))
    }

    /// Runs one call; a failed one drops the connection, so the next call makes a new one.
    async fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(client::Client) -> Result<T, tonic::Status>,
    ) -> Result<T, Failure> {
        let c = self.client().await?;
        let r = tokio::time::timeout(self.timeout, f(c)).await;
        let s = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) => s,
            Err(_) => tonic::Status::deadline_exceeded("no answer"),
        };
        self.client = None;
        use tonic::Code;
        Err(match s.code() {
            Code::NotFound => Failure::NotFound(format!("{:?}: {}", s.code(), s.message())),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                self.unreachable(s.message())
            }
            code => Failure::Retry(format!("agent error: {code:?}: {}", s.message())),
        })
    }

    async fn list(&mut self) -> Result<Vec<pb::Experiment>, Failure> {
        self.call(async |mut c| {
            c.list(pb::ListRequest::default()).await.map(|r| r.into_inner().experiments)
        })
        .await
    }

    async fn get(&mut self, id: &str) -> Result<pb::Experiment, Failure> {
        let req = pb::GetRequest { id: id.to_string() };
        self.call(async |mut c| c.get(req).await.map(|r| r.into_inner())).await
    }
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::NotFound(s) | Failure::Retry(s) => s,
        }
    }
}

/// Writes one line to stdout; Ok(false) when the reader went away (`| head`), which ends the
/// command quietly.
fn emit(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn event_json(kind: &str, at: Option<&prost_types::Timestamp>, e: &pb::Experiment) -> Value {
    let mut v = serde_json::to_value(view::experiment_json(e)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("event".into(), json!(kind));
        let at = view::rfc3339(at)
            .unwrap_or_else(|| humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        m.insert("time".into(), json!(at));
    }
    v
}

fn event_text(
    output: Output,
    kind: &str,
    at: Option<&prost_types::Timestamp>,
    e: &pb::Experiment,
) -> String {
    match output {
        Output::Json => event_json(kind, at, e).to_string(),
        Output::Table => live::event_line(kind, at, e, SystemTime::now()),
    }
}

/// `faultline watch`: a live table on a terminal; one snapshot otherwise (or with -o json).
pub async fn watch(
    endpoint: &str,
    output: Output,
    interval: Duration,
    all: bool,
) -> anyhow::Result<()> {
    if output == Output::Table && term::stdout_is_terminal() {
        return watch_live(endpoint, interval, all).await;
    }
    let mut c = client::connect(endpoint).await?;
    let list = c.list(pb::ListRequest::default()).await.map_err(status)?.into_inner().experiments;
    let now = SystemTime::now();
    let shown = live::select(&list, all, now);
    match output {
        Output::Table => {
            emit(live::watch_table(&shown, now, None).trim_end())?;
        }
        Output::Json => {
            let v: Vec<_> = shown.iter().map(view::experiment_json).collect();
            emit(&serde_json::to_string_pretty(&v)?)?;
        }
    }
    Ok(())
}

async fn watch_live(endpoint: &str, interval: Duration, all: bool) -> anyhow::Result<()> {
    let mut agent = Agent::new(endpoint, interval);
    let mut sigs = Signals::install()?;
    let mut screen = Screen::enter();
    let mut seen: Option<Seen<Vec<pb::Experiment>>> = None;
    let mut error: Option<String> = None;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            let Some(r) = sigs.unless_stopped(agent.list()).await else { break };
            match r {
                Ok(list) => {
                    seen = Some(Seen { at: SystemTime::now(), data: list });
                    error = None;
                }
                Err(f) => error = Some(f.text()),
            }
            next = Instant::now() + interval;
        }
        let frame = live::watch_frame(
            endpoint,
            interval,
            all,
            SystemTime::now(),
            seen.as_ref(),
            error.as_deref(),
            term::size(),
        );
        screen.draw(&frame);
        match sigs.sleep(next.saturating_duration_since(Instant::now())).await {
            Wake::Tick | Wake::Resize => {}
            Wake::Suspend => screen.suspend(),
            Wake::Stop => break,
        }
    }
    drop(screen);
    Ok(())
}

/// `faultline get ID --watch`.
pub async fn get_watch(
    endpoint: &str,
    output: Output,
    id: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    if output == Output::Table && term::stdout_is_terminal() {
        get_watch_live(endpoint, output, id, interval).await
    } else {
        get_watch_lines(endpoint, output, id, interval).await
    }
}

fn gone(id: &str) -> anyhow::Error {
    anyhow::anyhow!("NotFound: experiment {id} is gone: the agent no longer knows it (restarted?)")
}

async fn get_watch_live(
    endpoint: &str,
    output: Output,
    id: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut agent = Agent::new(endpoint, interval);
    let mut sigs = Signals::install()?;
    let mut screen = Screen::enter();
    let mut seen: Option<Seen<pb::Experiment>> = None;
    let mut error: Option<String> = None;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            let Some(r) = sigs.unless_stopped(agent.get(id)).await else { break };
            match r {
                Ok(e) if !live::is_live(&e) => {
                    drop(screen);
                    return print_experiment(output, &e);
                }
                Ok(e) => {
                    seen = Some(Seen { at: SystemTime::now(), data: e });
                    error = None;
                }
                Err(Failure::NotFound(s)) => {
                    drop(screen);
                    if seen.is_some() {
                        return Err(gone(id));
                    }
                    bail!("{s}");
                }
                Err(f) => error = Some(f.text()),
            }
            next = Instant::now() + interval;
        }
        let frame = live::detail_frame(
            id,
            interval,
            SystemTime::now(),
            seen.as_ref(),
            error.as_deref(),
            term::size(),
        );
        screen.draw(&frame);
        match sigs.sleep(next.saturating_duration_since(Instant::now())).await {
            Wake::Tick | Wake::Resize => {}
            Wake::Suspend => screen.suspend(),
            Wake::Stop => break,
        }
    }
    drop(screen);
    Ok(())
}

/// Piped: a line for each change (state, first hit) until the experiment ends; a broken
/// connection is made again and only what changed meanwhile is printed.
async fn get_watch_lines(
    endpoint: &str,
    output: Output,
    id: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut agent = Agent::new(endpoint, interval);
    let mut sigs = Signals::install()?;
    // The first look decides whether there is anything to follow.
    let mut c = client::connect(endpoint).await?;
    c.get(pb::GetRequest { id: id.to_string() }).await.map_err(status)?;
    agent.client = Some(c);
    let mut last: Option<(i32, bool)> = None;
    let mut outage = false;
    loop {
        let stream = sigs
            .unless_stopped(agent.call(async |mut c| {
                let req = pb::WatchRequest {
                    id: id.to_string(),
                    send_initial: true,
                    snapshot_interval: None,
                };
                // Only the initial state is checked for existence: a later NotFound means
                // the agent forgot the experiment.
                c.get(pb::GetRequest { id: id.to_string() }).await?;
                c.watch(req).await.map(|r| r.into_inner())
            }))
            .await;
        let mut stream = match stream {
            None => return Ok(()),
            Some(Ok(s)) => s,
            Some(Err(Failure::NotFound(_))) => return Err(gone(id)),
            Some(Err(Failure::Retry(why))) => {
                if !outage {
                    eprintln!("{why}; retrying every {}", humantime::format_duration(interval));
                    outage = true;
                }
                if sigs.sleep(interval).await == Wake::Stop {
                    return Ok(());
                }
                continue;
            }
        };
        if outage {
            eprintln!("agent reachable again");
            outage = false;
        }
        loop {
            let Some(ev) = sigs.unless_stopped(stream.next()).await else { return Ok(()) };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                // The agent went away: connect again.
                Some(Err(_)) | None => break,
            };
            let Some(e) = ev.experiment else { continue };
            if ev.r#type == pb::EventType::Snapshot as i32 {
                continue;
            }
            let key = (e.state, e.first_hit_at.is_some());
            if last != Some(key) {
                last = Some(key);
                if !emit(&event_text(output, live::event_name(ev.r#type), ev.time.as_ref(), &e))? {
                    return Ok(());
                }
            }
            if !live::is_live(&e) {
                return Ok(());
            }
        }
        agent.client = None;
    }
}

/// `faultline events`: the agent's events as they come, one line each.
pub async fn events(
    endpoint: &str,
    output: Output,
    id: Option<String>,
    no_initial: bool,
    snapshots: Option<Duration>,
) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let req = pb::WatchRequest {
        id: id.unwrap_or_default(),
        send_initial: !no_initial,
        snapshot_interval: snapshots.map(convert::duration),
    };
    let mut stream = c.watch(req).await.map_err(status)?.into_inner();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(status)?;
        let Some(e) = ev.experiment else { continue };
        if !emit(&event_text(output, live::event_name(ev.r#type), ev.time.as_ref(), &e))? {
            break;
        }
    }
    Ok(())
}
