//! `gleaner state inspect` and `gleaner state verify`: read-only views of the state log.

use anyhow::Context;
use scanner_core::ErrorChain;
use scanner_core::repair::FileVerdict;
use serde_json::{Value, json};
use state_store::{Location, ObjectKind, Outcome, StateLog};

use crate::Usage;
use crate::cli::{InspectArgs, LayoutArg, RepairArgs, StateArgs, StateCommand};
use crate::display::{human_bytes as human, rfc3339_ms, say};

/// Runs a `state` subcommand.
pub async fn run(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Inspect(args) => inspect(args).await,
        StateCommand::Verify(args) => verify(args).await,
        StateCommand::Repair(args) => repair(args).await,
        StateCommand::Replay(args) => crate::run::replay(*args).await,
        StateCommand::List(args) => crate::fleet::list(args).await,
        StateCommand::Gc(args) => crate::fleet::gc(args).await,
    }
}

async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let options = args.storage.options();
    let state = Location::parse_with(&args.state, &options)
        .context("--state")
        .context(Usage)?;
    let output = Location::parse_with(&args.output, &options)
        .context("--output")
        .context(Usage)?;
    let report = scanner_core::repair::repair(
        &state,
        &output,
        &args.source_id,
        args.output_layout.map(LayoutArg::layout),
        &args.watch,
        args.identity,
    )
    .await?;
    if report.layout_detected && report.layout != scanner_core::OutputLayout::Flat {
        say!(
            "the outputs are laid out as --output-layout {} (found from the outputs; gleaner run \
             needs the same flag)",
            report.layout.flag_value()
        );
    }
    for generation in &report.set_aside {
        say!(
            "set aside the damaged delta of generation {generation} (kept as {generation:020}.delta.damaged)"
        );
    }
    for generation in &report.recorded {
        say!(
            "wrote the missing commit record of generation {generation} (.committed/{}/{generation:020}.json)",
            args.source_id
        );
    }
    for rebuilt in &report.rebuilt {
        say!(
            "committed generation {} again from {}: {} file(s): {} found unchanged, {} changed \
             since, {} to be processed again, {} gone",
            rebuilt.generation,
            rebuilt.output,
            rebuilt.files.len(),
            rebuilt.count(FileVerdict::is_unchanged),
            rebuilt.count(FileVerdict::is_changed),
            rebuilt.count(FileVerdict::is_reprocess),
            rebuilt.count(FileVerdict::is_gone),
        );
        // Every file, and what was made of it: a file processed again adds a line for its
        // path to the outputs, and the operator should know which and why.
        for (path, verdict) in &rebuilt.files {
            say!("  {path}: {verdict}");
        }
    }
    if let Some(generation) = report.interrupted {
        say!(
            "generation {generation} is an interrupted batch: the next start redoes it from its plan"
        );
    }
    if report.set_aside.is_empty() && report.rebuilt.is_empty() && report.recorded.is_empty() {
        say!("nothing to repair: the log ends in a sound delta, and no output is beyond it");
    }
    say!(
        "{}: the state is at generation {}; start gleaner as usual",
        args.source_id,
        report.generation
    );
    Ok(())
}

/// The logs to look at: the one of `--source-id`, or every one under `--state`.
async fn logs(args: &StateArgs) -> anyhow::Result<Vec<StateLog>> {
    let location = Location::parse_with(&args.state, &args.storage.options())
        .context("--state")
        .context(Usage)?;
    let ids = match &args.source_id {
        Some(id) => vec![id.clone()],
        None => {
            let ids = StateLog::sources(&location).await?;
            if ids.is_empty() {
                anyhow::bail!("no state found at {location} (no source id directory under it)");
            }
            ids
        }
    };
    // Deltas too large to hold for a load's merge are copied to the temporary directory.
    let spool = std::env::temp_dir();
    Ok(ids
        .iter()
        .map(|id| StateLog::new(&location, id).with_spool_dir(&spool))
        .collect())
}

async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    for log in logs(&args.common).await? {
        let objects = log.objects().await?;
        let loaded = log.load().await?;
        if args.entries {
            for (path, entry) in loaded.state.entries() {
                let (outcome, reason) = match &entry.outcome {
                    Outcome::Done => ("done", None),
                    Outcome::Failed { reason } => ("failed", Some(reason.as_ref())),
                    Outcome::Baselined => ("baselined", None),
                };
                let mut line = json!({
                    "source_id": log.source_id().as_str(),
                    "path": path.to_string(),
                    "size": entry.size,
                    "mtime_ns": entry.mtime_ns,
                    "inode": entry.inode,
                    "offset": entry.offset,
                    "generation": entry.generation,
                    "outcome": outcome,
                    "reason": reason,
                });
                // As in the outputs: the exact bytes wherever `path` is escaped.
                if !path.displays_as_is() {
                    line["path_bytes"] = json!(path.as_bytes());
                }
                say!("{line}");
                if crate::display::stdout_closed() {
                    // The reader is gone: the rest would be read for nothing.
                    return Ok(());
                }
            }
            continue;
        }
        let failed: Vec<Value> = loaded
            .state
            .entries()
            .filter_map(|(path, entry)| match &entry.outcome {
                Outcome::Failed { reason } => Some(json!({
                    "path": path.to_string(),
                    "generation": entry.generation,
                    "reason": reason.as_ref(),
                })),
                Outcome::Done | Outcome::Baselined => None,
            })
            .collect();
        let baselined: Vec<Value> = loaded
            .state
            .entries()
            .filter(|(_, entry)| entry.outcome.is_baselined())
            .map(
                |(path, entry)| json!({ "path": path.to_string(), "generation": entry.generation }),
            )
            .collect();
        let count = |kind: ObjectKind| objects.iter().filter(|o| o.kind == kind).count();
        let bytes = |kind: ObjectKind| -> u64 {
            objects
                .iter()
                .filter(|o| o.kind == kind)
                .map(|o| o.size)
                .sum()
        };
        let snapshot = objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Snapshot)
            .max_by_key(|o| o.generation);
        let summary = json!({
            "source_id": log.source_id().as_str(),
            "state": log.location().to_string(),
            "generation": loaded.state.generation(),
            "last_commit": loaded.state.last_commit_ms().map(rfc3339_ms),
            "written_by": loaded.state.last_origin().map(ToString::to_string),
            "tracked_files": loaded.state.len(),
            "done": loaded.state.len() - failed.len() - baselined.len(),
            "failed": failed.len(),
            "baselined": baselined.len(),
            "objects": {
                "snapshots": count(ObjectKind::Snapshot),
                "snapshot_bytes": bytes(ObjectKind::Snapshot),
                "snapshot_generation": snapshot.map(|o| o.generation),
                "deltas": count(ObjectKind::Delta),
                "delta_bytes": bytes(ObjectKind::Delta),
                "plans": count(ObjectKind::Plan),
                "plan_bytes": bytes(ObjectKind::Plan),
                "stale": loaded.stale.len(),
            },
            "interrupted_batch": loaded.pending.as_ref().map(|p| json!({
                "generation": p.generation,
                "files": p.files.len(),
                "replay": p.replay,
            })),
            "failed_files": failed,
            "baselined_files": baselined,
        });
        if args.common.json {
            say!("{summary}");
        } else {
            print_summary(&summary)?;
        }
    }
    Ok(())
}

fn print_summary(s: &Value) -> anyhow::Result<()> {
    let o = &s["objects"];
    say!(
        "source id      {}",
        s["source_id"].as_str().unwrap_or_default()
    );
    say!("state          {}", s["state"].as_str().unwrap_or_default());
    if let Some(origin) = s["written_by"].as_str() {
        say!("written by     {origin}");
    }
    match s["last_commit"].as_str() {
        Some(at) => say!("generation     {}, committed {at}", s["generation"]),
        None => say!("generation     {} (nothing committed yet)", s["generation"]),
    }
    say!(
        "tracked files  {} ({} done, {} failed, {} baselined)",
        s["tracked_files"],
        s["done"],
        s["failed"],
        s["baselined"]
    );
    let snapshot = match o["snapshot_generation"].as_u64() {
        Some(g) => format!(
            "{} snapshot(s), newest at generation {g}, {}",
            o["snapshots"],
            human(o["snapshot_bytes"].as_u64().unwrap_or(0))
        ),
        None => "no snapshot".to_string(),
    };
    say!(
        "log objects    {snapshot}; {} delta(s), {}; {} plan(s); {} stale",
        o["deltas"],
        human(o["delta_bytes"].as_u64().unwrap_or(0)),
        o["plans"],
        o["stale"]
    );
    match s["interrupted_batch"].as_object() {
        Some(p) => say!(
            "interrupted    generation {} ({} files), redone at the next start",
            p["generation"],
            p["files"]
        ),
        None => say!("interrupted    none"),
    }
    if let Some(failed) = s["failed_files"].as_array().filter(|f| !f.is_empty()) {
        say!("failed files");
        for f in failed.iter().take(20) {
            say!(
                "  {}  (generation {}): {}",
                f["path"].as_str().unwrap_or_default(),
                f["generation"],
                f["reason"].as_str().unwrap_or_default()
            );
        }
        if failed.len() > 20 {
            say!("  … and {} more (use --json)", failed.len() - 20);
        }
    }
    if let Some(baselined) = s["baselined_files"].as_array().filter(|b| !b.is_empty()) {
        say!("baselined files (seen at the first start, not processed)");
        for b in baselined.iter().take(20) {
            say!(
                "  {}  (generation {})",
                b["path"].as_str().unwrap_or_default(),
                b["generation"]
            );
        }
        if baselined.len() > 20 {
            say!("  … and {} more (use --json)", baselined.len() - 20);
        }
    }
    say!();
    Ok(())
}

async fn verify(args: StateArgs) -> anyhow::Result<()> {
    let mut problems = 0;
    let mut reports = Vec::new();
    for log in logs(&args).await? {
        let report = log.verify().await?;
        problems += report.problems.len();
        let messages: Vec<String> = report
            .problems
            .iter()
            .map(|e| ErrorChain(e).to_string())
            .collect();
        if args.json {
            reports.push(json!({
                "source_id": log.source_id().as_str(),
                "state": log.location().to_string(),
                "ok": messages.is_empty(),
                "objects": report.objects,
                "bytes": report.bytes,
                "generation": report.generation,
                "problems": messages,
            }));
        } else if messages.is_empty() {
            say!(
                "{}: ok: {} object(s), {}, read and checked; generation {}",
                log.source_id(),
                report.objects,
                human(report.bytes),
                report.generation.unwrap_or(0)
            );
        } else {
            say!(
                "{}: {} problem(s) in {} object(s):",
                log.source_id(),
                messages.len(),
                report.objects
            );
            for message in messages {
                say!("  {message}");
            }
        }
    }
    if args.json {
        say!("{}", json!({ "ok": problems == 0, "sources": reports }));
    }
    if problems > 0 {
        anyhow::bail!("state verification failed: {problems} problem(s)");
    }
    Ok(())
}
