//! The kernels the VM tests boot: Debian's cloud kernels, pinned by package, version and sha256,
//! fetched with `apt-get download`, unpacked with `dpkg-deb`, and cached as an uncompressed
//! `vmlinux` (qemu boots it through its PVH entry point, about a second faster under TCG than the
//! bzImage, which would decompress itself in emulation).

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
}

/// Debian 12's cloud kernels: 6.1 (bookworm's own) and 6.12 (its backport). Both are built with
/// BTF, kprobes and fentry; Debian drops superseded versions from the archive, see [`fetch`].
pub const KERNELS: [Pin; 2] = [
    Pin {
        name: "6.1",
        package: "linux-image-6.1.0-56-cloud-amd64",
        version: "6.1.192-2",
        sha256: "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
    },
    Pin {
        name: "6.12",
        package: "linux-image-6.12.117+deb12-cloud-amd64",
        version: "6.12.117-1~deb12u1",
        sha256: "5195b288dec79e2981d6b84457f38b7ce7310a2d702930ec7d07209c7f78ce37",
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
pub fn prepare(pin: &'static Pin, cache: &Path) -> Result<Kernel> {
    let dir = cache.join(format!("{}_{}", pin.package, pin.version));
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
        let deb = fetch(pin, &scratch)?;
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

/// `apt-get download`s the pinned .deb into `dir` and checks its sha256.
fn fetch(pin: &Pin, dir: &Path) -> Result<PathBuf> {
    let spec = format!("{}={}", pin.package, pin.version);
    let download = || {
        Command::new("apt-get")
            .current_dir(dir)
            // apt drops to the _apt user to download, which cannot write into a root-owned dir.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download", &spec])
            .stdin(Stdio::null())
            .output()
            .context(
                "failed to run apt-get (vm-test fetches Debian's kernel packages with it: run it on Debian)",
            )
    };
    let mut out = download()?;
    if !out.status.success() && crate::sys::is_root() {
        // A fresh machine's package lists may predate the pin.
        eprintln!("vm-test: {spec} not in the package lists; running apt-get update");
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status();
        out = download()?;
    }
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("nothing");
        bail!(
            "the pinned kernel package {spec} is not served by this machine's apt sources any more \
             (apt-get download said: {said}).\n\
             Debian drops superseded kernels from its archive. To move the pin, in xtask/src/vm/kernel.rs \
             (KERNELS) put the current package, version and sha256:\n  \
             apt-get update && apt-cache search --names-only '^linux-image-{name}[.+-].*cloud-amd64$'\n  \
             apt-get -o APT::Sandbox::User=root download PACKAGE=VERSION && sha256sum PACKAGE_*.deb\n\
             (The old file stays on https://snapshot.debian.org/ if you need exactly that kernel.)",
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
             (apt-cache policy {}) before updating the pin.",
            deb.display(),
            pin.sha256,
            pin.package
        );
    }
    Ok(deb)
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
    fn non_bzimages_are_refused() {
        assert!(extract_vmlinux(&[0u8; 4096]).is_err());
        assert!(extract_vmlinux(b"short").is_err());
    }

    #[test]
    fn a_gzip_payload_is_extracted_and_checked() {
        let elf = b"\x7fELF and then a kernel".to_vec();
        let mut gz = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        gz.stdin.take().unwrap().write_all(&elf).unwrap();
        let compressed = gz.wait_with_output().unwrap().stdout;
        // A minimal bzImage: setup_sects 1, boot protocol 2.15, payload right after the setup.
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        let len = compressed.len() as u32 + 4;
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        image.extend_from_slice(&compressed);
        image.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
        // The appended size must match what comes out.
        let n = image.len();
        image[n - 4..].copy_from_slice(&7u32.to_le_bytes());
        assert!(extract_vmlinux(&image).is_err());
    }
}
