//! The documents that describe the code stay true to it: every path `ARCHITECTURE.md` names
//! exists.

use std::path::Path;

#[test]
fn every_path_in_architecture_md_exists() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(top.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    // Paths are written in backticks, relative to the top of the repository.
    let paths: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            quoted.contains('/')
                && !quoted.contains(' ')
                && (quoted.ends_with('/') || quoted.rsplit('/').next().unwrap().contains('.'))
        })
        .collect();
    assert!(paths.len() > 30, "paths found: {paths:?}");
    let missing: Vec<&&str> = paths.iter().filter(|p| !top.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names missing paths: {missing:?}"
    );
}

/// The README's metrics table names every metric the code defines and a real scrape serves,
/// with the type the scrape declares, and nothing else.
#[test]
fn the_readme_metrics_table_matches_the_code_and_a_scrape() {
    use std::collections::{BTreeMap, BTreeSet};

    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(top.join("README.md")).unwrap();
    let table: BTreeMap<String, String> = readme
        .split("| metric | type | labels | meaning |")
        .nth(1)
        .expect("the metrics table")
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect();
    assert!(table.len() > 40, "{table:?}");

    let quoted = regex::Regex::new(r#""(gleaner_[a-z_]+)""#).unwrap();
    let mut in_code = BTreeSet::new();
    for file in [
        "crates/scanner-core/src/telemetry/mod.rs",
        "crates/sidecar/src/telemetry.rs",
    ] {
        let text = std::fs::read_to_string(top.join(file)).unwrap();
        in_code.extend(quoted.captures_iter(&text).map(|c| c[1].to_string()));
    }
    let in_table: BTreeSet<String> = table
        .keys()
        .filter(|name| name.starts_with("gleaner_"))
        .cloned()
        .collect();
    assert_eq!(in_table, in_code, "README table vs the code's metric names");

    let fx = crate::support::Fixture::new();
    fx.write("a.log", b"one\n", crate::support::OLD);
    let served = crate::support::Served::start(&fx, &[]);
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(20),
        || fx.outputs().len() == 1
    ));
    let (_, scrape) = crate::http::get(&served.addr, "/metrics");
    crate::support::sigterm(&served.child);
    served.wait(std::time::Duration::from_secs(30));
    let mut served_types = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            served_types.insert(name.to_string(), kind.to_string());
        }
    }
    assert!(served_types.len() > 40, "{scrape}");
    for (name, kind) in &served_types {
        assert_eq!(
            table.get(name),
            Some(kind),
            "{name} ({kind}) is served but not in the README table as such"
        );
    }
    for name in table.keys().filter(|n| n.starts_with("process_")) {
        assert!(served_types.contains_key(name), "{name} is not served");
    }
}
