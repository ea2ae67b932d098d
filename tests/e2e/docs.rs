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

/// The modules of the library crates depend on each other one way: no module uses one that
/// uses it back, directly or through others (ARCHITECTURE.md's layering; a cycle makes every
/// module of it one piece that cannot be understood, tested or moved alone). Uses are
/// `crate::module` paths and `super::sibling` paths outside tests and comments.
#[test]
fn no_module_of_the_library_crates_depends_on_itself_through_others() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for krate in ["scanner-core", "state-store"] {
        let graph = module_graph(&top.join("crates").join(krate).join("src"));
        assert!(graph.len() >= 10, "{krate}: {} modules", graph.len());
        let cycles = cycles(&graph);
        assert!(cycles.is_empty(), "{krate}: modules in a cycle: {cycles:?}");
    }
}

/// Each module of the crate under `src` (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`) and the
/// other modules it uses.
fn module_graph(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    files(src, &mut paths);
    let modules: Vec<(String, std::path::PathBuf)> = paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let name = rel.to_string_lossy().replace("/mod", "").replace('/', "::");
            (name != "lib" && name != "main").then_some((name, path))
        })
        .collect();
    let mut names: Vec<&str> = modules.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    let mut graph = std::collections::BTreeMap::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = module.rsplit_once("::").map(|(parent, _)| parent);
        let mut used = std::collections::BTreeSet::new();
        for (prefix, scope) in [("crate::", None), ("super::", parent)] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let mut path = rest[..len].trim_end_matches(':');
                // `crate::process::open(…)`: a function of `process`, not the module `open`.
                if rest[len..].starts_with('(') {
                    path = path.rsplit_once("::").map_or("", |(module, _)| module);
                }
                let full = match scope {
                    Some(parent) => format!("{parent}::{path}"),
                    None if prefix == "super::" => continue,
                    None => path.to_string(),
                };
                let target = names
                    .iter()
                    .find(|name| full == **name || full.starts_with(&format!("{name}::")));
                if let Some(target) = target {
                    let inside = |a: &str, b: &str| a.starts_with(&format!("{b}::"));
                    if *target != module && !inside(module, target) && !inside(target, module) {
                        used.insert(target.to_string());
                    }
                }
            }
        }
        graph.insert(module.clone(), used);
    }
    graph
}

/// The groups of modules that use each other in a circle (Tarjan's strongly connected
/// components of more than one module).
fn cycles(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<Vec<String>> {
    struct Search<'g> {
        graph: &'g std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        index: std::collections::HashMap<&'g str, usize>,
        low: std::collections::HashMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            for next in &self.graph[node] {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(member) = self.stack.pop() {
                    group.push(member.to_string());
                    if member == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: Default::default(),
        low: Default::default(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node.as_str()) {
            search.visit(node);
        }
    }
    search.found
}
