//! The stress worker process (`faultline __stress-worker KIND INDEX DEADLINE_NS ...`): it runs
//! inside the target's cgroups, reports through the shared page, and exits on its own at the
//! deadline (CLOCK_MONOTONIC), so a stalled agent cannot make it overstay.

use std::{
    hint::black_box, num::NonZeroUsize, os::unix::fs::FileExt as _, sync::atomic::Ordering,
    time::Duration,
};

use nix::{
    fcntl::{FallocateFlags, PosixFadviseAdvice, fallocate, posix_fadvise},
    sys::{
        mman::{MapFlags, ProtFlags, mmap_anonymous},
        statvfs::statvfs,
        time::TimeSpec,
    },
    time::{ClockId, ClockNanosleepFlags, clock_nanosleep},
};

use super::shared::Shared;
use crate::engine::driver::monotonic_ns;

/// One CPU duty cycle: short enough that the load looks even to a 1 s sampler.
const PERIOD: Duration = Duration::from_millis(20);

fn sleep_until(mono_ns: u64) {
    let ts = TimeSpec::new((mono_ns / 1_000_000_000) as _, (mono_ns % 1_000_000_000) as _);
    // Absolute sleep on CLOCK_MONOTONIC (EINTR just returns early).
    let _ = clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::TIMER_ABSTIME, &ts);
}

fn hold_until(deadline: u64) {
    while monotonic_ns() < deadline {
        sleep_until(deadline);
    }
}

fn cpu(shared: &Shared, deadline: u64) {
    let period = PERIOD.as_nanos() as u64;
    let mut x = 1u64;
    loop {
        let start = monotonic_ns();
        if start >= deadline {
            return;
        }
        let busy_until = start + (shared.duty() * period as f64) as u64;
        while monotonic_ns() < busy_until {
            for _ in 0..1000 {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        sleep_until((start + period).min(deadline));
    }
}

fn memory(shared: &Shared, index: usize, deadline: u64, bytes: u64, ramp_ns: u64) -> i32 {
    let len = bytes as usize;
    // mmap(2) refuses a zero length with EINVAL.
    let Some(size) = NonZeroUsize::new(len) else { return libc::EINVAL };
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks, so it
    // overlaps nothing of ours; only this function touches it, and it is never unmapped.
    let p = match unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    } {
        Ok(p) => p,
        Err(e) => return e as i32,
    };
    let page = 4096usize;
    let pages = len.div_ceil(page);
    let slot = shared.slot(index);
    let start = monotonic_ns();
    // Pages are touched in 64 steps over the ramp (or all at once).
    const STEPS: usize = 64;
    for step in 0..STEPS {
        let from = pages * step / STEPS;
        let to = pages * (step + 1) / STEPS;
        for i in from..to {
            // SAFETY: i < pages, so i * page < len: inside the mapping, which is readable and
            // writable and aliased by no reference. A write makes the page resident.
            unsafe { p.cast::<u8>().add(i * page).write_volatile(1) };
        }
        slot.resident.store((to * page).min(len) as u64, Ordering::Relaxed);
        if ramp_ns > 0 {
            sleep_until((start + ramp_ns * (step as u64 + 1) / STEPS as u64).min(deadline));
        }
        if monotonic_ns() >= deadline {
            return 0;
        }
    }
    slot.ready.store(1, Ordering::Relaxed);
    hold_until(deadline);
    0
}

/// Bytes to take so that df's used share, used / (used + available), reaches `percent`.
pub(crate) fn fill_target(dir: &str, percent: f64) -> std::io::Result<u64> {
    let st = statvfs(dir)?;
    let frsize = st.fragment_size() as u64;
    let used = (st.blocks() as u64 - st.blocks_free() as u64) * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    let want = ((used + avail) as f64 * percent / 100.0).ceil() as u64;
    // One more block so df's rounding lands at or above the ask.
    Ok(want.saturating_sub(used).saturating_add(frsize).min(avail))
}

fn open_unnamed(dir: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    {
        Ok(f) => Ok(f),
        // No O_TMPFILE on this filesystem: a named file, unlinked at once.
        Err(_) => {
            let path = format!("{dir}/.faultline-fill-{}", std::process::id());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

fn fill(shared: &Shared, index: usize, deadline: u64, dir: &str, amount: &str) -> i32 {
    let bytes = match amount.strip_prefix("pct:") {
        Some(p) => match p.parse::<f64>().map(|p| fill_target(dir, p)) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return e.raw_os_error().unwrap_or(libc::EIO),
            Err(_) => return libc::EINVAL,
        },
        None => amount.parse::<u64>().unwrap_or(0),
    };
    let f = match open_unnamed(dir) {
        Ok(f) => f,
        Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
    };
    let slot = shared.slot(index);
    // In 64 MiB steps, so progress shows and a full disk stops at what fits.
    const STEP: u64 = 64 << 20;
    let mut done = 0u64;
    while done < bytes {
        let n = STEP.min(bytes - done);
        if let Err(e) = fallocate(&f, FallocateFlags::empty(), done as i64, n as i64) {
            let e = e as i32;
            if e != libc::ENOSPC || done == 0 {
                slot.error.store(e as u64, Ordering::Relaxed);
            }
            break;
        }
        done += n;
        slot.filled.store(done, Ordering::Relaxed);
        if monotonic_ns() >= deadline {
            return 0;
        }
    }
    slot.ready.store(1, Ordering::Relaxed);
    hold_until(deadline);
    drop(f);
    0
}

/// A block-aligned buffer (O_DIRECT needs the memory aligned too): `len` bytes from the
/// first 4 KiB boundary of a vector one alignment longer.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
}

impl Aligned {
    const ALIGN: usize = 4096;

    fn new(len: usize) -> Option<Aligned> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.checked_add(Self::ALIGN)?).ok()?;
        // A non-zero pattern so nothing compresses it away.
        buf.resize(len + Self::ALIGN, 0xa5);
        let at = (Self::ALIGN - buf.as_ptr() as usize % Self::ALIGN) % Self::ALIGN;
        Some(Aligned { buf, at })
    }

    /// The first `len` aligned bytes.
    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.buf[self.at..self.at + len]
    }
}

/// Opens an unnamed work file, with O_DIRECT when asked and the filesystem takes it.
fn open_io(dir: &str, direct: bool) -> std::io::Result<(std::fs::File, bool)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if direct {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_DIRECT)
            .mode(0o600)
            .open(dir);
        if let Ok(f) = f {
            return Ok((f, true));
        }
    }
    open_unnamed(dir).map(|f| (f, false))
}

/// Work file region used over and over, so IO load never turns into a disk fill.
const SPAN: u64 = 16 << 20;

/// How much of the work file a worker uses, in whole blocks: at most `SPAN`. Read and mixed
/// workers write it first (reads need data), and that first pass counts against their
/// budget: so with `--bytes` it takes at most half of it (reads remain), and with `--rate`
/// about one second of it.
fn io_span(kind: &str, value: u64, block: u64, mode: &str) -> u64 {
    let prefill = mode != "write";
    let want = match kind {
        "b" if prefill => value / 2,
        "b" => value,
        "r" if value > 0 => value,
        _ => SPAN,
    };
    want.min(SPAN).div_ceil(block).max(1) * block
}

#[allow(clippy::too_many_arguments)]
fn io(
    shared: &Shared,
    index: usize,
    deadline: u64,
    dir: &str,
    mode: &str,
    block: u64,
    direct: bool,
    amount: &str,
) -> i32 {
    let slot = shared.slot(index);
    let (kind, value) = amount.split_once(':').unwrap_or(("u", "0"));
    let value: u64 = value.parse().unwrap_or(0);
    let (f, direct) = match open_io(dir, direct) {
        Ok(x) => x,
        Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
    };
    let Some(mut buf) = Aligned::new(block as usize) else { return libc::ENOMEM };
    let span = io_span(kind, value, block, mode);
    let fail = |e: i32| {
        slot.error.store(e as u64, Ordering::Relaxed);
        e
    };
    // Reads need data: read and mixed workers write the span first, as the first pass of
    // the loop below, so those bytes count against --bytes and are paced by --rate.
    let mut filling = mode != "write";
    let start = monotonic_ns();
    let (mut done, mut pos, mut turn) = (0u64, 0u64, 0u64);
    loop {
        if monotonic_ns() >= deadline {
            return 0;
        }
        if kind == "b" && done >= value {
            // All asked for is done: the worker ends, and the experiment with its last one.
            slot.ready.store(1, Ordering::Relaxed);
            return 0;
        }
        let len = if kind == "b" { block.min(value - done).div_ceil(4096) * 4096 } else { block };
        let write = filling
            || match mode {
                "read" => false,
                "mixed" => {
                    turn += 1;
                    turn % 2 == 1
                }
                _ => true,
            };
        // len <= block: the buffer holds it.
        let data = buf.get(len as usize);
        let n = match if write { f.write_at(data, pos) } else { f.read_at(data, pos) } {
            Ok(0) => return fail(libc::EIO),
            Ok(n) => n as u64,
            Err(e) => return fail(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        done += n;
        let counter = if write { &slot.written } else { &slot.read };
        counter.fetch_add(n, Ordering::Relaxed);
        pos += n;
        if pos >= span {
            pos = 0;
            filling = false;
            if !direct {
                // Through the page cache: push the writes out and drop the cache, so the
                // next pass reaches the disk again.
                let _ = f.sync_data();
                let _ = posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
            }
        }
        if kind == "r" && value > 0 {
            let due = start + (done as u128 * 1_000_000_000 / value as u128) as u64;
            if due > monotonic_ns() {
                sleep_until(due.min(deadline));
            }
        }
    }
}

/// Entry point of the hidden subcommand; the exit code is 0 or an errno.
pub fn main(args: &[String]) -> i32 {
    let shared = match Shared::inherited() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stress worker: shared page: {e}");
            return libc::EBADF;
        }
    };
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let (kind, index, deadline) = (args.first().map(String::as_str), num(1) as usize, num(2));
    match kind {
        Some("cpu") => {
            cpu(&shared, deadline);
            0
        }
        Some("mem") => memory(&shared, index, deadline, num(3), num(4)),
        Some("io") => io(
            &shared,
            index,
            deadline,
            args.get(3).map_or("/tmp", String::as_str),
            args.get(4).map_or("write", String::as_str),
            num(5).max(4096),
            num(6) == 1,
            args.get(7).map_or("u:0", String::as_str),
        ),
        Some("fill") => fill(
            &shared,
            index,
            deadline,
            args.get(3).map_or("/", String::as_str),
            args.get(4).map_or("0", String::as_str),
        ),
        _ => libc::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::{Aligned, SPAN, io_span};

    #[test]
    fn the_work_span_leaves_room_for_reads_and_is_whole_blocks() {
        const K: u64 = 1024;
        const M: u64 = 1 << 20;
        // Writes only: the bytes asked, at most SPAN.
        assert_eq!(io_span("b", 2 * M, 64 * K, "write"), 2 * M);
        assert_eq!(io_span("b", 4 * 1024 * M, 64 * K, "write"), SPAN);
        // Read and mixed: the first pass (writes) takes at most half of --bytes.
        assert_eq!(io_span("b", 2 * M, 64 * K, "read"), M);
        assert_eq!(io_span("b", 64 * M, 64 * K, "mixed"), SPAN);
        // Less than a block still gets one.
        assert_eq!(io_span("b", 8 * K, 64 * K, "read"), 64 * K);
        // --rate: about a second's worth, rounded up to blocks, at most SPAN.
        assert_eq!(io_span("r", 5 * M, 64 * K, "mixed"), 5 * M);
        assert_eq!(io_span("r", 5_000_000, 64 * K, "mixed"), 77 * 64 * K);
        assert_eq!(io_span("r", 500 * M, 64 * K, "read"), SPAN);
        // As fast as it goes: all of it.
        assert_eq!(io_span("u", 0, 64 * K, "read"), SPAN);
    }

    #[test]
    fn aligned_buffers_start_on_a_4k_boundary_and_hold_the_pattern() {
        for len in [4096, 4096 * 3, 1 << 20] {
            let mut a = Aligned::new(len).unwrap();
            let b = a.get(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % 4096, 0, "len {len}");
            assert!(b.iter().all(|&x| x == 0xa5));
        }
    }
}
