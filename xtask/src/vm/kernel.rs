//! The kernels the VM tests boot: Debian's cloud kernels, pinned by package, version and sha256,
//! fetched with `apt-get download`, unpacked with `dpkg-deb`, and cached as an uncompressed
//! `vmlinux` (qemu boots it through its PVH entry point, about a second faster under TCG than the
//! bzImage, which would decompress itself in emulation).
//!
//! Kernels of another Debian release than the machine's (5.10 from bullseye) come from an apt
//! sources list of their own under target/vm/apt, made from the machine's own entries with the
//! suite changed, and used only for that download: the machine's apt lists are never touched.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A kernel package pinned to one file of the Debian archive.
#[derive(Debug)]
pub struct Pin {
    /// What `--kernel` calls it.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// Of the .deb.
    pub sha256: &'static str,
    /// Where apt finds it.
    pub source: Source,
}

/// Which apt sources serve a pinned package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The machine's own (`apt-get download` as it is).
    Machine,
    /// Another Debian release: the machine's entries for its release and its `-security` suite,
    /// with `release` and `release-security` put in, in a sources list used only for this download.
    Release(&'static str),
}

/// Debian 11's cloud kernel 5.10 (bullseye, served from bullseye-security) and Debian 12's 6.1
/// (bookworm's own) and 6.12 (its backport). All are built with BTF, kprobes and fentry; Debian
/// drops superseded versions from the archive, see [`fetch`]. 5.10's bzImage payload is LZ4
/// (CONFIG_KERNEL_LZ4), which [`extract_vmlinux`] knows.
pub const KERNELS: [Pin; 3] = [
    Pin {
        name: "5.10",
        package: "linux-image-5.10.0-46-cloud-amd64",
        version: "5.10.262-1",
        sha256: "18d94781d1b3052e21967ac2262239e5f14fbf511d6c3e110629d7aa35340760",
        source: Source::Release("bullseye"),
    },
    Pin {
        name: "6.1",
        package: "linux-image-6.1.0-56-cloud-amd64",
        version: "6.1.192-2",
        sha256: "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
        source: Source::Machine,
    },
    Pin {
        name: "6.12",
        package: "linux-image-6.12.117+deb12-cloud-amd64",
        version: "6.12.117-1~deb12u1",
        sha256: "5195b288dec79e2981d6b84457f38b7ce7310a2d702930ec7d07209c7f78ce37",
        source: Source::Machine,
    },
];

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    pub pin: &'static Pin,
    pub vmlinux: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
}

/// The cached kernel for `pin`, fetched and unpacked first if the cache does not have it.
/// `vm_dir` is target/vm: the kernels are cached in its `kernels`, other releases' apt lists kept
/// in its `apt`.
pub fn prepare(pin: &'static Pin, vm_dir: &Path) -> Result<Kernel> {
    let dir = vm_dir
        .join("kernels")
        .join(format!("{}_{}", pin.package, pin.version));
    let vmlinux = dir.join("vmlinux");
    let stamp = dir.join("deb.sha256");
    let release_file = dir.join("release");
    let cached = fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == pin.sha256) && vmlinux.exists();
    if !cached {
        eprintln!("vm-test: fetching {}={}", pin.package, pin.version);
        let scratch = dir.join("scratch");
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .with_context(|| format!("failed to remove {}", scratch.display()))?;
        }
        fs::create_dir_all(&scratch).with_context(|| format!("failed to create {}", scratch.display()))?;
        let deb = fetch(pin, &scratch, &vm_dir.join("apt"))?;
        let root = scratch.join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
            .with_context(|| format!("failed to unpack {}", deb.display()))?;
        let (vmlinuz, release) = find_vmlinuz(&root.join("boot"))?;
        let image = fs::read(&vmlinuz).with_context(|| format!("failed to read {}", vmlinuz.display()))?;
        let elf = extract_vmlinux(&image)
            .with_context(|| format!("failed to extract vmlinux from {}", vmlinuz.display()))?;
        let tmp = dir.join("vmlinux.tmp");
        fs::write(&tmp, elf).with_context(|| format!("failed to write {}", tmp.display()))?;
        fs::rename(&tmp, &vmlinux).with_context(|| format!("failed to move {} into place", tmp.display()))?;
        let config = root.join("boot").join(format!("config-{release}"));
        let _ = fs::copy(&config, dir.join("config"));
        fs::write(&release_file, &release).context("failed to write the kernel release")?;
        fs::write(&stamp, pin.sha256).context("failed to write the cache stamp")?;
        fs::remove_dir_all(&scratch).with_context(|| format!("failed to remove {}", scratch.display()))?;
    }
    let release = fs::read_to_string(&release_file)
        .with_context(|| format!("failed to read {}", release_file.display()))?
        .trim()
        .to_owned();
    Ok(Kernel {
        pin,
        vmlinux,
        release,
    })
}

/// `apt-get download`s the pinned .deb into `dir` and checks its sha256. `apt_dir` holds the
/// sources lists of other releases (see [`Source::Release`]).
fn fetch(pin: &Pin, dir: &Path, apt_dir: &Path) -> Result<PathBuf> {
    let spec = format!("{}={}", pin.package, pin.version);
    let opts = apt_options(pin, apt_dir)?;
    let apt = |tool: &str, args: &[&str]| {
        let mut cmd = Command::new(tool);
        // apt drops to the _apt user to download, which cannot write into a root-owned dir.
        cmd.current_dir(dir)
            .args(["-q", "-o", "APT::Sandbox::User=root"])
            .args(&opts)
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let download = || {
        apt("apt-get", &["download", &spec]).output().context(
            "failed to run apt-get (vm-test fetches Debian's kernel packages with it: run it on Debian)",
        )
    };
    let mut out = download()?;
    if !out.status.success() && crate::sys::is_root() {
        // A fresh machine's package lists may predate the pin; another release's own lists do
        // not exist before the first download.
        eprintln!(
            "vm-test: {spec} not in the package lists; running apt-get update{}",
            match pin.source {
                Source::Machine => String::new(),
                Source::Release(r) => format!(" on vm-test's own {r} sources list"),
            }
        );
        let updated = apt("apt-get", &["update", "-qq"])
            .status()
            .context("failed to run apt-get update")?;
        if !updated.success() {
            eprintln!("vm-test: apt-get update failed with {updated}");
        }
        out = download()?;
    }
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("nothing");
        let (served_by, apt_vars) = match pin.source {
            Source::Machine => ("this machine's apt sources".to_owned(), String::new()),
            Source::Release(r) => (
                format!("Debian's {r} and {r}-security suites"),
                format!(" $APT (APT=\"{}\")", opts.join(" ")),
            ),
        };
        bail!(
            "the pinned kernel package {spec} is not served by {served_by} any more \
             (apt-get download said: {said}).\n\
             Debian drops superseded kernels from its archive. To move the pin, in xtask/src/vm/kernel.rs \
             (KERNELS) put the current package, version and sha256:\n  \
             apt-get{apt_vars} update && apt-cache{apt_vars} search --names-only '^linux-image-{name}[.+-].*cloud-amd64$'\n  \
             apt-get{apt_vars} -o APT::Sandbox::User=root download PACKAGE=VERSION && sha256sum PACKAGE_*.deb\n\
             (The old file stays on Debian's snapshot archive if you need exactly that kernel.)",
            name = pin.name.replace('.', "\\."),
        );
    }
    let deb = fs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?;
    let bytes = fs::read(&deb).with_context(|| format!("failed to read {}", deb.display()))?;
    let got = hex(&Sha256::digest(&bytes));
    if got != pin.sha256 {
        bail!(
            "{} has sha256 {got}, but the pin in xtask/src/vm/kernel.rs says {}: the archive serves a \
             different file under this version; refusing to boot it. Check where it came from \
             (apt-cache{} policy {}) before updating the pin.",
            deb.display(),
            pin.sha256,
            if opts.is_empty() {
                String::new()
            } else {
                format!(" {}", opts.join(" "))
            },
            pin.package
        );
    }
    Ok(deb)
}

/// The apt options that make apt use `pin`'s sources: none for the machine's; for another release
/// a sources list, package lists and cache of its own under `apt_dir/RELEASE`, so that neither the
/// machine's lists nor its package cache ever see that release.
fn apt_options(pin: &Pin, apt_dir: &Path) -> Result<Vec<String>> {
    let Source::Release(release) = pin.source else {
        return Ok(Vec::new());
    };
    let dir = apt_dir.join(release);
    let list = dir.join("sources.list");
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    for d in [lists.join("partial"), cache.join("archives").join("partial")] {
        fs::create_dir_all(&d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    let entries = machine_sources()?;
    let text = release_sources(&entries, release).with_context(|| {
        format!(
            "failed to make a sources entry for Debian {release} from this machine's apt sources \
             (/etc/apt/sources.list, /etc/apt/sources.list.d): vm-test copies the machine's Debian \
             entry and changes its suite"
        )
    })?;
    fs::write(&list, text).with_context(|| format!("failed to write {}", list.display()))?;
    let abs = |p: &Path| {
        fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .display()
            .to_string()
    };
    Ok(vec![
        "-o".into(),
        format!("Dir::Etc::SourceList={}", abs(&list)),
        "-o".into(),
        "Dir::Etc::SourceParts=/dev/null".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", abs(&lists)),
        "-o".into(),
        format!("Dir::Cache={}", abs(&cache)),
    ])
}

/// One `deb` entry of an apt sources list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptEntry {
    uri: String,
    suite: String,
    components: Vec<String>,
    signed_by: Option<String>,
}

/// The machine's `deb` entries, from the one-line and the deb822 files apt reads by default.
fn machine_sources() -> Result<Vec<AptEntry>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut entries = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(parse_deb822(&text)),
            Some("list") => entries.extend(parse_one_line(&text)),
            _ if f.file_name().is_some_and(|n| n == "sources.list") => entries.extend(parse_one_line(&text)),
            // apt ignores other names too (e.g. `*.list.disabled`).
            _ => {}
        }
    }
    Ok(entries)
}

/// `deb [opt=v ...] URI SUITE COMPONENT...` lines.
fn parse_one_line(text: &str) -> Vec<AptEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned);
            rest = after;
        }
        let mut w = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (w.next(), w.next()) {
            out.push(AptEntry {
                uri: uri.to_owned(),
                suite: suite.to_owned(),
                components: w.map(str::to_owned).collect(),
                signed_by,
            });
        }
    }
    out
}

/// deb822 paragraphs (`Types:`, `URIs:`, `Suites:`, `Components:`, `Signed-By:`), one entry per
/// URI and suite. An inline key in `Signed-By` is left out (apt then falls back to its keyrings).
fn parse_deb822(text: &str) -> Vec<AptEntry> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        if !get("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
            || get("enabled").is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let signed_by = get("signed-by")
            .filter(|s| s.starts_with('/') && !s.contains('\n'))
            .map(str::to_owned);
        let components: Vec<String> = get("components")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for uri in get("uris").unwrap_or_default().split_whitespace() {
            for suite in get("suites").unwrap_or_default().split_whitespace() {
                out.push(AptEntry {
                    uri: uri.to_owned(),
                    suite: suite.to_owned(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                });
            }
        }
    }
    out
}

/// A one-line sources list for `release`: each machine entry of a release's own suite (`bookworm`)
/// or its security suite (`bookworm-security`) with the suite changed to `release` or
/// `release-security`. Updates and backports suites are left out; so are duplicates.
fn release_sources(machine: &[AptEntry], release: &str) -> Result<String> {
    let mut lines: Vec<String> = Vec::new();
    for e in machine {
        let suite = match e.suite.split_once('-') {
            None if !e.suite.contains('/') => release.to_owned(),
            Some((_, "security")) => format!("{release}-security"),
            _ => continue,
        };
        let opts = e
            .signed_by
            .as_ref()
            .map(|k| format!("[signed-by={k}] "))
            .unwrap_or_default();
        let line = format!("deb {opts}{} {suite} {}", e.uri, e.components.join(" "));
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    if !lines.iter().any(|l| !l.contains("-security ")) {
        bail!("no entry for a Debian release's own suite");
    }
    lines.push(String::new());
    Ok(lines.join("\n"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

/// The one `vmlinuz-RELEASE` in `boot`, and RELEASE.
fn find_vmlinuz(boot: &Path) -> Result<(PathBuf, String)> {
    for entry in fs::read_dir(boot).with_context(|| format!("failed to list {}", boot.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((path.clone(), release.to_owned()));
        }
    }
    bail!("no vmlinuz-* in {}", boot.display())
}

/// Decompressors by the magic at the start of the bzImage's payload, as the kernel's
/// `scripts/extract-vmlinux` knows them, and the Debian package each comes in.
const DECOMPRESSORS: [(&[u8], &[&str], &str); 7] = [
    (b"\x1f\x8b", &["gzip", "-dc"], "gzip"),
    (b"\xfd7zXZ\x00", &["xz", "-dc"], "xz-utils"),
    (b"\x28\xb5\x2f\xfd", &["zstd", "-dc"], "zstd"),
    (b"\x02\x21\x4c\x18", &["lz4", "-dc"], "lz4"),
    (b"BZh", &["bzip2", "-dc"], "bzip2"),
    (b"\x5d\x00\x00", &["xz", "-dc", "--format=lzma"], "xz-utils"),
    (b"\x89LZO", &["lzop", "-dc"], "lzop"),
];

fn le32(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("bzImage header cut short")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The ELF kernel inside an x86 bzImage. The boot protocol header (2.08+) says where the
/// compressed payload is; its last four bytes are the uncompressed size, appended by the kernel's
/// build (`size_append`), which the decompressors do not expect but which checks their output.
pub fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not an x86 bzImage (no HdrS boot header)");
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x208 {
        bail!("boot protocol {version:#x} is older than 2.08: no payload offset in the header");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + le32(image, 0x248)? as usize;
    let len = le32(image, 0x24c)? as usize;
    let payload = image
        .get(start..start + len)
        .context("payload lies outside the bzImage")?;
    if len < 8 {
        bail!("payload of {len} bytes is too short");
    }
    let (compressed, size) = payload.split_at(len - 4);
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let (_, tool, package) = DECOMPRESSORS
        .iter()
        .find(|(magic, _, _)| compressed.starts_with(magic))
        .with_context(|| format!("unknown payload compression (magic {:02x?})", &compressed[..4]))?;
    let elf = pipe_through(tool, compressed).with_context(|| {
        format!(
            "failed to decompress with {} (apt-get install {package}; scripts/bootstrap.sh installs it)",
            tool[0]
        )
    })?;
    if elf.len() != size || !elf.starts_with(b"\x7fELF") {
        bail!(
            "{} gave {} bytes{}, the image says {size}",
            tool[0],
            elf.len(),
            if elf.starts_with(b"\x7fELF") {
                ""
            } else {
                " that are not ELF"
            }
        );
    }
    Ok(elf)
}

fn pipe_through(tool: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {}", tool[0]))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    thread::scope(|s| -> Result<Vec<u8>> {
        let writer = s.spawn(move || stdin.write_all(input));
        let mut out = Vec::new();
        stdout
            .read_to_end(&mut out)
            .context("failed to read the decompressed kernel")?;
        let _ = writer.join();
        let result = child
            .wait_with_output()
            .context("failed to wait for the decompressor")?;
        if !result.status.success() {
            bail!(
                "{} failed with {}: {}",
                tool[0],
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_complete() {
        for pin in &KERNELS {
            assert_eq!(pin.sha256.len(), 64, "{}", pin.name);
            assert!(pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", pin.name);
            assert!(pin.package.starts_with(&format!("linux-image-{}.", pin.name)));
        }
    }

    #[test]
    fn a_release_sources_list_is_made_from_the_machines_entries() {
        // Debian 12's default deb822 file, and a one-line file with options and a comment.
        let deb822 = "Types: deb\n\
            # http://snapshot.example/archive/debian/20250520T000000Z\n\
            URIs: http://mirror.example/debian\n\
            Suites: bookworm bookworm-updates\n\
            Components: main\n\
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
            \n\
            Types: deb\n\
            URIs: http://mirror.example/debian-security\n\
            Suites: bookworm-security\n\
            Components: main\n\
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
            \n\
            Types: deb-src\n\
            URIs: http://mirror.example/debian\n\
            Suites: bookworm\n\
            Components: main\n\
            \n\
            Enabled: no\n\
            Types: deb\n\
            URIs: http://elsewhere.example/debian\n\
            Suites: bookworm\n\
            Components: main\n";
        let mut entries = parse_deb822(deb822);
        assert_eq!(entries.len(), 3, "{entries:?}");
        entries.extend(parse_one_line(
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib # x\n\
             deb http://m.example/debian bookworm-backports main\ndeb-src http://m.example/debian bookworm main\n",
        ));
        let list = release_sources(&entries, "bullseye").unwrap();
        assert_eq!(
            list,
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bullseye main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian-security bullseye-security main\n\
             deb [signed-by=/k.gpg] http://m.example/debian bullseye main contrib\n"
        );
        assert!(
            release_sources(&entries[1..2], "bullseye").is_err(),
            "security only"
        );
        assert!(release_sources(&[], "bullseye").is_err());
    }

    #[test]
    fn other_releases_get_apt_options_of_their_own() {
        let pin = KERNELS.iter().find(|p| p.source != Source::Machine).unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-apt-{}", std::process::id()));
        if let Ok(opts) = apt_options(pin, &dir) {
            let joined = opts.join(" ");
            for want in [
                "Dir::Etc::SourceList=",
                "Dir::Etc::SourceParts=/dev/null",
                "Dir::State::Lists=",
                "Dir::Cache=",
            ] {
                assert!(joined.contains(want), "{joined}");
            }
            assert!(
                !joined.contains("/var/lib/apt") && !joined.contains("/etc/apt"),
                "{joined}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
        let machine = KERNELS.iter().find(|p| p.source == Source::Machine).unwrap();
        assert!(apt_options(machine, &dir).unwrap().is_empty());
    }

    #[test]
    fn non_bzimages_are_refused() {
        assert!(extract_vmlinux(&[0u8; 4096]).is_err());
        assert!(extract_vmlinux(b"short").is_err());
    }

    fn compress(tool: &[&str], data: &[u8]) -> Vec<u8> {
        let mut c = Command::new(tool[0])
            .args(&tool[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(data).unwrap();
        c.wait_with_output().unwrap().stdout
    }

    /// A minimal bzImage: setup_sects 1, boot protocol 2.15, payload right after the setup, and
    /// the uncompressed size appended as the kernel's build does.
    fn bzimage(compressed: &[u8], size: usize) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        let len = compressed.len() as u32 + 4;
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        image.extend_from_slice(compressed);
        image.extend_from_slice(&(size as u32).to_le_bytes());
        image
    }

    #[test]
    fn an_lz4_legacy_payload_is_extracted() {
        // Debian 11's 5.10 (CONFIG_KERNEL_LZ4): the kernel's build runs `lz4 -l -9`, the legacy
        // frame format (magic 02 21 4c 18). Skipped without the lz4 tool, as in extract_vmlinux.
        if Command::new("lz4").arg("-V").output().is_err() {
            eprintln!("SKIP no lz4 tool (apt-get install lz4)");
            return;
        }
        let elf: Vec<u8> = b"\x7fELF"
            .iter()
            .copied()
            .chain((0..300_000u32).map(|i| (i % 251) as u8))
            .collect();
        let compressed = compress(&["lz4", "-l", "-9", "-c"], &elf);
        assert!(compressed.starts_with(b"\x02\x21\x4c\x18"));
        assert_eq!(extract_vmlinux(&bzimage(&compressed, elf.len())).unwrap(), elf);
    }

    #[test]
    fn a_gzip_payload_is_extracted_and_checked() {
        let elf = b"\x7fELF and then a kernel".to_vec();
        let compressed = compress(&["gzip", "-c"], &elf);
        let mut image = bzimage(&compressed, elf.len());
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
        // The appended size must match what comes out.
        let n = image.len();
        image[n - 4..].copy_from_slice(&7u32.to_le_bytes());
        assert!(extract_vmlinux(&image).is_err());
    }
}
