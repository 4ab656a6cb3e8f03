//! The runtime crate's shape: its modules import one another without a cycle, its public
//! API is documented, and its version has a changelog entry.
//!
//! `cargo test --test runtime_structure -- --nocapture` prints the import graph.

use std::collections::{BTreeMap, BTreeSet};

use kube_service_template_tests::{files_under, repo_root};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Which top-level module of `src/` each top-level module refers to through `crate::`.
fn import_graph() -> Graph {
    let src = repo_root().join("template/runtime/src");
    let mut graph = Graph::new();
    for file in files_under(&src) {
        let module = top_level_module(&file.to_string_lossy());
        let text = std::fs::read_to_string(src.join(&file)).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        for target in crate_references(&text) {
            if target != module {
                entry.insert(target);
            }
        }
    }
    graph.remove("lib");
    for targets in graph.values_mut() {
        targets.remove("lib");
    }
    graph
}

/// `http/connection.rs` and `http/mod.rs` are both `http`; `lifecycle.rs` is `lifecycle`.
fn top_level_module(path: &str) -> String {
    let first = path.split('/').next().unwrap();
    first.trim_end_matches(".rs").to_owned()
}

/// The modules named right after `crate::`, in paths and in `use crate::{a::X, b}` groups.
fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..closing_brace(group)];
            for item in top_level_items(group) {
                found.insert(first_segment(item));
            }
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

fn closing_brace(text: &str) -> usize {
    let mut depth = 0;
    for (index, character) in text.char_indices() {
        match character {
            '{' => depth += 1,
            '}' if depth == 0 => return index,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (index, character) in group.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
        .collect()
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for target in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(target, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_runtime_imports_have_no_cycle() {
    let graph = import_graph();
    for (module, targets) in &graph {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{module:>12} → {}", targets.join(", "));
    }
    assert!(
        graph.len() >= 15,
        "only {} modules found: {graph:?}",
        graph.len()
    );
    assert!(
        graph["serve"].contains("shutdown") && graph["shutdown"].contains("lifecycle"),
        "the parser sees the imports: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(
        find_cycle(&graph).map(|cycle| cycle.join(" → ")),
        Some("a → b → c → a".to_owned())
    );
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
    let grouped =
        crate_references("use crate::{\n    a::{X, Y},\n    b,\n};\nfn f() { crate::c::g(); }");
    assert_eq!(grouped.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
}

#[test]
fn the_public_api_must_be_documented() {
    let lib = std::fs::read_to_string(repo_root().join("template/runtime/src/lib.rs")).unwrap();
    assert!(
        lib.contains("#![deny(missing_docs)]"),
        "lib.rs denies missing docs"
    );
}

#[test]
fn the_runtime_version_has_a_changelog_entry() {
    let runtime = repo_root().join("template/runtime");
    let manifest = std::fs::read_to_string(runtime.join("Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = "))
        .expect("a version")
        .trim_matches('"');
    let changelog = std::fs::read_to_string(runtime.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog
            .lines()
            .any(|line| line.starts_with(&format!("## {version}"))),
        "CHANGELOG.md has no `## {version}` entry"
    );
}
