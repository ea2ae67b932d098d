//! `gleaner`: the sidecar binary.
//!
//! A thin shell over [`scanner_core`] and [`state_store`]: it reads flags and `GLEANER_*`
//! environment variables, sets up logging and the Prometheus endpoint, forwards SIGTERM as a
//! drain request, and maps errors to exit codes. No pipeline logic lives here.
//!
//! Exit codes: 0 success (including a drained shutdown), 1 error, 2 invalid arguments (a flag's
//! value, or flags that contradict each other), 3 another writer owns the state, 4 the drain at
//! shutdown left files in the watched directory, 130/143 a second SIGINT/SIGTERM during the
//! drain, or a drain cut short by the shutdown timeout.

// A binary has no public API: `pub` here only means "used by sibling modules".
#![allow(unreachable_pub)]

mod cli;
mod demo;
mod display;
mod emitter;
mod fleet;
mod memory;
mod run;
mod state_cmd;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use scanner_core::{ConfigError, ErrorChain, ScanError};
use state_store::StateError;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let restart_failed = if keeps_running(&cli.command) {
        memory::restart_without_thread_caches()
    } else {
        None
    };
    let default_level = match cli.command {
        // The demo prints its own summary; keep the log to what needs attention.
        Command::Demo(_) | Command::State(_) => "warn",
        Command::Run(_) | Command::Emit(_) => "info",
    };
    telemetry::init_logging(cli.log_format, default_level);
    memory::tune_allocator();
    if let Some(e) = restart_failed {
        tracing::warn!(
            error = %e,
            "cannot restart without the C library's per-thread caches of freed blocks; \
             going on with them (memory may rise slowly for hours)"
        );
    }
    let runtime = match build_runtime(memory::blocking_threads(workers(&cli.command))) {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "gleaner: error: cannot start the async runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Emit(args) => emitter::run(args).await,
            Command::State(command) => state_cmd::run(command).await,
        }
    });
    // Blocking workers may still be finishing a file; they hold nothing that needs them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`, which panics when standard error is a closed pipe (`2>&1 | head`).
            let _ = writeln!(
                std::io::stderr(),
                "gleaner: error: {}",
                ErrorChain(e.as_ref())
            );
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The async runtime, its blocking pool (files read, listings, local storage) at most
/// `blocking_threads` threads ([`memory::blocking_threads`]).
fn build_runtime(blocking_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gleaner")
        .max_blocking_threads(blocking_threads)
        .build()
}

/// Whether `command` runs for long: a watching `gleaner run` (not `--once`) and the demo. Only
/// those start again without the allocator's per-thread caches
/// ([`memory::restart_without_thread_caches`]).
fn keeps_running(command: &Command) -> bool {
    match command {
        Command::Run(args) => !args.runtime.once,
        Command::Demo(_) => true,
        Command::Emit(_) | Command::State(_) => false,
    }
}

/// The files `command` processes at once: `--workers` of `gleaner run`, else the cores.
fn workers(command: &Command) -> usize {
    let given = match command {
        Command::Run(args) => args.runtime.workers,
        Command::Demo(_) | Command::Emit(_) | Command::State(_) => None,
    };
    given.map_or_else(scanner_core::cores, |workers| {
        usize::try_from(workers).unwrap_or(usize::MAX)
    })
}

/// Marks an error as a mistake in the command line (a flag's value, or flags that contradict
/// each other): exit code 2, like the errors clap finds itself.
#[derive(Debug)]
pub struct Usage;

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid arguments")
    }
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
    let usage =
        e.downcast_ref::<Usage>().is_some() || e.chain().any(|cause| cause.is::<ConfigError>());
    if fenced {
        3
    } else if e.downcast_ref::<run::DrainIncomplete>().is_some() {
        4
    } else if usage {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gleaner run` with placeholder locations and `extra` flags, as clap parses it.
    fn parse_run(extra: &[&str]) -> Command {
        let mut argv = vec![
            "gleaner",
            "run",
            "--watch",
            "/in",
            "--output",
            "file:///out",
            "--state",
            "file:///state",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().command
    }

    /// `gleaner run` without `--workers` (the chart's default) processes as many files at once
    /// as the process has cores, and so bounds the blocking pool by the cores too.
    #[test]
    fn run_without_workers_takes_the_cores() {
        assert_eq!(workers(&parse_run(&[])), scanner_core::cores());
        assert_eq!(workers(&parse_run(&["--workers", "3"])), 3);
    }

    /// A watching sidecar lives for months and restarts without the allocator's per-thread
    /// caches; `run --once` exits before they matter, and keeps them.
    #[test]
    fn only_a_watching_run_restarts_without_the_threads_caches() {
        assert!(keeps_running(&parse_run(&[])));
        assert!(!keeps_running(&parse_run(&["--once"])));
    }

    /// Many blocking tasks at once (a snapshot's removals, a burst of work) queue for the
    /// pool's threads instead of each starting a thread that the pool then keeps for good.
    #[test]
    fn the_blocking_pool_never_grows_past_its_bound() {
        let bound = memory::blocking_threads(2);
        let runtime = build_runtime(bound).unwrap();
        let threads = runtime.block_on(async {
            let tasks: Vec<_> = (0..bound * 3)
                .map(|_| {
                    tokio::task::spawn_blocking(|| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        std::thread::current().id()
                    })
                })
                .collect();
            let mut threads = std::collections::HashSet::new();
            for task in tasks {
                threads.insert(task.await.unwrap());
            }
            threads
        });
        assert!(
            threads.len() <= bound,
            "{} blocking threads ran {} tasks, the bound is {bound}",
            threads.len(),
            bound * 3
        );
    }
}
