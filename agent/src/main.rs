//! `faultline`: the agent (`faultline serve`) and its command-line client, in one binary.

use std::process::ExitCode;

use clap::Parser as _;
use faultline::{
    cli::{
        self,
        output::{Report, eprint_line, is_stdout_closed, output_of},
    },
    serve,
};
use faultline_core::faults;

fn main() -> ExitCode {
    // A stress worker the agent started: no CLI parsing, no runtime.
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if args.get(1).is_some_and(|a| a.starts_with("__")) {
        faults::spawn::name_child();
    }
    if args.get(1).map(String::as_str) == Some("__stress-worker") {
        return ExitCode::from(faults::stress::worker::main(&args[2..]) as u8);
    }
    if args.get(1).map(String::as_str) == Some("__thaw-guard") {
        return ExitCode::from(faults::process::guard_main(&args[2..]) as u8);
    }
    if args.get(1).map(String::as_str) == Some(faults::delay::tracer::SUBCOMMAND) {
        return ExitCode::from(faults::delay::holder::main(&args[2..]) as u8);
    }
    if args.get(1).map(String::as_str) == Some(faults::time::client::SUBCOMMAND) {
        return ExitCode::from(faults::time::skewer::main(&args[2..]) as u8);
    }
    let cli = match cli::Cli::try_parse_from(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // Bad input is one line; clap's usage block is left to --help. A message that
            // continues on the next lines (a list of missing arguments) is joined. With
            // -o json: one JSON object.
            let text = e.render().to_string();
            let line: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let line =
                if line.is_empty() { "error: invalid arguments".into() } else { line.join(" ") };
            eprint_line(&Report::usage(line).render(output_of(&args)));
            return ExitCode::from(2);
        }
    };
    // Made from the command line alone: no runtime, no agent.
    let generated = match &cli.command {
        cli::Command::Completions(a) => Some(cli::generate::run_completions(a)),
        cli::Command::Man(a) => Some(cli::generate::run_man(a)),
        _ => None,
    };
    let output = cli.client_options().map_or(cli::Output::Table, |o| o.output);
    let result = match generated {
        Some(r) => r,
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head -1`): it had what it wanted; end quietly.
        Err(e) if is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (each distinct cause once), or one JSON object with -o json.
            eprint_line(&Report::of(&e).render(output));
            ExitCode::FAILURE
        }
    }
}

/// Runs `serve` or a client command on a runtime.
fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // Few malloc arenas and a bounded blocking pool: each thread that allocates can pin an
    // arena of its own, and under load the agent's memory would follow its thread count.
    // A fixed mmap threshold: glibc's dynamic one rises to the size of the largest block
    // freed (the kernel's BTF, parsed at start), after which such blocks stay in an arena's
    // top, resident for good (19 MiB of an idle agent's 29 MiB).
    #[cfg(target_env = "gnu")]
    // SAFETY: (no nix wrapper: glibc only) mallopt calls with valid parameters, before any
    // other thread exists that could be allocating.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting runtime: {e}"))?;
    rt.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            _ => cli::run_client(cli).await,
        }
    })
}
