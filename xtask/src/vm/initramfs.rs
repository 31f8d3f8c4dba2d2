//! The guest's root filesystem: an uncompressed `newc` cpio archive (what the kernel unpacks into
//! its rootfs; see Documentation/driver-api/early-userspace/buffer-format.rst), written here so
//! nothing but the files themselves is needed. Uncompressed because the kernel would otherwise
//! spend emulated seconds inflating it.

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{Context, Result, bail};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A newc archive being built. Paths are absolute in the guest (`/bin/sh`); parent directories
/// are added as needed.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let name = if name.is_empty() { "." } else { name };
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push('/');
            at.push_str(part);
            self.dir(&at.clone());
        }
    }

    pub fn dir(&mut self, path: &str) {
        if self.dirs.contains(path) {
            return;
        }
        self.parents(path);
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, (0, 0), &[]);
    }

    pub fn file(&mut self, path: &str, data: &[u8], executable: bool) {
        self.parents(path);
        let perm = if executable { 0o755 } else { 0o644 };
        self.entry(path, S_IFREG | perm, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parents(path);
        self.entry(path, S_IFCHR | 0o600, (major, minor), &[]);
    }

    /// Copies a host file in, refusing dynamically linked executables: the guest has no libc.
    pub fn static_binary(&mut self, path: &str, host: &Path) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("failed to read {}", host.display()))?;
        if elf_interpreter(&data)? {
            bail!(
                "{} is dynamically linked; the VM has no libc (build it for x86_64-unknown-linux-musl)",
                host.display()
            );
        }
        self.file(path, &data, true);
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Whether an x86-64 ELF executable names a program interpreter (is dynamically linked).
fn elf_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    let (phoff, phentsize, phnum) = match (u64_at(0x20), u16_at(0x36), u16_at(0x38)) {
        (Some(o), Some(s), Some(n)) => (o, s, n),
        _ => bail!("ELF header cut short"),
    };
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = elf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .context("ELF program headers cut short")?;
        if p_type == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new();
        c.file("/a/b", b"hello", false);
        let buf = c.finish();
        // /a, /a/b, TRAILER!!!
        assert_eq!(buf.windows(6).filter(|w| w == b"070701").count(), 3);
        assert_eq!(&buf[..6], b"070701");
        // The first entry is the parent directory "a", mode 040755.
        assert_eq!(&buf[14..22], b"000041ed");
        assert_eq!(&buf[110..112], b"a\0");
        assert_eq!(buf.len() % 4, 0);
        let hello = buf.windows(5).position(|w| w == b"hello").unwrap();
        assert_eq!(hello % 4, 0, "file data is 4-byte aligned");
        // 110-byte header + "TRAILER!!!\0", padded to 124.
        assert!(buf.ends_with(b"TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn this_binary_is_classified() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // Whatever it is, the answer must agree with whether it has a .interp section name.
        let has_interp = me.windows(7).any(|w| w == b".interp");
        assert_eq!(elf_interpreter(&me).unwrap(), has_interp);
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
    }
}
