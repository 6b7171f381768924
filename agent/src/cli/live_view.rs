//! The one loop of the live views (`faultline watch` and `faultline get ID --watch` on a
//! terminal): ask the agent every interval, redraw the screen, and ride out the agent's
//! restarts: reconnect, and say it is unreachable meanwhile. Ctrl-C or SIGTERM ends the view;
//! Ctrl-Z gives the shell its screen back until `fg`.

use std::time::{Duration, Instant, SystemTime};

use super::{
    client::Agent,
    display::{
        live::Seen,
        terminal::{self, Screen, Signals, Wake},
    },
};

/// What a live view makes of one answer from the agent (or of its silence).
pub enum Step<T, R> {
    /// Show this until the next answer.
    Show(T),
    /// No answer: say why above the last thing shown, and ask again next interval.
    Retry(String),
    /// The view is over with this (the screen is left before the loop returns it).
    End(R),
}

/// Runs a live view until `ask` ends it (Some) or a signal does (None). `ask` is called every
/// `interval` with whether anything was shown yet; `frame` renders the screen from what was
/// shown last, the error of the last ask, the time and the terminal's (columns, rows).
pub async fn run<T, R>(
    endpoint: &str,
    interval: Duration,
    mut ask: impl AsyncFnMut(&mut Agent, bool) -> Step<T, R>,
    frame: impl Fn(SystemTime, Option<&Seen<T>>, Option<&str>, (usize, usize)) -> String,
) -> anyhow::Result<Option<R>> {
    let mut agent = Agent::new(endpoint, interval);
    let mut sigs = Signals::install()?;
    let mut screen = Screen::enter();
    let mut seen: Option<Seen<T>> = None;
    let mut error: Option<String> = None;
    let mut next = Instant::now();
    let end = loop {
        if Instant::now() >= next {
            let Some(step) = sigs.unless_stopped(ask(&mut agent, seen.is_some())).await else {
                break None;
            };
            match step {
                Step::Show(data) => {
                    seen = Some(Seen { at: SystemTime::now(), data });
                    error = None;
                }
                Step::Retry(why) => error = Some(why),
                Step::End(r) => break Some(r),
            }
            next = Instant::now() + interval;
        }
        screen.draw(&frame(SystemTime::now(), seen.as_ref(), error.as_deref(), terminal::size()));
        match sigs.sleep(next.saturating_duration_since(Instant::now())).await {
            Wake::Tick | Wake::Resize => {}
            Wake::Suspend => screen.suspend(),
            Wake::Stop => break None,
        }
    };
    drop(screen);
    Ok(end)
}
