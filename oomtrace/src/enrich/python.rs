//! CPython 3.10-3.13: find the interpreter in a process, say which version it is (from the binary),
//! give the kernel's frame walker (oomtrace-ebpf/src/python.rs) its offsets, and turn the frames
//! it copied at the OOM into `function`, `file`, `line`.
//!
//! The version comes from the interpreter's own binary: `Py_Version` (PY_VERSION_HEX, exported
//! since 3.11), else the `PY_VERSION` string in its read-only data (3.10). Offsets come from
//! `_Py_DebugOffsets`, which 3.13 publishes at the start of `_PyRuntime` for out-of-process readers
//! (read from the file's initialised data: no live process needed), else from the table below,
//! checked against each version's own headers (tests/programs/py_offsets.c: pyenv's 3.10.13,
//! 3.11.7, 3.12.1, 3.13.0 and Debian's 3.11.2 headers).

use object::{Object, ObjectSection, ObjectSymbol};
use oomtrace_common::{ABSENT, PyFrame, PyOffsets, PyProc, PyStackHeader, py_frame, py_thread};
use serde::Serialize;

use super::buildid::{ElfFile, ProcMaps};
use crate::event::{PyThread, PythonFrame};

/// Where a process's interpreter is, and how the walker reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub proc: PyProc,
    /// The file that defines `_PyRuntime` (the python executable, or libpython).
    pub module: String,
    pub offsets_from: OffsetsFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetsFrom {
    /// The interpreter's own `_Py_DebugOffsets` (3.13+).
    DebugOffsets,
    /// oomtrace's table, checked against this very version's headers.
    Table,
    /// oomtrace's table for this minor version; this patch release was not checked.
    TableUnchecked,
}

/// Releases whose headers the table was checked against (tests/programs/py_offsets.c). 3.10 has
/// no `Py_Version`, so its patch release is not known from the binary: the table is 3.10.13's,
/// taken for every 3.10 (only 3.10.13 was checked).
const CHECKED: &[u32] = &[0x030aff00, 0x030b02f0, 0x030b07f0, 0x030c01f0, 0x030d00f0];

/// The interpreter in `maps`, if one of its files defines `_PyRuntime`.
pub fn detect(maps: &ProcMaps) -> Option<Interpreter> {
    let mut seen = Vec::new();
    for m in &maps.mappings {
        if seen.contains(&m.file.id) {
            continue;
        }
        seen.push(m.file.id);
        let Some((runtime_vaddr, version_hex, debug)) = inspect_cached(&m.file) else {
            continue;
        };
        let bias = m.file.bias(m.start, m.offset)?;
        let (off, from) = match debug {
            Some(off) => (off, OffsetsFrom::DebugOffsets),
            None => {
                let off = table(version_hex)?;
                let from = if CHECKED.contains(&version_hex) {
                    OffsetsFrom::Table
                } else {
                    OffsetsFrom::TableUnchecked
                };
                (off, from)
            }
        };
        return Some(Interpreter {
            proc: PyProc {
                runtime_addr: bias.wrapping_add(runtime_vaddr),
                off,
            },
            module: m.file.path.clone(),
            offsets_from: from,
        });
    }
    None
}

type Inspected = Option<(u64, u32, Option<PyOffsets>)>;

/// [`inspect`] once per file: every snapshot of every process asks about each of its files.
fn inspect_cached(file: &ElfFile) -> Inspected {
    use std::{collections::HashMap, sync::Mutex};
    static SEEN: Mutex<Option<HashMap<super::buildid::FileId, Inspected>>> = Mutex::new(None);
    if let Some(r) = SEEN.lock().ok().and_then(|s| s.as_ref()?.get(&file.id).copied()) {
        return r;
    }
    let r = inspect(file);
    if let Ok(mut s) = SEEN.lock() {
        let m = s.get_or_insert_with(HashMap::new);
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(file.id, r);
    }
    r
}

/// `_PyRuntime`'s address in the file, the version, and the debug offsets if it has them.
fn inspect(file: &ElfFile) -> Option<(u64, u32, Option<PyOffsets>)> {
    // Every snapshot of every process passes each of its files here: parse symbol tables only of
    // files named like an interpreter (python3.11, libpython3.12.so.1.0), not of every library.
    let name = file.path.rsplit('/').next().unwrap_or("");
    if !name.contains("python") {
        return None;
    }
    let map = file.bytes()?;
    let obj = object::File::parse(&**map).ok()?;
    let sym = |name: &str| {
        // .dynsym: both are exported (the C API's data), also by stripped binaries.
        obj.dynamic_symbols()
            .find(|s| s.name() == Ok(name) && !s.is_undefined())
            .map(|s| s.address())
    };
    let runtime = sym("_PyRuntime")?;
    let read_at = |vaddr: u64, len: usize| -> Option<&[u8]> {
        let &(off, size, p_vaddr) = file
            .loads()
            .iter()
            .find(|&&(_, size, v)| vaddr >= v && vaddr + len as u64 <= v + size)?;
        let start = usize::try_from(vaddr - p_vaddr + off).ok()?;
        let _ = size;
        map.get(start..start + len)
    };
    let version = match sym("Py_Version") {
        Some(v) => u32::from_le_bytes(read_at(v, 4)?.try_into().ok()?),
        None => version_string(&obj)?,
    };
    let debug = if version >= 0x030d0000 {
        read_at(runtime, DEBUG_WORDS * 8).and_then(|b| debug_offsets(b, version))
    } else {
        None
    };
    Some((runtime, version, debug))
}

/// For interpreters without `Py_Version` (3.10): `VERSION` ("python3.10", the name of its library
/// directory, which getpath keeps in .rodata, NUL-terminated). Only the minor version is known
/// then: the patch byte is [`PATCH_UNKNOWN`].
fn version_string(obj: &object::File) -> Option<u32> {
    let ro = obj.section_by_name(".rodata")?.data().ok()?;
    [10u32, 9, 8].into_iter().find_map(|minor| {
        let pat = format!("\0python3.{minor}\0");
        find(ro, pat.as_bytes()).map(|_| 0x0300_0000 | (minor << 16) | (PATCH_UNKNOWN << 8))
    })
}

/// The patch byte of a version read from `VERSION` alone.
pub const PATCH_UNKNOWN: u32 = 0xff;

/// "3.12.1", or "3.10" when the patch release is unknown.
pub fn version_text(v: u32) -> String {
    let (major, minor, patch) = (v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff);
    if patch == PATCH_UNKNOWN {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// u64 words of `_Py_DebugOffsets` read (3.13.0 layout: Include/internal/pycore_runtime.h).
const DEBUG_WORDS: usize = 73;

/// The walker's offsets from 3.13's `_Py_DebugOffsets` (the start of `_PyRuntime`).
fn debug_offsets(b: &[u8], version: u32) -> Option<PyOffsets> {
    if b.get(..8)? != b"xdebugpy" {
        return None;
    }
    let w = |i: usize| -> Option<u32> {
        let v = u64::from_le_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?);
        u32::try_from(v).ok()
    };
    if u64::from(w(1)?) >> 16 != u64::from(version) >> 16 || w(2)? != 0 {
        // Another version than the binary says, or a free-threaded build (other layouts).
        return None;
    }
    let gil = w(15)?;
    Some(PyOffsets {
        version_hex: version,
        runtime_interpreters_head: w(5)?,
        runtime_tstate_current: ABSENT,
        interp_threads_head: w(9)?,
        interp_gil: w(14)?,
        gil_locked: w(17)?.checked_sub(gil)?,
        gil_holder: w(18)?.checked_sub(gil)?,
        tstate_next: w(21)?,
        tstate_thread_id: w(24)?,
        tstate_native_thread_id: w(25)?,
        tstate_frame: w(23)?,
        cframe_current_frame: ABSENT,
        frame_previous: w(29)?,
        frame_code: w(30)?,
        frame_instr: w(31)?,
        frame_owner: w(33)?,
        frame_is_entry: ABSENT,
        code_filename: w(35)?,
        code_name: w(37)?,
        code_firstlineno: w(39)?,
        code_linetable: w(38)?,
        code_adaptive: w(43)?,
        unicode_state: w(68)?,
        unicode_length: w(69)?,
        unicode_ascii_size: w(70)?,
        // PyCompactUnicodeObject: the ASCII header, then utf8_length and utf8.
        unicode_compact_size: w(70)? + 16,
        bytes_size: w(65)?,
        bytes_sval: w(66)?,
    })
}

/// oomtrace's offsets for a minor version (values printed by tests/programs/py_offsets.c).
pub fn table(version_hex: u32) -> Option<PyOffsets> {
    const A: u32 = ABSENT;
    let o = |v: [u32; 27]| PyOffsets {
        version_hex,
        runtime_interpreters_head: v[0],
        runtime_tstate_current: v[1],
        interp_threads_head: v[2],
        interp_gil: v[3],
        gil_locked: v[4],
        gil_holder: v[5],
        tstate_next: v[6],
        tstate_thread_id: v[7],
        tstate_native_thread_id: v[8],
        tstate_frame: v[9],
        cframe_current_frame: v[10],
        frame_previous: v[11],
        frame_code: v[12],
        frame_instr: v[13],
        frame_owner: v[14],
        frame_is_entry: v[15],
        code_filename: v[16],
        code_name: v[17],
        code_firstlineno: v[18],
        code_linetable: v[19],
        code_adaptive: v[20],
        unicode_state: v[21],
        unicode_length: v[22],
        unicode_ascii_size: v[23],
        unicode_compact_size: v[24],
        bytes_size: v[25],
        bytes_sval: v[26],
    };
    Some(match version_hex >> 16 {
        0x030a => o([
            32, 568, 8, A, A, A, 8, 176, A, 24, A, 24, 32, 96, A, A, 104, 112, 40, 120, A, 32, 16, 48, 72,
            16, 32,
        ]),
        0x030b => o([
            40, 576, 16, A, A, A, 8, 152, 160, 56, 8, 48, 32, 56, 69, 68, 112, 128, 72, 136, 184, 32, 16, 48,
            72, 16, 32,
        ]),
        0x030c => o([
            40, A, 72, 384, 16, 8, 8, 136, 144, 56, 0, 8, 0, 56, 70, A, 112, 128, 68, 136, 192, 32, 16, 40,
            56, 16, 32,
        ]),
        0x030d => o([
            632, A, 7344, 16, 16, 8, 8, 152, 160, 72, A, 8, 0, 56, 70, A, 112, 128, 68, 136, 200, 32, 16, 40,
            56, 16, 32,
        ]),
        _ => return None,
    })
}

/// A decoded `PyStack` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyStackRec {
    pub hdr: PyStackHeader,
    pub frames: Vec<PyFrame>,
}

impl PyStackRec {
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        let h = size_of::<PyStackHeader>();
        anyhow::ensure!(bytes.len() >= h, "py_stack record of {} bytes", bytes.len());
        // SAFETY: PyStackHeader and PyFrame are repr(C) integers; lengths checked.
        let hdr = unsafe { bytes.as_ptr().cast::<PyStackHeader>().read_unaligned() };
        let n = hdr.nframes as usize;
        let fsz = size_of::<PyFrame>();
        anyhow::ensure!(
            n <= oomtrace_common::PY_FRAMES && bytes.len() >= h + n * fsz,
            "py_stack record too short"
        );
        let frames = (0..n)
            // SAFETY: as above.
            .map(|i| unsafe { bytes.as_ptr().add(h + i * fsz).cast::<PyFrame>().read_unaligned() })
            .collect();
        Ok(Self { hdr, frames })
    }

    /// The event form: names, files and lines.
    pub fn to_event(&self) -> PyThread {
        let v = self.hdr.version_hex;
        let off = table(v);
        let mut frames = Vec::new();
        let mut groups = Vec::new();
        let mut in_group = 0;
        for f in &self.frames {
            if f.flags & py_frame::SHIM != 0 {
                // 3.12+: the frames above the shim ran in one _PyEval_EvalFrameDefault call.
                groups.push(in_group);
                in_group = 0;
                continue;
            }
            frames.push(frame_event(f, v, off.as_ref()));
            in_group += 1;
            if f.flags & py_frame::ENTRY != 0 || v >> 16 == 0x030a {
                // 3.11: the entry frame ends a call's run; 3.10: one call per frame.
                groups.push(in_group);
                in_group = 0;
            }
        }
        if in_group > 0 {
            groups.push(in_group);
        }
        PyThread {
            tid: (self.hdr.tid != 0).then_some(self.hdr.tid),
            trigger: self.hdr.flags & py_thread::TRIGGER != 0,
            holds_gil: self.hdr.flags & py_thread::GIL != 0,
            version: version_text(v),
            truncated: self.hdr.flags & py_thread::TRUNCATED != 0,
            frames,
            eval_groups: groups,
        }
    }
}

fn text(b: &[u8], len: u16) -> Option<String> {
    let b = b.get(..usize::from(len))?;
    (!b.is_empty()).then(|| b.iter().map(|&c| char::from(c)).collect())
}

fn frame_event(f: &PyFrame, version: u32, off: Option<&PyOffsets>) -> PythonFrame {
    let mut file = text(&f.file, f.file_len);
    if f.file_full_len > u32::from(f.file_len) {
        file = file.map(|s| format!("…{s}"));
    }
    let lt = &f.linetable[..usize::from(f.linetable_len).min(f.linetable.len())];
    let complete = f.linetable_full_len == u32::from(f.linetable_len);
    let first = u32::try_from(f.first_line).ok();
    let line = if version >> 16 == 0x030a {
        // f_lasti: an int, in code units (3.10).
        let lasti = f.instr as u32 as i32;
        (lasti >= 0)
            .then(|| line_310(lt, complete, f.first_line, lasti * 2))
            .flatten()
    } else {
        off.and_then(|o| {
            let start = f.code.checked_add(u64::from(o.code_adaptive))?;
            let units = f.instr.checked_sub(start)? / 2;
            line_311(lt, complete, f.first_line, usize::try_from(units).ok()?)
        })
    };
    PythonFrame {
        function: text(&f.name, f.name_len),
        file,
        line,
        first_line: first,
    }
}

/// The line of byte offset `addr` in a 3.10 `co_linetable` (pairs of address delta, line delta;
/// -128: no line), Objects/codeobject.c advance() of 3.10.
pub fn line_310(lt: &[u8], complete: bool, first_line: i32, addr: i32) -> Option<u32> {
    let (mut end, mut line) = (0i32, first_line);
    for pair in lt.as_chunks::<2>().0 {
        let start = end;
        end += i32::from(pair[0]);
        let ld = pair[1] as i8;
        let this = (ld != -128).then(|| {
            line += i32::from(ld);
            line
        });
        if start <= addr && addr < end {
            return this.and_then(|l| u32::try_from(l).ok());
        }
    }
    // A cut table (`complete` false) simply ends before the address: no line.
    let _ = complete;
    None
}

/// The line of code unit `index` in a 3.11+ location table (Objects/locations.md): entries of
/// (code, length) with a line delta per code.
pub fn line_311(lt: &[u8], complete: bool, first_line: i32, index: usize) -> Option<u32> {
    let mut i = 0;
    let (mut unit, mut line) = (0usize, first_line);
    while i < lt.len() {
        let b = lt[i];
        let code = (b >> 3) & 15;
        let len = usize::from(b & 7) + 1;
        let mut j = i + 1;
        let delta = match code {
            15 => None,
            14 | 13 => Some(svarint(lt, &mut j)?),
            10..=12 => Some(i32::from(code) - 10),
            _ => Some(0),
        };
        // Skip the rest of the entry: up to the next byte with the high bit set.
        while j < lt.len() && lt[j] & 0x80 == 0 {
            j += 1;
        }
        if j >= lt.len() && !complete {
            // The last entry may go on past what was copied: its line is not certain.
            return None;
        }
        if let Some(d) = delta {
            line += d;
        }
        if index >= unit && index < unit + len {
            return delta.and_then(|_| u32::try_from(line).ok());
        }
        unit += len;
        i = j;
    }
    None
}

fn varint(b: &[u8], i: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    let mut shift = 0;
    loop {
        let c = *b.get(*i)?;
        *i += 1;
        v |= u32::from(c & 63) << shift;
        if c & 64 == 0 {
            return Some(v);
        }
        shift += 6;
        if shift > 30 {
            return None;
        }
    }
}

fn svarint(b: &[u8], i: &mut usize) -> Option<i32> {
    let v = varint(b, i)?;
    Some(if v & 1 != 0 {
        -((v >> 1) as i32)
    } else {
        (v >> 1) as i32
    })
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;
    use crate::enrich::buildid::ModuleCache;

    /// Every interpreter of the machine: (path, expected "3.x.y").
    fn interpreters() -> Vec<(String, String)> {
        let mut v = Vec::new();
        if std::path::Path::new("/usr/bin/python3.11").exists() {
            v.push(("/usr/bin/python3.11".to_owned(), String::new()));
        }
        for ver in ["3.10.13", "3.11.7", "3.12.1", "3.13.0"] {
            let p = format!("/root/.pyenv/versions/{ver}/bin/python3");
            if std::path::Path::new(&p).exists() {
                v.push((p, ver.to_owned()));
            }
        }
        v
    }

    /// Each interpreter, running: found, its version read from the binary equals what it says it
    /// is, and its offsets are the table's (3.13: from its _Py_DebugOffsets, equal to the table).
    #[test]
    fn detects_each_interpreter_and_its_version() {
        let all = interpreters();
        if all.is_empty() {
            eprintln!("no CPython on this machine: skipped");
            return;
        }
        for (py, _) in all {
            let mut child = Command::new(&py)
                .args([
                    "-c",
                    "import sys,time; print('%d.%d.%d' % sys.version_info[:3], flush=True); time.sleep(30)",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            let cache = ModuleCache::new();
            let maps = cache.snapshot(child.id(), None).unwrap();
            let it = detect(&maps);
            let _ = child.kill();
            let _ = child.wait();
            let it = it.unwrap_or_else(|| panic!("{py}: no interpreter found"));
            let v = it.proc.off.version_hex;
            let said = line.trim();
            let read = version_text(v);
            assert!(
                said == read || (read.len() == 4 && said.starts_with(&format!("{read}."))),
                "{py}: {read} vs {said}"
            );
            let t = table(v).unwrap();
            assert_eq!(it.proc.off, t, "{py}: {:?}", it.offsets_from);
            if v >= 0x030d0000 {
                assert_eq!(it.offsets_from, OffsetsFrom::DebugOffsets, "{py}");
            }
            assert!(it.proc.runtime_addr != 0);
        }
    }

    #[test]
    fn line_tables() {
        // 3.10: (address delta, line delta) pairs; -128 = no line.
        let lt = [6u8, 1, 4, 2, 2, 0x80, 8, 1];
        assert_eq!(line_310(&lt, true, 10, 0), Some(11));
        assert_eq!(line_310(&lt, true, 10, 7), Some(13));
        assert_eq!(line_310(&lt, true, 10, 10), None);
        assert_eq!(line_310(&lt, true, 10, 12), Some(14));
        assert_eq!(line_310(&lt, true, 10, 40), None);
        // 3.11+: [no-column entry, +1 line, 2 units] [one-line form +2, 1 unit, cols] [short, 3 units]
        let lt = [
            0x80 | (13 << 3) | 1,
            2,
            0x80 | (12 << 3),
            0,
            5,
            0x80 | (3 << 3) | 2,
            0,
        ];
        assert_eq!(line_311(&lt, true, 20, 0), Some(21));
        assert_eq!(line_311(&lt, true, 20, 1), Some(21));
        assert_eq!(line_311(&lt, true, 20, 2), Some(23));
        assert_eq!(line_311(&lt, true, 20, 5), Some(23));
        assert_eq!(line_311(&lt, true, 20, 6), None);
        // No-location entry.
        assert_eq!(line_311(&[0x80 | (15 << 3)], true, 1, 0), None);
        // A negative svarint: 3 = -(1).
        assert_eq!(line_311(&[0x80 | (13 << 3), 3], true, 5, 0), Some(4));
    }
}
