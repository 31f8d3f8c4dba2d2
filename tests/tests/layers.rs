//! The loader crate's layers (README "Layout"): each top-level module may use only the layers
//! before it, and no two modules import each other. Read from the source, so that a new `use`
//! that breaks the layering fails here, not in a review.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each layer and what it may use (besides itself).
const LAYERS: &[(&str, &[&str])] = &[
    // The public contract and a generic queue: leaves.
    ("event", &[]),
    ("queue", &[]),
    // Kernel-facing code: knows the contract's enums, nothing above.
    ("kernel", &["event"]),
    // The record -> event pipeline.
    ("enrich", &["kernel", "event"]),
    // Where events go (the metrics sink labels by the pipeline's Kubernetes identity).
    ("sink", &["enrich", "event", "kernel"]),
    // The pipeline thread: record in, line out.
    ("stream", &["enrich", "sink", "kernel", "event", "queue"]),
    // The commands.
    ("check", &["kernel", "event"]),
    ("run", &["stream", "enrich", "sink", "kernel", "event", "queue"]),
    ("fuzzing", &["enrich", "sink", "kernel", "event"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../oomtrace/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read oomtrace/src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `enrich/oom_kill.rs` -> ["enrich", "oom_kill"].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path the non-test code of `text` names (in `use` trees and inline).
fn crate_paths(text: &str) -> BTreeSet<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    // Comments (doc links name modules too) are not dependencies.
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut out = BTreeSet::new();
    // Flatten `use crate::{a::{b, c}, d}` into the first two segments of each leaf path.
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if rest.starts_with('{') {
            let body = balanced(rest);
            for p in flatten(&body) {
                out.insert(p.into_iter().take(2).collect());
            }
        } else {
            let p: Vec<String> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .take(2)
                .map(str::to_owned)
                .collect();
            out.insert(p);
        }
    }
    out
}

/// The text inside the braces `s` starts with.
fn balanced(s: &str) -> String {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return s[1..i].to_owned();
                }
            }
            _ => {}
        }
    }
    s.to_owned()
}

/// `a::{b, c::d}, e` -> [[a, b], [a, c, d], [e]].
fn flatten(tree: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.find('{') {
            Some(b) => {
                let prefix: Vec<String> = item[..b]
                    .split("::")
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().to_owned())
                    .collect();
                for mut sub in flatten(&balanced(&item[b..])) {
                    let mut p = prefix.clone();
                    p.append(&mut sub);
                    out.push(p);
                }
            }
            None => {
                let name = item.split(" as ").next().unwrap_or(item);
                out.push(
                    name.split("::")
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty() && s != "self")
                        .collect(),
                );
            }
        }
    }
    out
}

#[test]
fn layers_point_one_way_and_no_two_modules_import_each_other() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    let mut bad = Vec::new();
    for f in &files {
        let module = module_of(f);
        let Some(top) = module.first().cloned() else {
            continue;
        };
        if top == "lib" || top == "main" {
            continue;
        }
        let text = fs::read_to_string(f).expect("read source");
        for p in crate_paths(&text) {
            let Some(dep_top) = p.first() else { continue };
            if !allowed.contains_key(dep_top.as_str()) {
                continue; // a crate-root item (e.g. crate::trim_heap)
            }
            if *dep_top != top {
                let ok = allowed
                    .get(top.as_str())
                    .unwrap_or_else(|| panic!("{} is in no layer: add it to LAYERS", f.display()));
                if !ok.contains(&dep_top.as_str()) {
                    bad.push(format!("{} uses crate::{}", f.display(), p.join("::")));
                }
            }
            let from = module.join("::");
            let to = p.join("::");
            if from != to && !from.starts_with(&format!("{to}::")) {
                edges.insert((from, to));
            }
        }
    }
    for (a, b) in &edges {
        if edges.contains(&(b.clone(), a.clone())) && a < b {
            bad.push(format!("{a} and {b} import each other"));
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    assert!(edges.len() > 20, "the scan found too few imports: {edges:?}");
}

#[test]
fn the_scanner_sees_nested_use_trees() {
    let p = crate_paths(
        "use crate::{a::{b, c::d}, e as f};\nfn x() { crate::g::h(); }\n#[cfg(test)]\nuse crate::z;",
    );
    let want: BTreeSet<Vec<String>> = [vec!["a", "b"], vec!["a", "c"], vec!["e"], vec!["g", "h"]]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(p, want);
}
