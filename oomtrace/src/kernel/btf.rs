//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`), just enough to find struct
//! member offsets, type sizes and enum values. Parsing all of vmlinux with a general-purpose
//! library costs ~200 ms here; indexing the type section ourselves and resolving only the few
//! names we need costs a few milliseconds, which keeps `oomtrace run` start-up under 100 ms.
//!
//! Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst (v6.18).

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail, ensure};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

// BTF_KIND_* (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Ty {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// Byte offset of the kind-specific data that follows the common header.
    extra: usize,
}

impl Ty {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// A struct member: its byte offset from the start of the outermost struct and its type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub type_id: u32,
}

pub struct Btf {
    data: Vec<u8>,
    types: Vec<Ty>, // index = type id - 1
    str_start: usize,
    str_len: usize,
    /// Name of a struct/union → its type ids (the complete definitions first).
    by_name: HashMap<String, Vec<u32>>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf").field("types", &self.types.len()).finish()
    }
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Where the running kernel's BTF comes from: the kernel itself (CONFIG_DEBUG_INFO_BTF), or a
/// file given with `--btf` for a kernel built without it (e.g. from BTFHub, or extracted from the
/// distribution's debug vmlinux with `pahole --btf_encode_detached`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtfSource {
    Kernel,
    File(PathBuf),
}

impl BtfSource {
    pub fn path(&self) -> &Path {
        match self {
            Self::Kernel => Path::new(VMLINUX),
            Self::File(p) => p,
        }
    }

    /// Reads and parses the BTF. A `--btf` file must describe the running kernel: one that
    /// does not is an error, never wrong offsets.
    pub fn load(&self) -> Result<Btf> {
        let path = self.path();
        let data = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let btf = Btf::parse(data).with_context(|| format!("{} is not usable BTF", path.display()))?;
        if let Self::File(p) = self {
            let kallsyms =
                std::fs::read_to_string("/proc/kallsyms").context("failed to read /proc/kallsyms")?;
            btf.check_matches(&kallsyms)
                .with_context(|| format!("--btf {} does not describe the running kernel", p.display()))?;
        }
        Ok(btf)
    }

    /// The same BTF parsed by aya, for loading programs against it.
    pub fn load_aya(&self) -> Result<aya::Btf> {
        let path = self.path();
        aya::Btf::parse_file(path, aya::Endianness::default())
            .with_context(|| format!("failed to parse {} with aya", path.display()))
    }
}

/// Share of the BTF's functions that a matching kernel's kallsyms must name. Functions in BTF
/// are those pahole found with a symbol (scripts/pahole-flags.sh, v6.18), so the running
/// kernel names nearly all of its own (measured: 98.3 % on 6.18.44); another kernel version
/// renames and drops thousands (Debian's 6.1.192 BTF on 6.18.44: 77.0 %).
const MIN_FUNCS_IN_KALLSYMS: f64 = 0.95;

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        BtfSource::Kernel.load()
    }

    /// Names of the functions (BTF_KIND_FUNC) the BTF describes.
    pub fn func_names(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .filter(|t| t.kind() == KIND_FUNC && t.name_off != 0)
            .map(|t| self.str(t.name_off))
    }

    /// Checks that this BTF describes the kernel whose `/proc/kallsyms` is `kallsyms`: nearly all
    /// its functions must be the kernel's (names are readable without CAP_SYSLOG).
    pub fn check_matches(&self, kallsyms: &str) -> Result<()> {
        let names: std::collections::HashSet<&str> = kallsyms
            .lines()
            .filter_map(|l| {
                let mut it = l.split_ascii_whitespace();
                let (_, kind, name) = (it.next()?, it.next()?, it.next()?);
                // Built-in code only: a module's functions are in its own BTF, not vmlinux's.
                (matches!(kind, "t" | "T" | "w" | "W") && it.next().is_none()).then_some(name)
            })
            .collect();
        let (mut total, mut found) = (0u64, 0u64);
        for f in self.func_names() {
            total += 1;
            found += u64::from(names.contains(f));
        }
        ensure!(total > 0, "it describes no functions");
        let share = found as f64 / total as f64;
        log::debug!("{found} of the BTF's {total} functions are in kallsyms");
        ensure!(
            share >= MIN_FUNCS_IN_KALLSYMS,
            "only {found} of its {total} functions ({:.1} %) are in this kernel's /proc/kallsyms (a file for \
             this kernel release names nearly all): use the BTF of exactly this kernel ({})",
            share * 100.0,
            crate::kernel::release()
        );
        Ok(())
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        ensure!(data.len() >= 24, "BTF too short");
        ensure!(
            u16::from_le_bytes([data[0], data[1]]) == MAGIC,
            "not little-endian BTF (bad magic)"
        );
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let t0 = hdr_len + type_off;
        let t1 = t0 + type_len;
        let str_start = hdr_len + str_off;
        ensure!(
            t1 <= data.len() && str_start + str_len <= data.len(),
            "BTF sections out of bounds"
        );
        let mut types = Vec::with_capacity(type_len / 16);
        let mut pos = t0;
        while pos < t1 {
            let ty = Ty {
                name_off: u32_at(&data, pos)?,
                info: u32_at(&data, pos + 4)?,
                size_or_type: u32_at(&data, pos + 8)?,
                extra: pos + 12,
            };
            let vlen = ty.vlen();
            let extra = match ty.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => bail!("unknown BTF kind {k} at type {}", types.len() + 1),
            };
            types.push(ty);
            pos = ty.extra + extra;
        }
        let mut btf = Btf {
            data,
            types,
            str_start,
            str_len,
            by_name: HashMap::new(),
        };
        btf.index_names();
        Ok(btf)
    }

    fn index_names(&mut self) {
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, ty) in self.types.iter().enumerate() {
            if matches!(ty.kind(), KIND_STRUCT | KIND_UNION) && ty.name_off != 0 {
                let name = self.str(ty.name_off).to_owned();
                by_name.entry(name).or_default().push(i as u32 + 1);
            }
        }
        self.by_name = by_name;
    }

    fn str(&self, off: u32) -> &str {
        let off = off as usize;
        if off >= self.str_len {
            return "";
        }
        let s = &self.data[self.str_start + off..self.str_start + self.str_len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<Ty> {
        id.checked_sub(1)
            .and_then(|i| self.types.get(i as usize).copied())
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<(u32, Ty)> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some((id, ty)),
            }
        }
        None
    }

    /// How many arguments the tracepoint `name` hands a tp_btf program: the parameters of its
    /// `btf_trace_<name>` typedef (a pointer to a function whose first parameter is the
    /// tracepoint's private data, not an argument; include/linux/tracepoint.h, v6.18).
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let want = format!("btf_trace_{name}");
        let i = self
            .types
            .iter()
            .position(|t| t.kind() == KIND_TYPEDEF && self.str(t.name_off) == want)?;
        let (_, ptr) = self.resolve(i as u32 + 1)?;
        if ptr.kind() != KIND_PTR {
            return None;
        }
        let (_, proto) = self.resolve(ptr.size_or_type)?;
        (proto.kind() == KIND_FUNC_PROTO).then(|| proto.vlen().saturating_sub(1))
    }

    /// Type id of the struct (or union) `name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.first().copied()
    }

    /// Size in bytes of a type.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        let (_, ty) = self.resolve(id)?;
        match ty.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(ty.size_or_type)
            }
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let (elem, n) = self.array(id)?;
                self.size_of(elem)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Element type and length, if `id` is an array.
    pub fn array(&self, id: u32) -> Option<(u32, u32)> {
        let (_, ty) = self.resolve(id)?;
        if ty.kind() != KIND_ARRAY {
            return None;
        }
        let elem = u32_at(&self.data, ty.extra).ok()?;
        let n = u32_at(&self.data, ty.extra + 8).ok()?;
        Some((elem, n))
    }

    /// Name of the struct/union a type resolves to.
    pub fn struct_name(&self, id: u32) -> Option<&str> {
        let (_, ty) = self.resolve(id)?;
        matches!(ty.kind(), KIND_STRUCT | KIND_UNION).then(|| self.str(ty.name_off))
    }

    /// Offset of `field` in the struct/union `id`, looking through anonymous members
    /// (e.g. `mm_struct.total_vm` sits in an anonymous struct since 6.2).
    pub fn member_in(&self, id: u32, field: &str) -> Option<Member> {
        let (_, ty) = self.resolve(id)?;
        if !matches!(ty.kind(), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..ty.vlen() {
            let m = ty.extra + 12 * i;
            let name_off = u32_at(&self.data, m).ok()?;
            let type_id = u32_at(&self.data, m + 4).ok()?;
            let raw = u32_at(&self.data, m + 8).ok()?;
            // With kind_flag, the low 24 bits are the bit offset and the top 8 the bitfield size.
            let bits = if ty.kind_flag() { raw & 0x00ff_ffff } else { raw };
            if bits % 8 != 0 {
                continue; // bitfields are never what we read
            }
            let offset = bits / 8;
            if name_off == 0 {
                if let Some(inner) = self.member_in(type_id, field) {
                    return Some(Member {
                        offset: offset + inner.offset,
                        type_id: inner.type_id,
                    });
                }
            } else if self.str(name_off) == field {
                return Some(Member { offset, type_id });
            }
        }
        None
    }

    /// `struct_name.field` (with `a.b` paths through named members too).
    pub fn member(&self, struct_name: &str, path: &str) -> Option<Member> {
        let mut id = self.struct_id(struct_name)?;
        let mut total = 0;
        let mut last = None;
        for part in path.split('.') {
            let m = self.member_in(id, part)?;
            total += m.offset;
            id = m.type_id;
            last = Some(Member {
                offset: total,
                type_id: m.type_id,
            });
        }
        last
    }

    /// Value of the enumerator `name` in any enum of the kernel.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        for ty in &self.types {
            match ty.kind() {
                KIND_ENUM => {
                    for i in 0..ty.vlen() {
                        let e = ty.extra + 8 * i;
                        if self.str(u32_at(&self.data, e).ok()?) == name {
                            return Some(i64::from(u32_at(&self.data, e + 4).ok()? as i32));
                        }
                    }
                }
                KIND_ENUM64 => {
                    for i in 0..ty.vlen() {
                        let e = ty.extra + 12 * i;
                        if self.str(u32_at(&self.data, e).ok()?) == name {
                            let lo = u64::from(u32_at(&self.data, e + 4).ok()?);
                            let hi = u64::from(u32_at(&self.data, e + 8).ok()?);
                            return Some((hi << 32 | lo) as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Every enumerator whose name starts with `prefix`, with its value.
    pub fn enumerators(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for ty in &self.types {
            let (width, kind) = match ty.kind() {
                KIND_ENUM => (8, KIND_ENUM),
                KIND_ENUM64 => (12, KIND_ENUM64),
                _ => continue,
            };
            for i in 0..ty.vlen() {
                let e = ty.extra + width * i;
                let Ok(name_off) = u32_at(&self.data, e) else {
                    break;
                };
                let name = self.str(name_off);
                if !name.starts_with(prefix) {
                    continue;
                }
                let lo = u64::from(u32_at(&self.data, e + 4).unwrap_or(0));
                let hi = if kind == KIND_ENUM64 {
                    u64::from(u32_at(&self.data, e + 8).unwrap_or(0))
                } else {
                    0
                };
                out.push((name.to_owned(), hi << 32 | lo));
            }
        }
        out
    }

    pub fn type_count(&self) -> usize {
        self.types.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a little-endian BTF blob from (kind, name, vlen, size_or_type, extra words).
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        pub(crate) fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        pub(crate) fn ty(&mut self, kind: u32, name: &str, vlen: u32, st: u32, extra: &[u32]) {
            let n = self.name(name);
            for w in [n, (kind << 24) | vlen, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    #[test]
    fn finds_members_through_anonymous_structs_and_arrays() {
        let mut b = Builder::new();
        // 1: int (4 bytes)
        b.ty(KIND_INT, "int", 0, 4, &[32]);
        // 2: long (8 bytes)
        b.ty(KIND_INT, "long", 0, 8, &[64]);
        // 3: anonymous struct { long total_vm @0; }
        let tv = b.name("total_vm");
        b.ty(KIND_STRUCT, "", 1, 8, &[tv, 2, 0]);
        // 4: struct percpu_counter { int lock @0; long count @8; }  size 16
        let (l, c) = (b.name("lock"), b.name("count"));
        b.ty(KIND_STRUCT, "percpu_counter", 2, 16, &[l, 1, 0, c, 2, 64]);
        // 5: percpu_counter[4]
        b.ty(KIND_ARRAY, "", 0, 0, &[4, 1, 4]);
        // 6: struct mm_struct { int x @0; <anon 3> @8; percpu_counter rss_stat[4] @16 }
        let (x, r) = (b.name("x"), b.name("rss_stat"));
        b.ty(KIND_STRUCT, "mm_struct", 3, 80, &[x, 1, 0, 0, 3, 64, r, 5, 128]);
        // 7: enum { MM_FILEPAGES=0, MM_ANONPAGES=1 }
        let (f, a) = (b.name("MM_FILEPAGES"), b.name("MM_ANONPAGES"));
        b.ty(KIND_ENUM, "", 2, 4, &[f, 0, a, 1]);
        let btf = Btf::parse(b.build()).unwrap();
        assert_eq!(btf.type_count(), 7);
        assert_eq!(btf.member("mm_struct", "total_vm").unwrap().offset, 8);
        let rss = btf.member("mm_struct", "rss_stat").unwrap();
        assert_eq!(rss.offset, 16);
        let (elem, n) = btf.array(rss.type_id).unwrap();
        assert_eq!((n, btf.size_of(elem)), (4, Some(16)));
        assert_eq!(btf.struct_name(elem), Some("percpu_counter"));
        assert_eq!(btf.member("percpu_counter", "count").unwrap().offset, 8);
        assert_eq!(btf.enum_value("MM_ANONPAGES"), Some(1));
        assert_eq!(btf.enum_value("MM_NOPE"), None);
        assert_eq!(btf.member("mm_struct", "nope"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![0; 10]).is_err());
        assert!(Btf::parse(vec![0; 64]).is_err());
        let mut b = Builder::new();
        b.ty(31, "bad", 0, 0, &[]);
        assert!(Btf::parse(b.build()).is_err());
    }

    #[test]
    fn parses_the_running_kernel_when_present() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIP: {VMLINUX} not readable on this machine");
            return;
        };
        let pid = btf.member("task_struct", "pid").expect("task_struct.pid");
        assert!(pid.offset > 0);
        assert!(btf.enum_value("MM_ANONPAGES").is_some());
        // TP_PROTO(struct task_struct *task, uid_t uid), include/trace/events/oom.h.
        assert_eq!(btf.tracepoint_args("mark_victim"), Some(2));
        assert_eq!(btf.tracepoint_args("wake_reaper"), Some(1));
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
    }
}
