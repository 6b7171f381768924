//! What the live views show, as plain text: the table and screen of `faultline watch`, the
//! screen of `faultline get ID --watch`. No terminal I/O here: every function takes the time
//! and the width, so the tests can pin them.

use std::time::{Duration, SystemTime};

use faultline_core::{units::human_duration, wire::convert::system_time as time};
use faultline_proto::v1 as pb;

use super::{
    experiment::{self, state_name},
    progress::{TimeLeft, bar, ceil_secs, compact, counters_text, first_hit, is_live, time_left},
    summary::{fault_summary, target_summary},
};

/// `watch --all` also shows experiments that ended this recently.
pub const RECENT: Duration = Duration::from_secs(600);

/// Spaces between columns.
const SEP: usize = 2;
/// Bar cells when there is no terminal to fit (piped), and the most a wide one gets.
const BAR_PIPED: usize = 10;
const BAR_MIN: usize = 5;
const BAR_MAX: usize = 40;
/// Fault and target text never shrink below this.
const TEXT_MIN: usize = 12;
/// The experiments a `watch` frame shows: live ones (oldest first), then with `all` those
/// that ended within RECENT (latest first).
pub fn select(list: &[pb::Experiment], all: bool, now: SystemTime) -> Vec<pb::Experiment> {
    let created = |e: &pb::Experiment| time(e.created_at.as_ref()).unwrap_or(now);
    let mut live: Vec<_> = list.iter().filter(|e| is_live(e)).cloned().collect();
    live.sort_by(|a, b| created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id)));
    if all {
        let ended_at = |e: &pb::Experiment| time(e.ended_at.as_ref()).unwrap_or(now);
        let mut ended: Vec<_> = list
            .iter()
            .filter(|e| !is_live(e))
            .filter(|e| now.duration_since(ended_at(e)).unwrap_or_default() <= RECENT)
            .cloned()
            .collect();
        ended.sort_by(|a, b| ended_at(b).cmp(&ended_at(a)).then_with(|| a.id.cmp(&b.id)));
        live.extend(ended);
    }
    live
}
/// Column widths that fit `width`: columns above their minimum give up one character at a
/// time, the one with the most to spare first. May still exceed `width` when every column is
/// at its minimum (the caller cuts the lines).
pub fn fit(natural: &[usize], min: &[usize], width: usize) -> Vec<usize> {
    let mut w = natural.to_vec();
    let total = |w: &[usize]| w.iter().sum::<usize>() + SEP * w.len().saturating_sub(1);
    while total(&w) > width {
        let spare = w
            .iter()
            .zip(min)
            .enumerate()
            .filter(|(_, (w, m))| w > m)
            .max_by_key(|(i, (w, m))| (**w - **m, usize::MAX - i));
        let Some((i, _)) = spare else { break };
        w[i] -= 1;
    }
    w
}

/// At most `width` characters; a cut shows as "...".
pub fn cut(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width < 4 {
        return s.chars().take(width).collect();
    }
    s.chars().take(width - 3).chain("...".chars()).collect()
}

const HEADER: [&str; 7] = ["ID", "STATE", "FAULT", "TARGET", "FIRST HIT", "COUNTERS", "TIME LEFT"];
const FAULT: usize = 2;
const TARGET: usize = 3;
const TIME: usize = 6;

/// The table of `faultline watch`: fitted to `width` columns on a terminal (bars sized to
/// the room left), or at its natural width with short bars when `width` is None (piped).
pub fn watch_table(list: &[pb::Experiment], now: SystemTime, width: Option<usize>) -> String {
    let times: Vec<TimeLeft> = list.iter().map(|e| time_left(e, now)).collect();
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                experiment::state_cell(e),
                fault_summary(e.fault.as_ref()),
                target_summary(e),
                first_hit(e),
                counters_text(e),
            ]
        })
        .collect();
    // The bar's "42s" after it: as wide as the widest, so the bars line up.
    let label = times
        .iter()
        .filter_map(|t| match t {
            TimeLeft::Bar { left, .. } => Some(compact(ceil_secs(*left)).len()),
            TimeLeft::Text(_) => None,
        })
        .max();
    let text_w = times
        .iter()
        .filter_map(|t| match t {
            TimeLeft::Text(s) => Some(s.chars().count()),
            TimeLeft::Bar { .. } => None,
        })
        .max()
        .unwrap_or(0);
    let bar_w = |cells: usize| label.map(|l| cells + 3 + l).unwrap_or(0);
    let mut natural: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in natural.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let cells = if width.is_some() { BAR_MAX } else { BAR_PIPED };
    natural[TIME] = natural[TIME].max(text_w).max(bar_w(cells));
    let widths = match width {
        None => natural,
        Some(width) => {
            let mut min = natural.clone();
            min[FAULT] = natural[FAULT].min(TEXT_MIN);
            min[TARGET] = natural[TARGET].min(TEXT_MIN);
            // Bars start at 20 cells and may shrink to BAR_MIN; words to a few characters.
            min[TIME] = HEADER[TIME].len().max(text_w.min(BAR_MIN + 8)).max(bar_w(BAR_MIN));
            let mut pre = natural.clone();
            pre[TIME] = HEADER[TIME].len().max(text_w).max(bar_w(20));
            let mut w = fit(&pre, &min, width);
            // Room left over goes to the bar, up to BAR_MAX cells.
            let used = w.iter().sum::<usize>() + SEP * (w.len() - 1);
            if used < width && label.is_some() {
                w[TIME] = (w[TIME] + width - used).min(natural[TIME]);
            }
            w
        }
    };
    let bar_cells = label.map(|l| widths[TIME].saturating_sub(3 + l).max(1)).unwrap_or(0);
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let c = cut(c, *w);
            if i == last {
                s += &c;
            } else {
                s += &format!("{c:<w$}{}", " ".repeat(SEP));
            }
        }
        let s = s.trim_end().to_string();
        match width {
            Some(width) => cut(&s, width),
            None => s,
        }
    };
    let mut out = line(HEADER.iter().map(|h| h.to_string()).collect()) + "\n";
    for (r, t) in rows.into_iter().zip(&times) {
        let mut cells: Vec<String> = r.into_iter().collect();
        cells.push(match t {
            TimeLeft::Bar { left, total } => bar(*left, *total, bar_cells),
            TimeLeft::Text(s) => s.clone(),
        });
        out += &(line(cells) + "\n");
    }
    out
}

/// "12:34:56Z".
pub fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(11..).unwrap_or(&s).to_string()
}

/// What the agent gave last, and when.
pub struct Seen<T> {
    pub at: SystemTime,
    pub data: T,
}

/// The title and status lines above a live view; `error` (why the agent gave no answer)
/// replaces the status.
fn heading(
    title: &str,
    now: SystemTime,
    status: &str,
    error: Option<&str>,
    seen_at: Option<SystemTime>,
) -> Vec<String> {
    let mut lines = vec![format!("{title}  {}  (Ctrl-C quits)", clock(now))];
    match error {
        Some(err) => {
            let last = seen_at.map(|t| format!("; showing what it said at {}", clock(t)));
            lines.push(format!("{err} (retrying){}", last.unwrap_or_default()));
        }
        None => lines.push(status.to_string()),
    }
    lines.push(String::new());
    lines
}

/// The columns a frame may fill: all but the last, where a terminal waits to wrap (and
/// clearing the rest of the line would take the last character with it).
fn usable(cols: usize) -> usize {
    cols.saturating_sub(1).max(20)
}

/// Cuts a frame to the terminal: lines to `cols`, and to `rows` lines (the last one saying
/// how many were left out).
fn fit_frame(lines: Vec<String>, cols: usize, rows: usize) -> String {
    let rows = rows.max(2);
    let mut lines: Vec<String> = lines.into_iter().map(|l| cut(&l, cols)).collect();
    if lines.len() > rows {
        let more = lines.len() - (rows - 1);
        lines.truncate(rows - 1);
        lines.push(cut(&format!("... {more} more lines (a taller terminal shows them)"), cols));
    }
    lines.join("\n") + "\n"
}

/// One full screen of `faultline watch`.
pub fn watch_frame(
    endpoint: &str,
    interval: Duration,
    all: bool,
    now: SystemTime,
    seen: Option<&Seen<Vec<pb::Experiment>>>,
    error: Option<&str>,
    (cols, rows): (usize, usize),
) -> String {
    let cols = usable(cols);
    let title = format!("faultline watch  {endpoint}  every {}", human_duration(interval));
    let shown: Vec<pb::Experiment> = seen.map(|s| select(&s.data, all, now)).unwrap_or_default();
    let live = shown.iter().filter(|e| is_live(e)).count();
    let status = if all {
        format!("{live} active, {} ended in the last {}", shown.len() - live, compact(RECENT))
    } else {
        format!("{live} active")
    };
    let mut lines = heading(&title, now, &status, error, seen.map(|s| s.at));
    if seen.is_some() {
        lines.extend(watch_table(&shown, now, Some(cols)).lines().map(str::to_string));
        if shown.is_empty() {
            lines.push(if all {
                "(no experiments active or recently ended)".into()
            } else {
                "(no active experiments)".into()
            });
        }
    }
    fit_frame(lines, cols, rows)
}

/// One full screen of `faultline get ID --watch`: a bar for the time left over the detail.
pub fn detail_frame(
    id: &str,
    interval: Duration,
    now: SystemTime,
    seen: Option<&Seen<pb::Experiment>>,
    error: Option<&str>,
    (cols, rows): (usize, usize),
) -> String {
    let cols = usable(cols);
    let title = format!("faultline get {id} --watch  every {}", human_duration(interval));
    let status = seen.map(|s| format!("{} {}", state_name(s.data.state), counters_text(&s.data)));
    let mut lines = heading(&title, now, &status.unwrap_or_default(), error, seen.map(|s| s.at));
    if let Some(s) = seen {
        let e = &s.data;
        let mut rows = experiment::detail_rows(e);
        let value_at = experiment::label_width(&rows) + 1;
        let left = match time_left(e, now) {
            TimeLeft::Bar { left, total } => {
                let label = compact(ceil_secs(left)).len();
                let cells = cols.saturating_sub(value_at + 3 + label).clamp(BAR_MIN, 50);
                bar(left, total, cells)
            }
            TimeLeft::Text(t) => t,
        };
        rows.insert(0, ("time left", left));
        lines.extend(experiment::detail_text(&rows).lines().map(str::to_string));
    }
    fit_frame(lines, cols, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::display::fixtures::{loss, t0, ts};

    #[test]
    fn fitting_shrinks_the_roomiest_column_and_stops_at_minimums() {
        // 10 + 30 + 20 + 2 * 2 separators = 64.
        assert_eq!(fit(&[10, 30, 20], &[10, 12, 8], 80), vec![10, 30, 20]);
        // The wider spare goes first; then they take turns.
        assert_eq!(fit(&[10, 30, 20], &[10, 12, 8], 54), vec![10, 22, 18]);
        assert_eq!(fit(&[10, 30, 20], &[10, 12, 8], 40), vec![10, 15, 11]);
        assert_eq!(fit(&[10, 30, 20], &[10, 12, 8], 10), vec![10, 12, 8]);
        assert_eq!(cut("abcdefgh", 6), "abc...");
        assert_eq!(cut("abcdefgh", 8), "abcdefgh");
        assert_eq!(cut("abcdefgh", 3), "abc");
    }
    #[test]
    fn table_fits_the_terminal_and_lines_up_bars() {
        let now = t0() + Duration::from_secs(18);
        let mut long = loss("bbbbbbbbbbbb", pb::State::Active, t0(), 600);
        long.target = Some(pb::Target {
            kind: Some(pb::target::Kind::CgroupPath(format!("/{}", "x".repeat(60)))),
        });
        let list = vec![loss("aaaaaaaaaaaa", pb::State::Active, t0(), 60), long];
        for width in [100, 120, 200] {
            let t = watch_table(&list, now, Some(width));
            let lines: Vec<&str> = t.lines().collect();
            assert_eq!(lines.len(), 3, "{t}");
            assert!(lines.iter().all(|l| l.chars().count() <= width), "{width}:\n{t}");
            assert!(lines[1].starts_with("aaaaaaaaaaaa  active"), "{t}");
            assert!(lines[1].contains("matched 1000 dropped 503"), "{t}");
            // 42 of 60 seconds left; the two bars start in the same column.
            assert!(lines[1].contains("] 42s"), "{t}");
            assert_eq!(lines[1].find('['), lines[2].find('['), "{t}");
            if width == 100 {
                assert!(lines[2].contains("..."), "the long target is cut:\n{t}");
            }
        }
        // Wider terminals get longer bars.
        let bar_len = |w| {
            let t = watch_table(&list, now, Some(w));
            let l = t.lines().nth(1).unwrap_or_default().to_string();
            l.rfind(']').unwrap_or(0) - l.find('[').unwrap_or(0)
        };
        assert!(bar_len(200) > bar_len(120), "{} {}", bar_len(200), bar_len(120));
        // Piped: nothing cut, ten-cell bars.
        let piped = watch_table(&list, now, None);
        assert!(piped.contains(&"x".repeat(60)), "{piped}");
        assert!(piped.contains("[#######---] 42s"), "{piped}");
        assert!(!piped.contains('\x1b'));
    }

    #[test]
    fn frames_say_when_the_agent_is_unreachable() {
        let now = t0() + Duration::from_secs(18);
        let seen = Seen { at: t0(), data: vec![loss("aaaaaaaaaaaa", pb::State::Active, t0(), 60)] };
        let ok = watch_frame("/s", Duration::from_secs(1), false, now, Some(&seen), None, (80, 24));
        assert!(ok.contains("1 active") && ok.contains("aaaaaaaaaaaa"), "{ok}");
        let down = watch_frame(
            "/s",
            Duration::from_secs(1),
            false,
            now,
            Some(&seen),
            Some("agent unreachable at /s: connection refused"),
            (80, 24),
        );
        assert!(down.contains("agent unreachable at /s: connection refused (retrying)"), "{down}");
        assert!(down.contains("aaaaaaaaaaaa"), "the last rows stay:\n{down}");
        let never =
            watch_frame("/s", Duration::from_secs(1), false, now, None, Some("refused"), (80, 3));
        assert_eq!(never.lines().count(), 3, "{never}");
        // A short terminal gets as many lines as it has, the last one saying what is left out.
        let many = Seen {
            at: t0(),
            data: (0..30).map(|i| loss(&format!("{i:012}"), pb::State::Active, t0(), 60)).collect(),
        };
        let f = watch_frame("/s", Duration::from_secs(1), false, now, Some(&many), None, (80, 10));
        assert_eq!(f.lines().count(), 10, "{f}");
        assert!(f.lines().last().unwrap_or_default().contains("more lines"), "{f}");
    }

    #[test]
    fn the_detail_screen_lines_up_its_time_bar_with_the_values() {
        use crate::cli::display::fixtures::{active, all_counters};
        let now = t0() + Duration::from_secs(18);
        let kill = active(
            "bbbb",
            pb::fault::Kind::ProcessKill(Default::default()),
            pb::target::Kind::Pid(4242),
            all_counters(),
        );
        let seen = Seen { at: now, data: kill };
        let f = detail_frame("bbbb", Duration::from_secs(1), now, Some(&seen), None, (120, 40));
        let at = |label: &str| {
            let l = f.lines().find(|l| l.starts_with(label)).unwrap_or_default();
            l[label.len()..].find(|c| c != ' ').map(|i| i + label.len())
        };
        assert_eq!(at("time left"), Some(20), "{f}");
        assert_eq!(at("processes signalled"), Some(20), "{f}");
        assert!(f.contains("time left           [#"), "{f}");
        assert!(f.lines().all(|l| l.chars().count() < 120), "{f}");
        assert!(f.contains("every 1s") && f.contains("active signalled 3"), "{f}");
    }

    #[test]
    fn all_adds_recently_ended() {
        let now = t0() + Duration::from_secs(3600);
        let mut recent = loss("recent", pb::State::Expired, t0(), 60);
        recent.ended_at = Some(ts(now - Duration::from_secs(5)));
        let mut old = loss("old", pb::State::Cancelled, t0(), 60);
        old.ended_at = Some(ts(now - RECENT - Duration::from_secs(1)));
        let live = loss("live", pb::State::Active, now - Duration::from_secs(1), 60);
        let list = vec![recent, old, live];
        let ids = |v: Vec<pb::Experiment>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&list, false, now)), vec!["live"]);
        assert_eq!(ids(select(&list, true, now)), vec!["live", "recent"]);
        assert!(watch_table(&select(&list, true, now), now, None).contains("ended 5s ago"));
    }
}
