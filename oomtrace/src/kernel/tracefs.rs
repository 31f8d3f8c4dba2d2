//! tracefs: where it is mounted, and the record layout of a tracepoint (its `format` file).
//! Layouts change between kernels (oom/mark_victim gained comm and rss fields in 6.8), so the
//! classic-tracepoint programs read fields at offsets parsed here at run time.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One `field:` line of a tracepoint format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub decl: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Parses a tracefs `format` file.
    pub fn parse(text: &str) -> Result<Self> {
        let mut fmt = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("name:") {
                fmt.name = name.trim().to_owned();
            } else if let Some(id) = line.strip_prefix("ID:") {
                fmt.id = id.trim().parse().context("bad ID line")?;
            } else if line.starts_with("field:") {
                fmt.fields.push(parse_field(line)?);
            }
        }
        if fmt.fields.is_empty() {
            bail!("no fields in tracepoint format");
        }
        Ok(fmt)
    }
}

fn parse_field(line: &str) -> Result<Field> {
    // field:unsigned long total_vm;	offset:16;	size:8;	signed:0;
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim().to_owned());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = Some(v.parse::<u32>().context("bad field offset")?);
        } else if let Some(v) = part.strip_prefix("size:") {
            size = Some(v.parse::<u32>().context("bad field size")?);
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    let decl = decl.context("field without declaration")?;
    // The name is the last identifier of the declaration, before any array suffix:
    // `char comm[16]` and `__data_loc char[] comm` both name `comm`.
    let base = match decl.strip_suffix(']') {
        Some(d) => d.rsplit_once('[').map_or(d, |(b, _)| b),
        None => &decl,
    }
    .trim_end();
    let name = base
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .filter(|n| !n.is_empty())
        .context("field without name")?
        .to_owned();
    Ok(Field {
        decl,
        name,
        offset: offset.context("field without offset")?,
        size: size.context("field without size")?,
        signed,
    })
}

/// Finds tracefs: /sys/kernel/tracing, or the debugfs location older systems use.
pub fn root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Where tracefs goes when oomtrace mounts it itself.
const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// How tracefs came to be readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounted {
    /// It already was (by the system).
    Already,
    /// oomtrace mounted it in a private mount namespace of its own: nothing is left behind in
    /// the host's namespace, and the mount goes away with the process.
    Private,
}

/// Makes tracefs readable for this process: classic tracepoints (kernels without BTF, `--attach
/// tracepoint`, hooks tp_btf cannot reach) need its `format` and `id` files, and a fresh machine
/// or a container does not mount it. Mounting it where the host would see it would change the
/// machine, so the mount happens in a new mount namespace whose mounts do not propagate
/// (unshare(CLONE_NEWNS) + MS_REC|MS_PRIVATE on /). Needs CAP_SYS_ADMIN, and must run while the
/// process is single-threaded (unshare(2): CLONE_NEWNS implies CLONE_FS, which fails in a
/// process whose threads share their fs_struct).
pub fn ensure_mounted() -> Result<Mounted> {
    if root().is_some() {
        return Ok(Mounted::Already);
    }
    // SAFETY: plain syscalls with valid, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let none = std::ptr::null();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "making / private in the new mount namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "mount -t tracefs tracefs {MOUNT_POINT}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(Mounted::Private)
}

pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format> {
    let path = root.join("events").join(category).join(name).join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    Format::parse(&text).with_context(|| format!("failed to parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // oom/mark_victim on Linux 6.18 (this project's lab machine).
    const MARK_VICTIM_6_18: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s\", REC->pid, __get_str(comm)
";

    // oom/mark_victim before 6.8 carries only the pid.
    const MARK_VICTIM_6_1: &str = "name: mark_victim
ID: 512
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn parses_mark_victim_6_18() {
        let f = Format::parse(MARK_VICTIM_6_18).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("mark_victim", 609));
        assert_eq!(f.fields.len(), 13);
        assert_eq!(f.fields[5].name, "comm");
        let comm = f.field("comm").unwrap();
        assert_eq!((comm.offset, comm.size), (12, 4));
        assert!(comm.decl.starts_with("__data_loc"));
        let adj = f.field("oom_score_adj").unwrap();
        assert_eq!((adj.offset, adj.size, adj.signed), (64, 2, true));
        assert_eq!(f.field("uid").unwrap().offset, 48);
    }

    #[test]
    fn parses_mark_victim_6_1_with_pid_only() {
        let f = Format::parse(MARK_VICTIM_6_1).unwrap();
        assert_eq!(f.field("pid").unwrap().offset, 8);
        assert!(f.field("comm").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("field:int x; offset:zz; size:4;").is_err());
        assert!(Format::parse("field:int x; size:4;").is_err());
    }

    #[test]
    fn array_field_names() {
        let f = parse_field("field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.size), ("comm", 16));
    }
}
