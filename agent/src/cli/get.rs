//! `faultline get ID`: one experiment with its counters; with --watch, followed until it
//! ends: a live screen on a terminal, a line for each change when piped.

use std::time::Duration;

use clap::Args;
use faultline_proto::v1 as pb;
use tokio_stream::StreamExt as _;
use tonic::Code;

use super::{
    Output,
    client::{self, Agent, Failure},
    display::{self, emit, events::event_text, live, progress::is_live, terminal},
    live_view::{self, Step},
    output::{Coded, eprint_line},
    parse::parse_interval,
};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Experiment id, or a unique prefix of one (at least 4 characters).
    pub id: String,
    /// Follow the experiment: redraw it every interval on a terminal (a line for each
    /// change when piped) until it ends or Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch redraws, e.g. 1s, 500ms (at least 100ms).
    #[arg(long, requires = "watch", value_parser = parse_interval, default_value = "1s")]
    pub interval: Duration,
}

pub async fn run(endpoint: &str, output: Output, a: GetArgs) -> anyhow::Result<()> {
    // The id, or the one experiment whose id the argument begins.
    let mut c = client::connect(endpoint).await?;
    let e = client::find_experiment(&mut c, &a.id).await?;
    if a.watch {
        return if output == Output::Table && terminal::stdout_is_terminal() {
            watch_live(endpoint, output, &e.id, a.interval).await
        } else {
            watch_lines(c, endpoint, output, &e.id, a.interval).await
        };
    }
    display::print_experiment(output, &e)
}

fn gone(id: &str) -> anyhow::Error {
    Coded::new(
        Code::NotFound,
        format!("experiment {id} is gone: the agent no longer knows it (restarted?)"),
    )
    .into()
}

/// On a terminal: the detail under a bar for the time left, until the experiment ends (then
/// its final state is printed on the shell's screen).
async fn watch_live(
    endpoint: &str,
    output: Output,
    id: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let ended = live_view::run(
        endpoint,
        interval,
        async |agent: &mut Agent, shown| match agent.get(id).await {
            Ok(e) if !is_live(&e) => Step::End(Ok(e)),
            Ok(e) => Step::Show(e),
            Err(Failure::NotFound(_)) if shown => Step::End(Err(gone(id))),
            Err(Failure::NotFound(s)) => Step::End(Err(Coded::new(Code::NotFound, s).into())),
            Err(f) => Step::Retry(f.text()),
        },
        |now, seen, error, size| live::detail_frame(id, interval, now, seen, error, size),
    )
    .await?;
    match ended {
        Some(e) => display::print_experiment(output, &e?),
        None => Ok(()),
    }
}

/// Piped: a line for each change (state, first hit) until the experiment ends; a broken
/// connection is made again and only what changed meanwhile is printed.
async fn watch_lines(
    c: client::Client,
    endpoint: &str,
    output: Output,
    id: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut agent = Agent::new(endpoint, interval);
    let mut sigs = terminal::Signals::install()?;
    // The first look (`find_experiment`) found something to follow.
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
                    eprint_line(&format!(
                        "{why}; retrying every {}",
                        faultline_core::units::human_duration(interval)
                    ));
                    outage = true;
                }
                if sigs.sleep(interval).await == terminal::Wake::Stop {
                    return Ok(());
                }
                continue;
            }
        };
        if outage {
            eprint_line("agent reachable again");
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
                let kind = display::events::event_name(ev.r#type);
                if !emit(&event_text(output, kind, ev.time.as_ref(), &e))? {
                    return Ok(());
                }
            }
            if !is_live(&e) {
                return Ok(());
            }
        }
        agent.client = None;
    }
}
