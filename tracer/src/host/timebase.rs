//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) → wall-clock time.

#[derive(Clone, Copy, Debug)]
pub struct Timebase {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, nanoseconds.
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Timebase {
    pub fn now() -> Timebase {
        Timebase { offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC) }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// For tests and recordings: a fixed offset.
    pub fn with_offset_ns(offset_ns: i128) -> Timebase {
        Timebase { offset_ns }
    }

    pub fn monotonic_now_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn unix_secs(&self, mono_ns: u64) -> f64 {
        (mono_ns as i128 + self.offset_ns) as f64 / 1e9
    }

    /// `HH:MM:SS.mmm` (UTC) of a kernel timestamp.
    pub fn clock(&self, mono_ns: u64) -> String {
        let ms = ((mono_ns as i128 + self.offset_ns) / 1_000_000) as u64;
        let s = ms / 1000;
        format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_format() {
        let tb = super::Timebase::with_offset_ns(0);
        assert_eq!(tb.clock(((13 * 3600 + 4 * 60 + 5) * 1000 + 67) * 1_000_000), "13:04:05.067");
        assert_eq!(tb.unix_secs(1_500_000_000), 1.5);
    }
}
