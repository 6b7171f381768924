//! `faultline`: the agent (`faultline serve`) and its command-line client, in one binary.

use clap::Parser as _;
use faultline::{cli, serve};
use faultline_core::faults;

fn main() -> std::process::ExitCode {
    // A stress worker the agent started: no CLI parsing, no runtime.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__stress-worker") {
        return std::process::ExitCode::from(faults::stress::worker::main(&args[2..]) as u8);
    }
    if args.get(1).map(String::as_str) == Some("__thaw-guard") {
        return std::process::ExitCode::from(faults::process::guard_main(&args[2..]) as u8);
    }
    let cli = match cli::Cli::try_parse() {
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
                    std::process::ExitCode::from(2)
                } else {
                    std::process::ExitCode::SUCCESS
                };
            }
            // Bad input is one line; clap's usage block is left to --help. A message that
            // continues on the next lines (a list of missing arguments) is joined.
            let text = e.render().to_string();
            let line: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            eprintln!(
                "{}",
                if line.is_empty() { "error: invalid arguments".into() } else { line.join(" ") }
            );
            return std::process::ExitCode::from(2);
        }
    };
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            _ => cli::run_client(cli).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain joined, so scripts can grep it.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
