//! The bench report: figures with their goals, written as target/bench/report.md and
//! report.json; `--check` compares the ratios with bench/baseline.json.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Report headings, in the order the issue lists them.
pub const HEADINGS: &[&str] = &[
    "Datapath cost",
    "Syscall path cost",
    "Inject-to-effect latency",
    "Accuracy",
    "System-call latency",
    "Scale",
    "Load",
];

#[derive(Clone, Copy)]
pub enum Goal {
    /// value >= x
    AtLeast(f64),
    /// value < x
    Below(f64),
    /// |value - target| <= tolerance
    Within(f64, f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtLeast(x) => v >= x,
            Goal::Below(x) => v < x,
            Goal::Within(t, tol) => (v - t).abs() <= tol,
        }
    }

    fn text(self, unit: &str) -> String {
        let u = if unit == "ratio" { String::new() } else { format!(" {unit}") };
        match self {
            Goal::AtLeast(x) => format!(">= {x}{u}"),
            Goal::Below(x) => format!("< {x}{u}"),
            Goal::Within(t, tol) => format!("{t} ± {tol}{u}"),
        }
    }
}

/// How `--check` judges a ratio against the baseline.
#[derive(Clone, Copy)]
pub enum Better {
    /// A cost ratio (with / without): a regression is falling more than 10% below.
    Higher,
    /// An accuracy figure with a Within goal, as the ratio measured / asked: a regression is
    /// moving more than 0.10 further from 1.
    NearOne,
}

pub struct Figure {
    pub id: String,
    pub heading: &'static str,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub goal: Option<Goal>,
    /// Ratios only: compared with the baseline by `--check`.
    pub check: Option<Better>,
    pub note: String,
    /// An incumbent's figure, shown next to faultline's: its goal is a reference, not one of
    /// faultline's goals.
    pub reference: bool,
}

impl Figure {
    pub fn new(
        heading: &'static str,
        id: &str,
        label: &str,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Figure {
            id: id.to_string(),
            heading,
            label: label.to_string(),
            value,
            unit,
            goal: None,
            check: None,
            note: String::new(),
            reference: false,
        }
    }
    pub fn goal(mut self, g: Goal) -> Self {
        self.goal = Some(g);
        self
    }
    pub fn check(mut self, b: Better) -> Self {
        self.check = Some(b);
        self
    }
    /// Marks an incumbent's figure (see `reference`).
    pub fn reference(mut self, yes: bool) -> Self {
        self.reference = yes;
        self
    }
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }
    /// What `--check` compares: the value, or for an accuracy figure measured / asked.
    pub fn ratio(&self) -> f64 {
        match (self.check, self.goal) {
            (Some(Better::NearOne), Some(Goal::Within(t, _))) if t != 0.0 => self.value / t,
            _ => self.value,
        }
    }
    pub fn met(&self) -> Option<bool> {
        self.goal.map(|g| g.met(self.value))
    }
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Markdown paragraphs and tables under a heading: method and raw medians.
    pub details: Vec<(&'static str, String)>,
    pub failures: Vec<String>,
    pub quick: bool,
    pub sections: Vec<String>,
    pub seconds: f64,
}

fn fmt_value(v: &f64, unit: &str) -> String {
    let v = *v;
    if unit == "ratio" {
        return format!("{v:.3}");
    }
    if v.abs() >= 1000.0 { format!("{v:.0} {unit}") } else { format!("{v:.2} {unit}") }
}

impl Report {
    pub fn add(&mut self, f: Figure) {
        let met = match (f.met(), f.reference) {
            (Some(true), false) => " (goal met)",
            (Some(false), false) => " (GOAL NOT MET)",
            (Some(true), true) => " (incumbent, within)",
            (Some(false), true) => " (incumbent, outside)",
            (None, _) => "",
        };
        println!("   {:<60} {}{met}", f.label, fmt_value(&f.value, f.unit));
        self.figures.push(f);
    }

    pub fn detail(&mut self, heading: &'static str, text: impl Into<String>) {
        self.details.push((heading, text.into()));
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# faultline benchmark report\n\n");
        let _ = writeln!(
            md,
            "Kernel {}, {} CPUs; sections: {}; {}mode; {:.0} s. Reproduce: `cargo xtask bench{}`.\n",
            uname_r(),
            cpus(),
            self.sections.join(" "),
            if self.quick { "quick " } else { "full " },
            self.seconds,
            if self.quick { " --quick" } else { "" }
        );
        md.push_str(
            "Every ratio is the median of per-round ratios of runs alternated in one run \
             (A B, B A, ...), never a single absolute time.\n\n",
        );
        for f in &self.failures {
            let _ = writeln!(md, "**Section failed:** {f}\n");
        }
        for h in HEADINGS {
            let figs: Vec<&Figure> = self.figures.iter().filter(|f| f.heading == *h).collect();
            let det: Vec<&String> =
                self.details.iter().filter(|(dh, _)| dh == h).map(|(_, t)| t).collect();
            if figs.is_empty() && det.is_empty() {
                continue;
            }
            let _ = writeln!(md, "## {h}\n");
            if !figs.is_empty() {
                md.push_str("| figure | value | goal | met | notes |\n|---|---|---|---|---|\n");
                for f in figs {
                    let goal = f.goal.map(|g| g.text(f.unit)).unwrap_or_else(|| "-".into());
                    let met = match (f.met(), f.reference) {
                        (Some(true), false) => "yes",
                        (Some(false), false) => "**no**",
                        (Some(true), true) => "(yes, incumbent)",
                        (Some(false), true) => "(no, incumbent)",
                        (None, _) => "-",
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {goal} | {met} | {} |",
                        f.label,
                        fmt_value(&f.value, f.unit),
                        f.note.replace('|', "/")
                    );
                }
                md.push('\n');
            }
            for d in det {
                md.push_str(d);
                md.push_str("\n\n");
            }
        }
        let missed: Vec<&Figure> = self.figures.iter().filter(|f| f.met() == Some(false)).collect();
        md.push_str("## Goals not met\n\n");
        if missed.is_empty() {
            md.push_str("None.\n");
        }
        for f in missed {
            let goal = f.goal.map(|g| g.text(f.unit)).unwrap_or_default();
            let _ = writeln!(md, "- {}: {} (goal {goal})", f.label, fmt_value(&f.value, f.unit));
        }
        md
    }

    pub fn json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "id": f.id,
                    "heading": f.heading,
                    "label": f.label,
                    "value": f.value,
                    "unit": f.unit,
                    "goal": f.goal.map(|g| g.text(f.unit)),
                    "met": f.met(),
                    "incumbent": f.reference,
                    "check": f.check.map(|b| match b { Better::Higher => "higher", Better::NearOne => "near_one" }),
                    "note": f.note,
                })
            })
            .collect();
        let details: Vec<Value> =
            self.details.iter().map(|(h, t)| json!({"heading": h, "text": t})).collect();
        json!({
            "kernel": uname_r(),
            "cpus": cpus(),
            "quick": self.quick,
            "sections": self.sections,
            "seconds": self.seconds,
            "failures": self.failures,
            "figures": figures,
            "details": details,
        })
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&self.json())?)?;
        Ok(())
    }

    /// The ratios `--check` compares, as the baseline file keeps them.
    pub fn baseline(&self) -> Value {
        let mut ratios = serde_json::Map::new();
        for f in self.figures.iter().filter(|f| !f.reference) {
            if let Some(b) = f.check {
                let better = match b {
                    Better::Higher => "higher",
                    Better::NearOne => "near_one",
                };
                ratios.insert(
                    f.id.clone(),
                    json!({"value": f.ratio(), "better": better, "label": f.label}),
                );
            }
        }
        json!({
            "about": "Ratios from `cargo xtask bench --save-baseline`; `cargo xtask bench --check` fails when one regresses by more than 10%.",
            "kernel": uname_r(),
            "quick": self.quick,
            "ratios": ratios,
        })
    }

    /// Compares this run's ratios with the baseline: one line per ratio, an error when one
    /// regressed by more than 10%.
    pub fn check(&self, baseline: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(baseline)
            .with_context(|| format!("reading {}", baseline.display()))?;
        let base: Value = serde_json::from_str(&text)?;
        let ratios = base["ratios"].as_object().context("baseline without ratios")?;
        let mut regressed = Vec::new();
        println!("== check against {}", baseline.display());
        for f in self.figures.iter().filter(|f| f.check.is_some() && !f.reference) {
            let v = f.ratio();
            let Some(b) = ratios.get(&f.id).and_then(|r| r["value"].as_f64()) else {
                println!("   {:<60} {v:.3} (not in the baseline)", f.label);
                continue;
            };
            let bad = match f.check {
                Some(Better::Higher) => v < b * 0.9,
                Some(Better::NearOne) => (v - 1.0).abs() > (b - 1.0).abs() + 0.10,
                None => false,
            };
            println!(
                "   {:<60} {v:.3} (baseline {b:.3}){}",
                f.label,
                if bad { "  REGRESSED" } else { "" }
            );
            if bad {
                regressed.push(format!("{}: {v:.3}, baseline {b:.3}", f.label));
            }
        }
        if !regressed.is_empty() {
            bail!("regressed by more than 10%:\n  {}", regressed.join("\n  "));
        }
        Ok(())
    }
}

pub fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
