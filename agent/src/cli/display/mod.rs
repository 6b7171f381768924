//! Everything the client shows: experiments as tables, detail and JSON (`experiment`), a
//! fault and a target in words (`summary`), how far an experiment got (`progress`), the live
//! screens of `watch` and `get --watch` (`live`), event lines (`events`), capabilities
//! (`caps`), and the terminal those screens are drawn on (`terminal`).

pub mod caps;
pub mod events;
pub mod experiment;
#[cfg(test)]
mod fixtures;
pub mod live;
pub mod plan;
pub mod progress;
pub mod summary;
pub mod terminal;

use std::io::Write as _;

use faultline_proto::v1 as pb;

use super::{Output, output as out};

/// `ls`: a table ("(no experiments)" when there are none), or a JSON list (`[]` then).
pub fn print_experiments(output: Output, list: &[pb::Experiment]) -> anyhow::Result<()> {
    match output {
        Output::Table => {
            out::print(&experiment::experiments_table(list, std::time::SystemTime::now()))
        }
        Output::Json => {
            let v: Vec<_> = list.iter().map(experiment::experiment_json).collect();
            out::println(&serde_json::to_string_pretty(&v)?)
        }
    }
}

pub fn print_experiment(output: Output, e: &pb::Experiment) -> anyhow::Result<()> {
    match output {
        Output::Table => out::print(&experiment::experiment_detail(e)),
        Output::Json => {
            out::println(&serde_json::to_string_pretty(&experiment::experiment_json(e))?)
        }
    }
}

/// A dry run's answer.
pub fn print_plan(output: Output, p: &pb::Plan) -> anyhow::Result<()> {
    match output {
        Output::Table => out::print(&plan::plan_text(p)),
        Output::Json => out::println(&serde_json::to_string_pretty(&plan::plan_json(p))?),
    }
}

/// Writes one line to stdout; Ok(false) when the reader went away (`| head`), which ends the
/// command quietly.
pub fn emit(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s += c;
            } else {
                s += &format!("{c:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
