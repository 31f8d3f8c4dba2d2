//! Decoding of `gfp_t` allocation masks into the kernel's own flag names.
//!
//! The OOM killer is entered from an allocation, and the `gfp_mask` of that allocation tells a lot
//! about the kill: `GFP_HIGHUSER_MOVABLE` is a page fault, `GFP_KERNEL_ACCOUNT` a memcg-charged kernel
//! allocation, `GFP_NOFS` a filesystem writing under pressure. oomtrace reads the mask as a number, but
//! the value of a `__GFP_*` bit is not ABI: bits were added, removed and renumbered between the kernels
//! we support, and above bit 22 they also depend on the kernel's configuration. A mask decoded with
//! another kernel's table gives plausible but wrong names, so the table must be the running kernel's:
//!
//! * Since v6.9, include/linux/gfp_types.h numbers the flags with an anonymous
//!   `enum { ___GFP_DMA_BIT, ___GFP_HIGHMEM_BIT, ..., ___GFP_LAST_BIT }` (commit "mm: enumerate all
//!   gfp flags", Suren Baghdasaryan; the v6.8 header still has only `#define ___GFP_DMA 0x01u`-style
//!   constants, the v6.9 header has the enum). The enumerators, including the config-dependent ones,
//!   are in the kernel's BTF: [`GfpBits::from_enum`].
//! * Older kernels have only `#define`s, which BTF does not record: [`GfpBits::for_version`] picks a
//!   built-in table by kernel version; each table names the sources it was taken from.
//!
//! [`GfpBits::decode`] names a mask the way the kernel does in its own OOM report
//! (`gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP)`, printed with `%pGg`) and in trace output
//! (`show_gfp_flags()`): both walk `__def_gfpflag_names` of include/trace/events/mmflags.h, print each
//! entry whose bits are all still set and clear those bits, then print what is left in hex. The
//! composite masks (`GFP_KERNEL` = `__GFP_RECLAIM | __GFP_IO | __GFP_FS`, ...) are rebuilt from the bit
//! table with the definitions of gfp_types.h (gfp.h before v6.0), because they changed as well:
//! `GFP_ATOMIC` lost `__GFP_ATOMIC` in v6.3, `GFP_NOWAIT` gained `__GFP_NOWARN` in v6.8, and
//! `GFP_HIGHUSER_MOVABLE` includes the KASAN skip flags where those exist.
//!
//! Known differences from the kernel's output:
//! * Flags the kernel has but leaves out of its name list (`__GFP_NOLOCKDEP` and `__GFP_NO_OBJ_EXT`
//!   before v6.15, `__GFP_ZEROTAGS` and `__GFP_SKIP_KASAN_POISON` in v5.14) are named here, after the
//!   kernel's entries, rather than printed as hex.
//! * v6.15 reordered the list (commit "tracing: gfp: Remove duplication of recording GFP flags"): the
//!   composites, `GFP_DMA`, `GFP_DMA32`, `__GFP_RECLAIM`, then every flag in bit order, where older
//!   kernels list single flags in a hand-written order. The enum carries no version, so `from_enum`
//!   uses the v6.15 order; on v6.9–v6.14 the same names come out in another order than the kernel's.
//! * Where a built-in table cannot know the configuration it assumes `CONFIG_KASAN_HW_TAGS=n` (an
//!   arm64 MTE option) and `CONFIG_LOCKDEP=n`: the KASAN skip flags stay out of `GFP_HIGHUSER_MOVABLE`,
//!   and for v6.9+ kernels whose BTF lacks the enum the bits above `__GFP_ZEROTAGS` are placed as in
//!   such a configuration.

/// Bit positions that are the same on every kernel from v5.4 to v7.2. Bit 9 was `__GFP_ATOMIC` until
/// v6.2 and is unused since; from bit 23 up the layout depends on version and configuration.
/// `__GFP_ACCOUNT` in particular is bit 22 (0x400000) in all of them.
const STABLE_BITS: [(&str, u32); 22] = [
    ("DMA", 0),
    ("HIGHMEM", 1),
    ("DMA32", 2),
    ("MOVABLE", 3),
    ("RECLAIMABLE", 4),
    ("HIGH", 5),
    ("IO", 6),
    ("FS", 7),
    ("ZERO", 8),
    ("DIRECT_RECLAIM", 10),
    ("KSWAPD_RECLAIM", 11),
    ("WRITE", 12),
    ("NOWARN", 13),
    ("RETRY_MAYFAIL", 14),
    ("NOFAIL", 15),
    ("NORETRY", 16),
    ("MEMALLOC", 17),
    ("COMP", 18),
    ("NOMEMALLOC", 19),
    ("HARDWALL", 20),
    ("THISNODE", 21),
    ("ACCOUNT", 22),
];

/// The flags of one kernel beyond [`STABLE_BITS`]: `(name, bit, config-dependent)`. A config-dependent
/// flag of a `#define` layout has a reserved bit, but the kernel defines it as 0 unless its Kconfig
/// option is set: it is named when seen, and kept out of the composite masks.
type Layout = &'static [(&'static str, u32, bool)];

/// v5.4–v5.13. include/linux/gfp.h at v5.4 (checked against v5.4.0 and v5.10.223).
const LAYOUT_5_4: Layout = &[("ATOMIC", 9, false), ("NOLOCKDEP", 23, true)];

/// v5.14–v5.17: `__GFP_ZEROTAGS` and `__GFP_SKIP_KASAN_POISON` appear, the latter unconditionally and
/// as part of `GFP_HIGHUSER_MOVABLE` (so an ordinary page fault is 0x1100cca on these kernels).
/// include/linux/gfp.h at v5.14 (checked against v5.14.0, v5.15.55 and v5.17.0).
const LAYOUT_5_14: Layout = &[
    ("ATOMIC", 9, false),
    ("ZEROTAGS", 23, false),
    ("SKIP_KASAN_POISON", 24, false),
    ("NOLOCKDEP", 25, true),
];

/// v5.18–v6.2: the KASAN flags become `CONFIG_KASAN_HW_TAGS`-only and gain `__GFP_SKIP_ZERO` and
/// `__GFP_SKIP_KASAN_UNPOISON` (the KASAN vmalloc-tagging series merged for v5.18; v5.17.0 still has the
/// previous layout). include/linux/gfp.h at v5.19 and include/linux/gfp_types.h at v6.1 (checked
/// against v5.19.0, v6.0.0, v6.1.192 and v6.2.1).
const LAYOUT_5_18: Layout = &[
    ("ATOMIC", 9, false),
    ("ZEROTAGS", 23, false),
    ("SKIP_ZERO", 24, true),
    ("SKIP_KASAN_UNPOISON", 25, true),
    ("SKIP_KASAN_POISON", 26, true),
    ("NOLOCKDEP", 27, true),
];

/// v6.3: `__GFP_ATOMIC` is gone ("mm: discard __GFP_ATOMIC"), bit 9 is unused, the rest is as in v5.18.
/// include/linux/gfp_types.h at v6.3 (checked against v6.3.8).
const LAYOUT_6_3: Layout = &[
    ("ZEROTAGS", 23, false),
    ("SKIP_ZERO", 24, true),
    ("SKIP_KASAN_UNPOISON", 25, true),
    ("SKIP_KASAN_POISON", 26, true),
    ("NOLOCKDEP", 27, true),
];

/// v6.4–v6.8: the two KASAN skip flags are merged into `__GFP_SKIP_KASAN`, which moves
/// `__GFP_NOLOCKDEP` down. include/linux/gfp_types.h at v6.4 (checked against v6.4.6 and v6.8.0).
const LAYOUT_6_4: Layout = &[
    ("ZEROTAGS", 23, false),
    ("SKIP_ZERO", 24, true),
    ("SKIP_KASAN", 25, true),
    ("NOLOCKDEP", 26, true),
];

/// v6.9: the enum, for a kernel whose BTF lacks it. Bits after `__GFP_ZEROTAGS` exist only with
/// `CONFIG_KASAN_HW_TAGS` or `CONFIG_LOCKDEP` and take the next free positions, so none is assumed.
/// include/linux/gfp_types.h at v6.9.
const LAYOUT_6_9: Layout = &[("ZEROTAGS", 23, false)];

/// v6.10 and later: the enum gains `___GFP_NO_OBJ_EXT_BIT` (`CONFIG_SLAB_OBJ_EXT`, selected by
/// `CONFIG_MEMCG`; unconditional in v7.2). include/linux/gfp_types.h at v6.12 (checked against
/// v6.12.117, v6.13.7, the BTF of a running v6.18, and v7.2.13).
const LAYOUT_6_10: Layout = &[("ZEROTAGS", 23, false), ("NO_OBJ_EXT", 24, false)];

/// Single flags of the pre-v6.15 `__def_gfpflag_names`, between `GFP_DMA32` and `__GFP_RECLAIM`
/// (include/trace/events/mmflags.h, unchanged from v5.4 to v6.14 apart from `__GFP_ATOMIC` leaving in
/// v6.3; checked against v5.4.0, v5.10.223, v6.1.192, v6.12.117 and v6.14.0).
const LEGACY_HEAD: [&str; 18] = [
    "HIGH",
    "ATOMIC",
    "IO",
    "FS",
    "NOWARN",
    "RETRY_MAYFAIL",
    "NOFAIL",
    "NORETRY",
    "COMP",
    "ZERO",
    "NOMEMALLOC",
    "MEMALLOC",
    "HARDWALL",
    "THISNODE",
    "RECLAIMABLE",
    "MOVABLE",
    "ACCOUNT",
    "WRITE",
];

/// Single flags of the pre-v6.15 list after `__GFP_RECLAIM`. The KASAN names are listed only with
/// `CONFIG_KASAN_HW_TAGS`, in this order (v5.18–v6.3: zero, poison, unpoison; v6.4+: zero, kasan).
const LEGACY_TAIL: [&str; 7] = [
    "DIRECT_RECLAIM",
    "KSWAPD_RECLAIM",
    "ZEROTAGS",
    "SKIP_ZERO",
    "SKIP_KASAN_POISON",
    "SKIP_KASAN_UNPOISON",
    "SKIP_KASAN",
];

/// One `__GFP_*` flag of one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Flag {
    /// Name without leading underscores and without the `GFP_` prefix, e.g. `"KSWAPD_RECLAIM"`.
    name: String,
    bit: u32,
    /// See [`Layout`]: named when set, never part of a composite mask.
    config_dependent: bool,
}

/// How a kernel's `__def_gfpflag_names` is built, apart from the bits themselves.
#[derive(Clone, Copy)]
struct Style {
    /// v6.15+: composites, `GFP_DMA`, `GFP_DMA32`, `__GFP_RECLAIM`, then all flags in bit order.
    bit_order: bool,
    /// v6.8+: `GFP_NOWAIT` includes `__GFP_NOWARN` ("gfp: Include __GFP_NOWARN in GFP_NOWAIT").
    nowait_nowarn: bool,
}

/// Bit positions of the gfp flags on one kernel, and the kernel's list of names to decode masks with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GfpBits {
    /// Sorted by bit.
    flags: Vec<Flag>,
    /// This kernel's `__def_gfpflag_names`: `(mask, name)` in the kernel's order.
    names: Vec<(u64, String)>,
}

impl GfpBits {
    /// From enumerator `(name, value)` pairs named `___GFP_<NAME>_BIT` as found in the kernel's BTF
    /// (v6.9+). Other enumerators, `___GFP_UNUSED_BIT` and `___GFP_LAST_BIT` are ignored. `None` if a
    /// flag every supported kernel has is missing, or if the values are not a valid bit table.
    pub fn from_enum<'a>(values: impl IntoIterator<Item = (&'a str, u64)>) -> Option<Self> {
        let mut flags: Vec<Flag> = Vec::new();
        for (enumerator, value) in values {
            let Some(name) = enumerator
                .strip_prefix("___GFP_")
                .and_then(|n| n.strip_suffix("_BIT"))
            else {
                continue;
            };
            if name.is_empty() || name == "UNUSED" || name == "LAST" {
                continue;
            }
            let bit = u32::try_from(value).ok().filter(|&b| b < 64)?;
            if let Some(seen) = flags.iter().find(|f| f.name == name) {
                if seen.bit == bit {
                    continue;
                }
                return None;
            }
            if flags.iter().any(|f| f.bit == bit) {
                return None;
            }
            flags.push(Flag {
                name: name.to_owned(),
                bit,
                config_dependent: false,
            });
        }
        if !STABLE_BITS
            .iter()
            .all(|(core, _)| flags.iter().any(|f| f.name == *core))
        {
            return None;
        }
        // The enum exists since v6.9, which is past the GFP_NOWAIT change; see the module doc for the
        // order.
        Some(Self::new(
            flags,
            Style {
                bit_order: true,
                nowait_nowarn: true,
            },
        ))
    }

    /// A built-in table for kernels whose BTF has no such enum, chosen by kernel version `(major,
    /// minor)`. Versions before v5.4 get the v5.4 table, versions after the newest known one the newest.
    pub fn for_version(major: u32, minor: u32) -> Self {
        let version = (major, minor);
        let layout = if version < (5, 14) {
            LAYOUT_5_4
        } else if version < (5, 18) {
            LAYOUT_5_14
        } else if version < (6, 3) {
            LAYOUT_5_18
        } else if version < (6, 4) {
            LAYOUT_6_3
        } else if version < (6, 9) {
            LAYOUT_6_4
        } else if version < (6, 10) {
            LAYOUT_6_9
        } else {
            LAYOUT_6_10
        };
        let stable = STABLE_BITS.iter().map(|&(name, bit)| (name, bit, false));
        let flags = stable
            .chain(layout.iter().copied())
            .map(|(name, bit, config_dependent)| Flag {
                name: name.to_owned(),
                bit,
                config_dependent,
            })
            .collect();
        Self::new(
            flags,
            Style {
                bit_order: version >= (6, 15),
                nowait_nowarn: version >= (6, 8),
            },
        )
    }

    /// Decodes a mask as the kernel's `%pGg` / `show_gfp_flags()` does: the first entry of the name list
    /// whose bits are all set is taken and its bits cleared, and so on down the list (composites such
    /// as `GFP_KERNEL` first, then single flags as `__GFP_<NAME>`); bits left over come last as one hex
    /// string like `"0x1000000"`. A mask of 0 gives no names (`show_gfp_flags()` prints "none").
    pub fn decode(&self, mask: u64) -> Vec<String> {
        let mut rest = mask;
        let mut out = Vec::new();
        for (bits, name) in &self.names {
            if rest == 0 {
                break;
            }
            if rest & bits == *bits {
                out.push(name.clone());
                rest &= !bits;
            }
        }
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        out
    }

    fn new(mut flags: Vec<Flag>, style: Style) -> Self {
        flags.sort_by_key(|f| f.bit);
        let find = |name: &str| flags.iter().find(|f| f.name == name);
        let bit = |name: &str| find(name).map_or(0, |f| 1u64 << f.bit);
        let live = |name: &str| {
            find(name)
                .filter(|f| !f.config_dependent)
                .map_or(0, |f| 1u64 << f.bit)
        };
        let single = |name: &str| (bit(name), format!("__GFP_{name}"));

        // The composites of include/linux/gfp_types.h (include/linux/gfp.h before v6.0).
        let reclaim = bit("DIRECT_RECLAIM") | bit("KSWAPD_RECLAIM");
        let atomic = bit("HIGH") | bit("ATOMIC") | bit("KSWAPD_RECLAIM");
        let kernel = reclaim | bit("IO") | bit("FS");
        let kernel_account = kernel | bit("ACCOUNT");
        let nowait = bit("KSWAPD_RECLAIM") | if style.nowait_nowarn { bit("NOWARN") } else { 0 };
        let noio = reclaim;
        let nofs = reclaim | bit("IO");
        let user = reclaim | bit("IO") | bit("FS") | bit("HARDWALL");
        let highuser = user | bit("HIGHMEM");
        // Whichever KASAN skip flags this kernel has: POISON in v5.14–v5.19, POISON|UNPOISON in
        // v6.0–v6.3, SKIP_KASAN since v6.4; all 0 without CONFIG_KASAN_HW_TAGS from v5.18 on.
        let highuser_movable = highuser
            | bit("MOVABLE")
            | live("SKIP_KASAN_POISON")
            | live("SKIP_KASAN_UNPOISON")
            | live("SKIP_KASAN");
        let transhuge_light = (highuser_movable | bit("COMP") | bit("NOMEMALLOC") | bit("NOWARN")) & !reclaim;
        let transhuge = transhuge_light | bit("DIRECT_RECLAIM");

        let mut names: Vec<(u64, String)> = [
            (transhuge, "GFP_TRANSHUGE"),
            (transhuge_light, "GFP_TRANSHUGE_LIGHT"),
            (highuser_movable, "GFP_HIGHUSER_MOVABLE"),
            (highuser, "GFP_HIGHUSER"),
            (user, "GFP_USER"),
            (kernel_account, "GFP_KERNEL_ACCOUNT"),
            (kernel, "GFP_KERNEL"),
            (nofs, "GFP_NOFS"),
            (atomic, "GFP_ATOMIC"),
            (noio, "GFP_NOIO"),
            (nowait, "GFP_NOWAIT"),
            (bit("DMA"), "GFP_DMA"),
        ]
        .into_iter()
        .map(|(bits, name)| (bits, name.to_owned()))
        .collect();

        if style.bit_order {
            names.push((bit("DMA32"), "GFP_DMA32".to_owned()));
            names.push((reclaim, "__GFP_RECLAIM".to_owned()));
            names.extend(flags.iter().map(|f| single(&f.name)));
        } else {
            names.push(single("HIGHMEM"));
            names.push((bit("DMA32"), "GFP_DMA32".to_owned()));
            names.extend(LEGACY_HEAD.iter().map(|name| single(name)));
            names.push((reclaim, "__GFP_RECLAIM".to_owned()));
            names.extend(LEGACY_TAIL.iter().map(|name| single(name)));
            // Flags the kernel does not list (e.g. __GFP_NOLOCKDEP), unless an entry already covers
            // exactly their bit (__GFP_DMA and __GFP_DMA32 through GFP_DMA and GFP_DMA32).
            let unlisted: Vec<_> = flags
                .iter()
                .filter(|f| !names.iter().any(|(bits, _)| *bits == 1u64 << f.bit))
                .map(|f| single(&f.name))
                .collect();
            names.extend(unlisted);
        }
        // Flags this kernel does not have (e.g. __GFP_ATOMIC after v6.2) would match any mask.
        names.retain(|(bits, _)| *bits != 0);
        Self { flags, names }
    }
}

/// Parses the `(major, minor)` version out of a kernel release string, e.g. "6.18.44-fc-v669" →
/// `(6, 18)`, "6.1.0-56-cloud-amd64" → `(6, 1)`, "6.9-rc1" → `(6, 9)`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts
        .next()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?;
    let rest = parts.next()?;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    Some((major.parse().ok()?, rest[..end].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gfp enum in the BTF of the running v6.18 kernel (6.18.44-fc-v669;
    /// `bpftool btf dump file /sys/kernel/btf/vmlinux`: anonymous ENUM, 26 enumerators). Built without
    /// KASAN_HW_TAGS and LOCKDEP, with SLAB_OBJ_EXT.
    const BTF_6_18: [(&str, u64); 26] = [
        ("___GFP_DMA_BIT", 0),
        ("___GFP_HIGHMEM_BIT", 1),
        ("___GFP_DMA32_BIT", 2),
        ("___GFP_MOVABLE_BIT", 3),
        ("___GFP_RECLAIMABLE_BIT", 4),
        ("___GFP_HIGH_BIT", 5),
        ("___GFP_IO_BIT", 6),
        ("___GFP_FS_BIT", 7),
        ("___GFP_ZERO_BIT", 8),
        ("___GFP_UNUSED_BIT", 9),
        ("___GFP_DIRECT_RECLAIM_BIT", 10),
        ("___GFP_KSWAPD_RECLAIM_BIT", 11),
        ("___GFP_WRITE_BIT", 12),
        ("___GFP_NOWARN_BIT", 13),
        ("___GFP_RETRY_MAYFAIL_BIT", 14),
        ("___GFP_NOFAIL_BIT", 15),
        ("___GFP_NORETRY_BIT", 16),
        ("___GFP_MEMALLOC_BIT", 17),
        ("___GFP_COMP_BIT", 18),
        ("___GFP_NOMEMALLOC_BIT", 19),
        ("___GFP_HARDWALL_BIT", 20),
        ("___GFP_THISNODE_BIT", 21),
        ("___GFP_ACCOUNT_BIT", 22),
        ("___GFP_ZEROTAGS_BIT", 23),
        ("___GFP_NO_OBJ_EXT_BIT", 24),
        ("___GFP_LAST_BIT", 25),
    ];

    /// The `__print_flags` table of the same kernel, read off the print_fmt of
    /// /sys/kernel/tracing/events/vmscan/mm_vmscan_memcg_reclaim_begin/format, in its order.
    const KERNEL_6_18: [(u64, &str); 38] = [
        (0x1c24ca, "GFP_TRANSHUGE"),
        (0x1c20ca, "GFP_TRANSHUGE_LIGHT"),
        (0x100cca, "GFP_HIGHUSER_MOVABLE"),
        (0x100cc2, "GFP_HIGHUSER"),
        (0x100cc0, "GFP_USER"),
        (0x400cc0, "GFP_KERNEL_ACCOUNT"),
        (0xcc0, "GFP_KERNEL"),
        (0xc40, "GFP_NOFS"),
        (0x820, "GFP_ATOMIC"),
        (0xc00, "GFP_NOIO"),
        (0x2800, "GFP_NOWAIT"),
        (0x1, "GFP_DMA"),
        (0x4, "GFP_DMA32"),
        (0xc00, "__GFP_RECLAIM"),
        (0x1, "__GFP_DMA"),
        (0x2, "__GFP_HIGHMEM"),
        (0x4, "__GFP_DMA32"),
        (0x8, "__GFP_MOVABLE"),
        (0x10, "__GFP_RECLAIMABLE"),
        (0x20, "__GFP_HIGH"),
        (0x40, "__GFP_IO"),
        (0x80, "__GFP_FS"),
        (0x100, "__GFP_ZERO"),
        (0x400, "__GFP_DIRECT_RECLAIM"),
        (0x800, "__GFP_KSWAPD_RECLAIM"),
        (0x1000, "__GFP_WRITE"),
        (0x2000, "__GFP_NOWARN"),
        (0x4000, "__GFP_RETRY_MAYFAIL"),
        (0x8000, "__GFP_NOFAIL"),
        (0x10000, "__GFP_NORETRY"),
        (0x20000, "__GFP_MEMALLOC"),
        (0x40000, "__GFP_COMP"),
        (0x80000, "__GFP_NOMEMALLOC"),
        (0x100000, "__GFP_HARDWALL"),
        (0x200000, "__GFP_THISNODE"),
        (0x400000, "__GFP_ACCOUNT"),
        (0x800000, "__GFP_ZEROTAGS"),
        (0x1000000, "__GFP_NO_OBJ_EXT"),
    ];

    /// v6.1's list: include/trace/events/mmflags.h and include/linux/gfp_types.h of v6.1.192 (Debian
    /// linux-headers-6.1.0-55-common) without KASAN_HW_TAGS, so GFP_HIGHUSER_MOVABLE has no KASAN bits.
    /// The last four are not in the kernel's list on such a kernel; they are named here anyway.
    const KERNEL_6_1: [(u64, &str); 40] = [
        (0x1c24ca, "GFP_TRANSHUGE"),
        (0x1c20ca, "GFP_TRANSHUGE_LIGHT"),
        (0x100cca, "GFP_HIGHUSER_MOVABLE"),
        (0x100cc2, "GFP_HIGHUSER"),
        (0x100cc0, "GFP_USER"),
        (0x400cc0, "GFP_KERNEL_ACCOUNT"),
        (0xcc0, "GFP_KERNEL"),
        (0xc40, "GFP_NOFS"),
        (0xa20, "GFP_ATOMIC"),
        (0xc00, "GFP_NOIO"),
        (0x800, "GFP_NOWAIT"),
        (0x1, "GFP_DMA"),
        (0x2, "__GFP_HIGHMEM"),
        (0x4, "GFP_DMA32"),
        (0x20, "__GFP_HIGH"),
        (0x200, "__GFP_ATOMIC"),
        (0x40, "__GFP_IO"),
        (0x80, "__GFP_FS"),
        (0x2000, "__GFP_NOWARN"),
        (0x4000, "__GFP_RETRY_MAYFAIL"),
        (0x8000, "__GFP_NOFAIL"),
        (0x10000, "__GFP_NORETRY"),
        (0x40000, "__GFP_COMP"),
        (0x100, "__GFP_ZERO"),
        (0x80000, "__GFP_NOMEMALLOC"),
        (0x20000, "__GFP_MEMALLOC"),
        (0x100000, "__GFP_HARDWALL"),
        (0x200000, "__GFP_THISNODE"),
        (0x10, "__GFP_RECLAIMABLE"),
        (0x8, "__GFP_MOVABLE"),
        (0x400000, "__GFP_ACCOUNT"),
        (0x1000, "__GFP_WRITE"),
        (0xc00, "__GFP_RECLAIM"),
        (0x400, "__GFP_DIRECT_RECLAIM"),
        (0x800, "__GFP_KSWAPD_RECLAIM"),
        (0x800000, "__GFP_ZEROTAGS"),
        (0x1000000, "__GFP_SKIP_ZERO"),
        (0x4000000, "__GFP_SKIP_KASAN_POISON"),
        (0x2000000, "__GFP_SKIP_KASAN_UNPOISON"),
        (0x8000000, "__GFP_NOLOCKDEP"),
    ];

    fn v6_18() -> GfpBits {
        GfpBits::from_enum(BTF_6_18).expect("the v6.18 enum is complete")
    }

    fn names(bits: &GfpBits) -> Vec<(u64, &str)> {
        bits.names
            .iter()
            .map(|(mask, name)| (*mask, name.as_str()))
            .collect()
    }

    #[track_caller]
    fn check(bits: &GfpBits, mask: u64, expected: &[&str]) {
        assert_eq!(bits.decode(mask), expected, "mask {mask:#x}");
    }

    #[test]
    fn enum_of_6_18_gives_the_kernels_own_table() {
        assert_eq!(names(&v6_18()), KERNEL_6_18);
        // The table for v6.10+ kernels without the enum in BTF is the same one.
        assert_eq!(GfpBits::for_version(6, 18), v6_18());
    }

    #[test]
    fn decodes_6_18_masks() {
        let bits = v6_18();
        check(&bits, 0xcc0, &["GFP_KERNEL"]);
        check(&bits, 0x100cca, &["GFP_HIGHUSER_MOVABLE"]);
        check(&bits, 0x140cca, &["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"]);
        check(&bits, 0x400cc0, &["GFP_KERNEL_ACCOUNT"]);
        check(&bits, 0x1c24ca, &["GFP_TRANSHUGE"]);
        check(&bits, 0x1c20ca, &["GFP_TRANSHUGE_LIGHT"]);
        check(&bits, 0x820, &["GFP_ATOMIC"]);
        check(&bits, 0x2800, &["GFP_NOWAIT"]);
        check(&bits, 0xc00, &["GFP_NOIO"]);
        // Single flags come in bit order since v6.15.
        check(&bits, 0x40dc0, &["GFP_KERNEL", "__GFP_ZERO", "__GFP_COMP"]);
        check(&bits, 0x6, &["GFP_DMA32", "__GFP_HIGHMEM"]);
        check(&bits, 0x1000cc0, &["GFP_KERNEL", "__GFP_NO_OBJ_EXT"]);
    }

    #[test]
    fn decodes_6_1_masks() {
        let bits = GfpBits::for_version(6, 1);
        assert_eq!(names(&bits), KERNEL_6_1);
        check(&bits, 0xcc0, &["GFP_KERNEL"]);
        check(&bits, 0x100cca, &["GFP_HIGHUSER_MOVABLE"]);
        check(&bits, 0x140cca, &["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"]);
        // __GFP_ACCOUNT is 0x400000 and __GFP_COMP 0x40000 in v6.1 as in v6.18.
        check(&bits, 0x440cc0, &["GFP_KERNEL_ACCOUNT", "__GFP_COMP"]);
        // GFP_ATOMIC still has __GFP_ATOMIC (0x200), GFP_NOWAIT no __GFP_NOWARN yet.
        check(&bits, 0xa20, &["GFP_ATOMIC"]);
        check(&bits, 0x820, &["GFP_NOWAIT", "__GFP_HIGH"]);
        check(&bits, 0x2800, &["GFP_NOWAIT", "__GFP_NOWARN"]);
        // The hand-written pre-v6.15 order: __GFP_HIGHMEM before GFP_DMA32, __GFP_COMP before __GFP_ZERO.
        check(&bits, 0x6, &["__GFP_HIGHMEM", "GFP_DMA32"]);
        check(&bits, 0x40dc0, &["GFP_KERNEL", "__GFP_COMP", "__GFP_ZERO"]);
        // Bits that moved: 0x8000000 is __GFP_NOLOCKDEP here, unused on v6.18.
        check(&bits, 0x8000cc0, &["GFP_KERNEL", "__GFP_NOLOCKDEP"]);
        check(&v6_18(), 0x8000cc0, &["GFP_KERNEL", "0x8000000"]);
        check(&bits, 0x1000000, &["__GFP_SKIP_ZERO"]);
        check(&v6_18(), 0x1000000, &["__GFP_NO_OBJ_EXT"]);
        check(&v6_18(), 0xa20, &["GFP_ATOMIC", "0x200"]);
    }

    #[test]
    fn layouts_follow_the_kernel_history() {
        // v5.4: 0x800000 is __GFP_NOLOCKDEP; from v5.14 it is __GFP_ZEROTAGS.
        check(&GfpBits::for_version(5, 4), 0x800000, &["__GFP_NOLOCKDEP"]);
        check(&GfpBits::for_version(5, 14), 0x800000, &["__GFP_ZEROTAGS"]);
        // v5.14–v5.17: __GFP_SKIP_KASAN_POISON is unconditional and part of GFP_HIGHUSER_MOVABLE.
        let v5_15 = GfpBits::for_version(5, 15);
        check(&v5_15, 0x1100cca, &["GFP_HIGHUSER_MOVABLE"]);
        check(&v5_15, 0x100cca, &["GFP_HIGHUSER", "__GFP_MOVABLE"]);
        check(&v5_15, 0x2000000, &["__GFP_NOLOCKDEP"]);
        check(&GfpBits::for_version(5, 19), 0x100cca, &["GFP_HIGHUSER_MOVABLE"]);
        // __GFP_ATOMIC went away in v6.3.
        check(&GfpBits::for_version(6, 2), 0xa20, &["GFP_ATOMIC"]);
        check(&GfpBits::for_version(6, 3), 0xa20, &["GFP_ATOMIC", "0x200"]);
        // v6.4 merged the KASAN skip flags, so __GFP_NOLOCKDEP moved from 0x8000000 to 0x4000000.
        check(
            &GfpBits::for_version(6, 3),
            0x4000000,
            &["__GFP_SKIP_KASAN_POISON"],
        );
        check(&GfpBits::for_version(6, 4), 0x4000000, &["__GFP_NOLOCKDEP"]);
        // GFP_NOWAIT includes __GFP_NOWARN from v6.8 on.
        check(
            &GfpBits::for_version(6, 7),
            0x2800,
            &["GFP_NOWAIT", "__GFP_NOWARN"],
        );
        check(&GfpBits::for_version(6, 8), 0x2800, &["GFP_NOWAIT"]);
        // v6.10–v6.14 list single flags in the old order; v6.15+ in bit order.
        check(
            &GfpBits::for_version(6, 12),
            0x40dc0,
            &["GFP_KERNEL", "__GFP_COMP", "__GFP_ZERO"],
        );
        check(&GfpBits::for_version(6, 12), 0x1000000, &["__GFP_NO_OBJ_EXT"]);
        check(
            &GfpBits::for_version(6, 15),
            0x40dc0,
            &["GFP_KERNEL", "__GFP_ZERO", "__GFP_COMP"],
        );
        // Out of range versions fall back to the nearest table.
        assert_eq!(GfpBits::for_version(4, 19), GfpBits::for_version(5, 10));
        assert_eq!(GfpBits::for_version(7, 2), GfpBits::for_version(6, 18));
    }

    #[test]
    fn enum_with_kasan_and_lockdep_shifts_the_upper_bits() {
        // v7.2's enum with CONFIG_KASAN_HW_TAGS and CONFIG_LOCKDEP: SKIP_KASAN joins GFP_HIGHUSER_MOVABLE.
        let upper = [
            ("___GFP_SKIP_ZERO_BIT", 24),
            ("___GFP_SKIP_KASAN_BIT", 25),
            ("___GFP_NOLOCKDEP_BIT", 26),
            ("___GFP_NO_OBJ_EXT_BIT", 27),
            ("___GFP_LAST_BIT", 28),
        ];
        let values = BTF_6_18.iter().copied().filter(|(_, v)| *v < 24);
        let bits = GfpBits::from_enum(values.chain(upper)).unwrap();
        check(&bits, 0x2100cca, &["GFP_HIGHUSER_MOVABLE"]);
        check(&bits, 0x100cca, &["GFP_HIGHUSER", "__GFP_MOVABLE"]);
        check(&bits, 0x4000cc0, &["GFP_KERNEL", "__GFP_NOLOCKDEP"]);
        check(&bits, 0x8000000, &["__GFP_NO_OBJ_EXT"]);
        check(&bits, 0x10000000, &["0x10000000"]);
    }

    #[test]
    fn from_enum_rejects_incomplete_or_inconsistent_sets() {
        assert_eq!(GfpBits::from_enum([]), None);
        let without_account = BTF_6_18
            .iter()
            .copied()
            .filter(|(n, _)| *n != "___GFP_ACCOUNT_BIT");
        assert_eq!(GfpBits::from_enum(without_account), None);
        // Two names on one bit, one name on two bits, or a bit that does not fit.
        let clash = BTF_6_18.iter().copied().chain([("___GFP_EXTRA_BIT", 3)]);
        assert_eq!(GfpBits::from_enum(clash), None);
        let moved = BTF_6_18.iter().copied().chain([("___GFP_COMP_BIT", 30)]);
        assert_eq!(GfpBits::from_enum(moved), None);
        let huge = BTF_6_18.iter().copied().chain([("___GFP_EXTRA_BIT", 64)]);
        assert_eq!(GfpBits::from_enum(huge), None);
        // Unrelated enumerators and repeats of the same value are fine.
        let noisy = BTF_6_18
            .iter()
            .copied()
            .chain([("MM_ANONPAGES", 1), ("___GFP_COMP_BIT", 18)]);
        assert_eq!(GfpBits::from_enum(noisy), Some(v6_18()));
    }

    #[test]
    fn unknown_flags_from_btf_get_their_kernel_name() {
        let values = BTF_6_18.iter().copied().chain([("___GFP_SENSITIVE_BIT", 26)]);
        let bits = GfpBits::from_enum(values).unwrap();
        check(&bits, 0x4000cc0, &["GFP_KERNEL", "__GFP_SENSITIVE"]);
    }

    #[test]
    fn leftover_bits_are_printed_in_hex() {
        let bits = v6_18();
        check(&bits, 0x2000000, &["0x2000000"]);
        check(&bits, 0x200, &["0x200"]);
        check(&bits, 0x1_0000_0cc0, &["GFP_KERNEL", "0x100000000"]);
    }

    #[test]
    fn zero_mask_has_no_names() {
        assert!(v6_18().decode(0).is_empty());
        assert!(GfpBits::for_version(6, 1).decode(0).is_empty());
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.0-1051-aws"), Some((5, 15)));
        assert_eq!(kernel_version("6.9-rc1"), Some((6, 9)));
        assert_eq!(kernel_version("6.10.0+"), Some((6, 10)));
        assert_eq!(kernel_version("7.0\n"), Some((7, 0)));
        assert_eq!(kernel_version(""), None);
        assert_eq!(kernel_version("6"), None);
        assert_eq!(kernel_version("6.x"), None);
        assert_eq!(kernel_version("+6.1"), None);
        assert_eq!(kernel_version("unknown"), None);
    }
}
