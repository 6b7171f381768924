//! `faultline completions SHELL` and `faultline man`: the shell completion scripts and the
//! manual pages, made from the clap definitions, so they never disagree with `--help`.
//! The container image and the systemd install write them where the system looks.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, ValueEnum};

use super::{Cli, output};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash (install as /usr/share/bash-completion/completions/faultline), zsh
    /// (/usr/share/zsh/vendor-completions/_faultline) or fish
    /// (/usr/share/fish/vendor_completions.d/faultline.fish).
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (faultline.1, faultline-net-loss.1, ...) into this
    /// directory, e.g. /usr/share/man/man1, instead of printing faultline(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The completion script for `shell`.
pub fn completion(shell: ShellArg) -> String {
    let shell = match shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "faultline", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// faultline(1): the top command, its options and the list of commands.
pub fn man_page() -> anyhow::Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf).context("rendering the man page")?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub fn run_completions(a: &CompletionsArgs) -> anyhow::Result<()> {
    output::print(&completion(a.shell))
}

pub fn run_man(a: &ManArgs) -> anyhow::Result<()> {
    match &a.dir {
        None => output::print(&man_page()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERBS: [&str; 12] = [
        "serve",
        "net",
        "sys",
        "stress",
        "process",
        "ls",
        "get",
        "cancel",
        "caps",
        "watch",
        "events",
        "completions",
    ];

    #[test]
    fn completions_know_every_verb_and_flag() {
        for shell in [ShellArg::Bash, ShellArg::Zsh, ShellArg::Fish] {
            let script = completion(shell);
            for verb in VERBS {
                assert!(script.contains(verb), "{shell:?} completion lacks {verb}");
            }
            for flag in ["every-nth", "tls-client-cert", "tcp-listen", "follow-children"] {
                assert!(script.contains(flag), "{shell:?} completion lacks --{flag}");
            }
        }
        assert!(completion(ShellArg::Bash).contains("complete -F _faultline"));
        assert!(completion(ShellArg::Zsh).starts_with("#compdef faultline"));
        assert!(completion(ShellArg::Fish).contains("complete -c faultline"));
    }

    #[test]
    fn the_man_pages_are_roff() {
        let page = man_page().unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..80.min(page.len())]);
        assert!(page.contains(".TH faultline 1"), "no title line");
        for verb in VERBS {
            assert!(page.contains(verb), "faultline(1) lacks {verb}");
        }
        let dir = std::env::temp_dir().join(format!("faultline-man-{}", std::process::id()));
        run_man(&ManArgs { dir: Some(dir.clone()) }).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        for want in ["faultline.1", "faultline-serve.1", "faultline-net-loss.1", "faultline-man.1"]
        {
            assert!(files.iter().any(|f| f == want), "no {want} in {files:?}");
        }
        let serve = std::fs::read_to_string(dir.join("faultline-serve.1")).unwrap();
        assert!(serve.contains("tcp\\-listen"), "faultline-serve(1) lacks --tcp-listen");
        assert!(!serve.contains("endpoint"), "faultline-serve(1) offers the client's --endpoint");
        let loss = std::fs::read_to_string(dir.join("faultline-net-loss.1")).unwrap();
        assert!(loss.contains("every\\-nth") && loss.contains("endpoint"), "{loss}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
