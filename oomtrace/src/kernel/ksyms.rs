//! Kernel stack symbolization from /proc/kallsyms (addresses are visible to root; with
//! kptr_restrict they read as 0 and frames stay raw hex).

use std::{collections::HashMap, fs};

use anyhow::{Context, Result};

/// Text symbols in a compact table: kallsyms has ~120k of them, and a daemon that sits idle on
/// every node should not spend 10 MB on their names. Names live in one string; each entry is the
/// address, the name's offset and length, and an index into the module names.
#[derive(Debug, Default)]
pub struct Ksyms {
    addrs: Vec<u64>,
    /// (offset into `names`, length, module index + 1 or 0)
    refs: Vec<(u32, u16, u16)>,
    names: String,
    modules: Vec<String>,
}

impl Ksyms {
    pub fn load() -> Result<Self> {
        let text = fs::read_to_string("/proc/kallsyms").context("failed to read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut k = Ksyms::default();
        let mut modules: HashMap<&str, u16> = HashMap::new();
        let mut entries: Vec<(u64, u32, u16, u16)> = Vec::new();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            // Only code: t/T (text) and w/W (weak); data symbols would misattribute addresses.
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 || name.len() > usize::from(u16::MAX) {
                continue;
            }
            let module = match it.next() {
                Some(m) => {
                    let m = m.trim_start_matches('[').trim_end_matches(']');
                    let next = u16::try_from(modules.len() + 1).unwrap_or(0);
                    *modules.entry(m).or_insert(next)
                }
                None => 0,
            };
            let Ok(off) = u32::try_from(k.names.len()) else {
                break;
            };
            k.names.push_str(name);
            entries.push((addr, off, name.len() as u16, module));
        }
        entries.sort_unstable_by_key(|e| e.0);
        k.addrs = entries.iter().map(|e| e.0).collect();
        k.refs = entries.iter().map(|e| (e.1, e.2, e.3)).collect();
        let mut mods: Vec<(&str, u16)> = modules.into_iter().collect();
        mods.sort_unstable_by_key(|m| m.1);
        k.modules = mods.into_iter().map(|(m, _)| m.to_owned()).collect();
        k.names.shrink_to_fit();
        k
    }

    /// `symbol+0xoff` (with ` [module]`), or the raw address in hex when unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        let i = self.addrs.partition_point(|&a| a <= addr);
        let Some(i) = i.checked_sub(1) else {
            return format!("{addr:#x}");
        };
        let base = self.addrs[i];
        if addr - base >= 1 << 20 {
            return format!("{addr:#x}");
        }
        let (off, len, module) = self.refs[i];
        let name = &self.names[off as usize..off as usize + usize::from(len)];
        match module
            .checked_sub(1)
            .and_then(|m| self.modules.get(usize::from(m)))
        {
            Some(m) => format!("{name}+{:#x} [{m}]", addr - base),
            None => format!("{name}+{:#x}", addr - base),
        }
    }
}

/// True for the frames a BPF program's own invocation adds at the top of a stack
/// (the JITed program, the trampoline/bpf_trace_run glue, the tracepoint iterator).
pub fn is_bpf_glue(frame: &str) -> bool {
    [
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "trace_call_bpf",
        "perf_trace_",
        "bpf_trampoline_",
    ]
    .iter()
    .any(|p| frame.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81200000 T out_of_memory
ffffffff81200400 t oom_kill_process
ffffffff81300000 D some_data
ffffffffc0001000 t nf_hook [nf_tables]
";

    #[test]
    fn symbolizes_text_symbols_and_modules() {
        let k = Ksyms::parse(SAMPLE);
        assert_eq!(k.symbolize(0xffffffff81200410), "oom_kill_process+0x10");
        assert_eq!(k.symbolize(0xffffffff81200000), "out_of_memory+0x0");
        // data symbols are skipped: this address still belongs to oom_kill_process
        assert_eq!(k.symbolize(0xffffffff81300010), "oom_kill_process+0xffc10");
        assert_eq!(k.symbolize(0xffffffffc0001008), "nf_hook+0x8 [nf_tables]");
        assert_eq!(k.symbolize(0x1000), "0x1000");
    }

    #[test]
    fn hidden_addresses_give_an_empty_table() {
        let k = Ksyms::parse("0000000000000000 T _stext\n0000000000000000 T foo\n");
        assert!(k.addrs.is_empty());
        assert_eq!(k.symbolize(0xffffffff81000000), "0xffffffff81000000");
    }

    #[test]
    fn recognizes_bpf_glue() {
        assert!(is_bpf_glue("bpf_prog_6deef7357e7b4530_mark_victim_btf+0x4a"));
        assert!(is_bpf_glue("bpf_trace_run2+0x7c"));
        assert!(!is_bpf_glue("mark_oom_victim+0x1a"));
    }
}
