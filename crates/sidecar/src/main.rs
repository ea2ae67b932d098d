//! `gleaner`: the sidecar binary.
//!
//! A thin shell over [`scanner_core`] and [`state_store`]: it reads flags and `GLEANER_*`
//! environment variables, sets up logging and the Prometheus endpoint, forwards SIGTERM as a
//! drain request, and maps errors to exit codes. No pipeline logic lives here.
//!
//! Exit codes: 0 success (including a drained shutdown), 1 error, 2 invalid arguments,
//! 3 another writer owns the state, 130/143 a second SIGINT/SIGTERM during the drain.

// A binary has no public API: `pub` here only means "used by sibling modules".
#![allow(unreachable_pub)]

mod cli;
mod demo;
mod display;
mod emitter;
mod run;
mod state_cmd;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;
use scanner_core::ScanError;
use state_store::StateError;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // The demo prints its own summary; keep the log to what needs attention.
        Command::Demo(_) | Command::State(_) => "warn",
        Command::Run(_) => "info",
    };
    telemetry::init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gleaner")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gleaner: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::State(command) => state_cmd::run(command).await,
        }
    });
    // Blocking workers may still be finishing a file; they hold nothing that needs them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gleaner: error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The cause chain on one line ("context: cause: root cause"), skipping causes whose text an
/// outer error already includes (many storage errors repeat their source in their message).
fn one_line(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message.replace('\n', " ")
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let fenced = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StateError>(),
            Some(StateError::Fenced { .. })
        ) || cause
            .downcast_ref::<ScanError>()
            .is_some_and(ScanError::is_fenced)
    });
    if fenced { 3 } else { 1 }
}
