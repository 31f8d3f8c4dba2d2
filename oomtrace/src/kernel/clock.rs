//! The kernel's boot-time clock (every record's timestamp, bpf_ktime_get_boot_ns) and its
//! conversion to wall-clock time.

/// Boot-time → wall-clock conversion.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_BOOTTIME, in ns.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn now_boot_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
    }

    /// A clock that is off by `skew_ns` (a wall clock stepped since it was read), for tests.
    #[doc(hidden)]
    pub fn skewed(skew_ns: i128) -> Self {
        let mut c = Self::new();
        c.offset_ns += skew_ns;
        c
    }

    /// Unix time in ns of a boot-time timestamp.
    pub fn unix_ns(&self, boot_ns: u64) -> i64 {
        (self.offset_ns + i128::from(boot_ns)) as i64
    }
}
