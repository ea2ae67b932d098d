//! `gleaner state list` and `gleaner state gc`: every source under a state root, and the
//! removal of those whose writer is gone for good.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use scanner_core::ErrorChain;
use serde_json::{Value, json};
use state_store::{Activity, Kept, Location, SourceId, StateLog};

use crate::Usage;
use crate::cli::{FleetArgs, GcArgs};
use crate::display::{human_bytes as human, rfc3339_ms, say};

/// The state location and the source ids to look at: `--source-id`, or every one under it
/// (none is fine: an empty fleet).
async fn sources(args: &FleetArgs) -> anyhow::Result<(Location, Vec<SourceId>)> {
    let location = Location::parse_with(&args.state, &args.storage.options())
        .context("--state")
        .context(Usage)?;
    let ids = match &args.source_id {
        Some(id) => vec![id.clone()],
        None => StateLog::sources(&location).await?,
    };
    Ok((location, ids))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A duration to the second, as `3days 2h 5m 7s`.
fn seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// `gleaner state list`.
pub async fn list(args: FleetArgs) -> anyhow::Result<()> {
    let (location, ids) = sources(&args).await?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in &ids {
        let log = StateLog::new(&location, id);
        let activity = log.activity().await?;
        rows.push(row(&log, &activity, now_ms()).await);
    }
    if args.json {
        for row in &rows {
            say!("{row}");
        }
    } else {
        print_table(&rows)?;
    }
    Ok(())
}

/// One source's line: what its log and its activity say. A log that does not load is shown
/// with its error, not skipped: a damaged source is one to look at.
async fn row(log: &StateLog, activity: &Activity, now_ms: u64) -> Value {
    let live = activity.live_lease(now_ms);
    let mut row = json!({
        "source_id": log.source_id().as_str(),
        "live_writer": live.map(ToString::to_string),
        "last_active": activity.last_active_ms().map(rfc3339_ms),
        "idle_seconds": activity.idle(now_ms).as_secs(),
        "objects": activity.objects.len(),
        "bytes": activity.bytes,
    });
    match log.load().await {
        Ok(loaded) => {
            let state = &loaded.state;
            row["generation"] = json!(state.generation());
            row["last_commit"] = json!(state.last_commit_ms().map(rfc3339_ms));
            row["tracked_files"] = json!(state.len());
            row["written_by"] = json!(state.last_origin().map(ToString::to_string));
            row["interrupted_batch"] = json!(loaded.pending.map(|p| p.generation));
        }
        Err(error) => row["error"] = json!(ErrorChain(&error).to_string()),
    }
    row
}

fn print_table(rows: &[Value]) -> anyhow::Result<()> {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let text = |key: &str| r[key].as_str().unwrap_or("-").to_string();
            let writer = match (r["live_writer"].as_str(), r["written_by"].as_str()) {
                (Some(live), _) => format!("live: {live}"),
                (None, Some(last)) => format!("gone: {last}"),
                (None, None) => "-".to_string(),
            };
            let generation = match &r["error"] {
                Value::String(error) => format!("damaged: {error}"),
                _ => r["generation"].to_string(),
            };
            [
                text("source_id"),
                generation,
                text("last_commit"),
                r["tracked_files"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
                writer,
                seconds(Duration::from_secs(r["idle_seconds"].as_u64().unwrap_or(0))),
            ]
        })
        .collect();
    let header = [
        "SOURCE ID",
        "GENERATION",
        "LAST COMMIT",
        "FILES",
        "WRITER",
        "IDLE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&cells) {
        let padded: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        say!("{}", padded.join("  ").trim_end());
    }
    Ok(())
}

/// `gleaner state gc`: every source judged ([`Activity::collectable`]), the collectable ones
/// removed with `--delete`, each looked at again right before its removal.
pub async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let (location, ids) = sources(&args.common).await?;
    let mut collectable = 0;
    for id in &ids {
        let log = StateLog::new(&location, id);
        let activity = log.activity().await?;
        let verdict = match activity.collectable(now_ms(), args.idle_for) {
            Ok(_) if args.delete => remove(&log, args.idle_for).await?,
            Ok(idle) => Verdict::WouldRemove(idle, activity),
            Err(kept) => Verdict::Kept(kept),
        };
        collectable += usize::from(!matches!(verdict, Verdict::Kept(_)));
        report(id, &verdict, args.common.json)?;
    }
    if !args.common.json {
        let idle_for = seconds(args.idle_for);
        match args.delete {
            true => say!(
                "{collectable} of {} source(s) removed: idle for {idle_for} or longer, no live writer",
                ids.len()
            ),
            false => say!(
                "{collectable} of {} source(s) would be removed (idle for {idle_for} or longer, no \
                 live writer); this was a dry run: pass --delete to remove them",
                ids.len()
            ),
        }
    }
    Ok(())
}

/// What gc did, or would do, with one source.
enum Verdict {
    Kept(Kept),
    WouldRemove(Duration, Activity),
    Removed(Duration, Activity),
}

/// Removes a source found collectable, after looking again: a writer that started since the
/// first look has written its lease, and keeps it.
async fn remove(log: &StateLog, idle_for: Duration) -> anyhow::Result<Verdict> {
    let activity = log.activity().await?;
    match activity.collectable(now_ms(), idle_for) {
        Ok(idle) => {
            log.remove_source(activity.objects.clone()).await?;
            Ok(Verdict::Removed(idle, activity))
        }
        Err(kept) => Ok(Verdict::Kept(kept)),
    }
}

fn report(id: &SourceId, verdict: &Verdict, as_json: bool) -> anyhow::Result<()> {
    let (action, idle, activity, reason) = match verdict {
        Verdict::Kept(Kept::LiveWriter(lease)) => {
            ("kept", None, None, format!("its writer is live: {lease}"))
        }
        Verdict::Kept(Kept::Active { idle }) => (
            "kept",
            Some(*idle),
            None,
            format!("last active {} ago", seconds(*idle)),
        ),
        Verdict::WouldRemove(idle, activity) => {
            ("would_remove", Some(*idle), Some(activity), String::new())
        }
        Verdict::Removed(idle, activity) => ("removed", Some(*idle), Some(activity), String::new()),
    };
    let objects = activity.map(|a| (a.objects.len(), a.bytes));
    if as_json {
        say!(
            "{}",
            json!({
                "source_id": id.as_str(),
                "action": action,
                "idle_seconds": idle.map(|d| d.as_secs()),
                "objects": objects.map(|o| o.0),
                "bytes": objects.map(|o| o.1),
                "reason": (!reason.is_empty()).then_some(reason),
            })
        );
    } else if let (Some((count, bytes)), Some(idle)) = (objects, idle) {
        let action = action.replace('_', " ");
        say!(
            "{action} {id}: {count} object(s), {}, idle for {}",
            human(bytes),
            seconds(idle)
        );
    } else {
        say!("kept {id}: {reason}");
    }
    Ok(())
}
