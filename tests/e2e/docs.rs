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
