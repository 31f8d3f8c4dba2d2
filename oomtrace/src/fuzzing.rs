//! Entry points for hostile input: the cargo-fuzz targets (fuzz/fuzz_targets/) and the seeded
//! property test (tests/tests/faults.rs) call these with arbitrary bytes. Each feeds one decoder
//! or parser the way `oomtrace run` does, and panics only on a bug: a crash, or output that is
//! not one valid JSON line that parses back to itself. They return the lines they produced (with
//! the envelope `oomtrace run` puts around them) so that callers can also check them against the
//! published schema.

use std::{
    cell::RefCell,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use oomtrace_common::Config;
use serde_json::Value;

use crate::{
    enrich::{
        Pipeline,
        cgroups::Cgroups,
        filter::Filter,
        memstat,
        oom_kill::{KernelSymbols, Machine, OomKills},
    },
    event::{Attach, Cgroup, Event, Line, MemcgOomEv, MemcgOomSource, SCHEMA_VERSION},
    kernel::{
        btf::Btf,
        caps,
        cgroup::{self, Hierarchy, Resolver},
        gfp::{self, GfpBits},
        ksyms::Ksyms,
        layout, record,
        tracefs::Format,
    },
};

/// One JSON line as `oomtrace run` writes it, checked: a single line, valid JSON, and stable
/// through a parse/serialize round trip. Its text line, where it has one, is one line too.
fn line(seq: u64, boot_ns: u64, body: &Event) -> Value {
    let l = Line {
        schema: SCHEMA_VERSION,
        kind: body.event_type(),
        seq,
        time: crate::sink::rfc3339(boot_ns as i64),
        boot_ns,
        host: "fuzz",
        body,
    };
    let text = serde_json::to_string(&l).expect("a record always serializes");
    assert!(!text.contains('\n'), "a record spans lines: {text}");
    let v: Value = serde_json::from_str(&text).expect("oomtrace wrote invalid JSON");
    let again = serde_json::to_string(&v).expect("reserialize");
    assert_eq!(
        serde_json::from_str::<Value>(&again).expect("reparse"),
        v,
        "JSON round trip"
    );
    if let Some(t) = crate::sink::text::render(body) {
        let first = t.split_once("\n    ").map_or(t.as_str(), |(a, _)| a);
        assert!(!first.contains('\n'), "a text line spans lines: {t}");
    }
    v
}

/// The pipeline's state, kept across inputs like across the records of one run.
struct Loop {
    pipeline: Pipeline,
    seq: u64,
}

thread_local! {
    static LOOP: RefCell<Loop> = RefCell::new(Loop {
        pipeline: {
            let machine = Machine {
                page_size: 4096,
                ram_pages: 6 << 18,
                swap_pages: 0,
            };
            let ksyms = Some(Arc::new(Ksyms::parse(KALLSYMS)));
            let kills = OomKills::new(
                machine,
                Some(GfpBits::for_version(6, 18)),
                KernelSymbols::Ready(ksyms),
                None,
            );
            Pipeline::new(
                Cgroups::new(Resolver::new(None)),
                kills,
                Filter::default(),
                Attach::TpBtf,
                false,
                crate::enrich::kube::Kube::new(None),
            )
        },
        seq: 1,
    });
}

const KALLSYMS: &str = "ffffffff81000000 T _stext\nffffffff81000010 T out_of_memory\n\
                        ffffffff81000100 t mem_cgroup_out_of_memory\nffffffff81000200 T __bpf_trace_mark_victim\n\
                        ffffffffc0000000 t some_fn\t[some_module]\n";

/// A ring-buffer record, as the kernel hands it over: decoded, enriched and turned into its
/// JSON line (and its text line where it has one) by the pipeline `oomtrace run` uses. User
/// stacks are not symbolized (that reads other processes' memory maps).
pub fn record(data: &[u8]) -> Vec<Value> {
    let Ok(rec) = record::decode(data) else {
        return Vec::new();
    };
    LOOP.with_borrow_mut(|l| {
        let seq = l.seq;
        l.seq += 1;
        l.pipeline
            .record(rec, seq)
            .map(|t| line(seq, t.boot_ns, &t.event))
            .into_iter()
            .collect()
    })
}

/// A tracefs `format` file, and the record layouts oomtrace derives from it.
pub fn tracefs_format(data: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(data);
    if let Ok(f) = Format::parse(&text) {
        let mut cfg = Config::ABSENT;
        layout::from_mark_victim(&f, &mut cfg);
        layout::from_reclaim_begin(&f, &mut cfg);
        layout::from_signal_generate(&f, &mut cfg);
        layout::from_process_exit(&f, &mut cfg);
        layout::from_reaper(&f, &mut cfg);
        for field in &f.fields {
            assert_eq!(f.field(&field.name).map(|x| &x.name), Some(&field.name));
        }
    }
    Vec::new()
}

/// `/proc/self/mountinfo` and `/proc/<pid>/cgroup` text (split at the first NUL byte), as the
/// cgroup code reads them, and the `{id, path}` objects the paths end up in.
pub fn cgroup_text(data: &[u8]) -> Vec<Value> {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let mountinfo = String::from_utf8_lossy(a);
    let proc_cgroup = String::from_utf8_lossy(b);
    let h = cgroup::find_memory_hierarchy(&mountinfo);
    let mut out = Vec::new();
    for version in [1, 2] {
        if let Some(path) = cgroup::path_from_proc(&proc_cgroup, version) {
            if let Some(h) = &h {
                let r = Resolver::new(Some(h.clone()));
                let _ = r.dir_of(&path);
            }
            out.push(line(
                1,
                1,
                &Event::MemcgOom(memcg_oom(u64::from(version), Some(path))),
            ));
        }
    }
    out
}

/// The cgroup-path resolver on a directory tree whose names come from `data` (split at `/`):
/// every directory must resolve, by inode, to its path, and that path must survive JSON.
/// Names are bytes: they need not be UTF-8 (shown with U+FFFD then), and may hold quotes,
/// backslashes, spaces, control characters.
pub fn cgroup_tree(data: &[u8]) -> Vec<Value> {
    let root = tree_root();
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("create the fuzz tree root");
    let mut dir = root.clone();
    let mut want = String::new();
    let mut made = Vec::new();
    for name in data.split(|&c| c == b'/').take(8) {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&0) || name.len() > 255 {
            continue;
        }
        let next = dir.join(std::ffi::OsStr::from_bytes(name));
        if fs::create_dir(&next).is_err() {
            break;
        }
        want.push('/');
        want.push_str(&String::from_utf8_lossy(name));
        made.push((fs::metadata(&next).expect("stat").ino(), want.clone()));
        dir = next;
    }
    let mut r = Resolver::new(Some(Hierarchy {
        version: 2,
        mount: root.clone(),
        root: "/".into(),
    }));
    let mut out = Vec::new();
    for (ino, path) in made {
        let got = r.path(ino);
        assert_eq!(
            got.as_deref(),
            Some(path.as_str()),
            "resolver path for inode {ino}"
        );
        let v = line(1, 1, &Event::MemcgOom(memcg_oom(ino, got)));
        assert_eq!(
            v["memcg"]["path"],
            Value::from(path),
            "path after a JSON round trip"
        );
        out.push(v);
    }
    let _ = fs::remove_dir_all(&root);
    out
}

/// A `memcg_oom` record about cgroup `id` at `path`: the record a cgroup path reaches the
/// stream in on its own.
fn memcg_oom(id: u64, path: Option<String>) -> MemcgOomEv {
    MemcgOomEv {
        memcg: Cgroup { id, path },
        source: MemcgOomSource::CgroupV2MemoryEvents,
        under_oom: None,
        oom_kill_disable: None,
        oom_kills: Some(1),
        oom_events: Some(1),
    }
}

fn tree_root() -> PathBuf {
    let base = std::env::var_os("OOMTRACE_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    base.join(format!(
        "oomtrace-fuzz-tree-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
    .components()
    .filter(|c| !matches!(c, std::path::Component::CurDir))
    .collect::<PathBuf>()
}

/// The /proc and cgroupfs text parsers: `CapEff` of /proc/self/status, /proc/kallsyms and the
/// kernel stack symbolization it feeds, memory.stat (v1 and v2), the kernel release, and gfp
/// flag names.
pub fn proc_text(data: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(data);
    if let Some(eff) = caps::parse_cap_eff(&text) {
        let _ = caps::missing_for_run(eff);
    }
    let k = Ksyms::parse(&text);
    let addr = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    for a in [addr, addr.wrapping_add(1), u64::MAX, 0] {
        let s = k.symbolize(a);
        assert!(!s.is_empty());
    }
    let _ = memstat::parse_v1(&text, Path::new("/nonexistent"));
    let _ = memstat::parse_v2(&text);
    if let Some((major, minor)) = gfp::kernel_version(&text) {
        let _ = GfpBits::for_version(major, minor).decode(addr);
    }
    Vec::new()
}

/// Kernel BTF (`/sys/kernel/btf/vmlinux`): the offsets and enum values oomtrace reads from it.
pub fn btf(data: &[u8]) -> Vec<Value> {
    if let Ok(b) = Btf::parse(data.to_vec()) {
        let mut cfg = Config::ABSENT;
        let _ = layout::from_btf(&b, &mut cfg);
        let e = b.enumerators("___GFP_");
        let _ = GfpBits::from_enum(e.iter().map(|(n, v)| (n.as_str(), *v)));
    }
    Vec::new()
}
