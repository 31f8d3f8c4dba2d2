//! The published schema accepts the documented examples and rejects broken lines.

use oomtrace_tests::check_schema;
use serde_json::{Value, json};

/// The JSON examples in docs/events.md (```json blocks).
fn doc_examples() -> Vec<Value> {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md")).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in md.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```json") => block = Some(String::new()),
            (Some(b), "```") => {
                if let Ok(v) = serde_json::from_str::<Value>(b)
                    && v.get("type").is_some()
                {
                    out.push(v);
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn documented_examples_validate() {
    let ex = doc_examples();
    for t in ["start", "oom_kill", "lost", "stop"] {
        assert!(
            ex.iter().any(|e| e["type"] == t),
            "docs/events.md has no {t} example"
        );
    }
    check_schema(&ex);
}

#[test]
fn broken_lines_are_rejected() {
    let ex = doc_examples();
    let kill = ex.iter().find(|e| e["type"] == "oom_kill").unwrap().clone();
    let mut no_victim = kill.clone();
    no_victim.as_object_mut().unwrap().remove("victim");
    let mut bad_gfp = kill.clone();
    bad_gfp["allocation"]["gfp_mask"] = json!("GFP_KERNEL");
    let mut bad_type = kill.clone();
    bad_type["type"] = json!("oom_kil");
    let mut bad_seq = kill;
    bad_seq["seq"] = json!("1");
    for broken in [no_victim, bad_gfp, bad_type, bad_seq] {
        let r = std::panic::catch_unwind(|| check_schema(std::slice::from_ref(&broken)));
        assert!(r.is_err(), "schema accepted a broken line: {broken}");
    }
}
