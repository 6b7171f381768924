//! A page shared between the agent and its stress workers (a memfd both map): the CPU duty
//! the agent's control loop sets, and what each worker reports back.

use std::{
    io,
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    sys::{
        memfd::{MFdFlags, memfd_create},
        mman::{MapFlags, ProtFlags, mmap, munmap},
    },
    unistd::ftruncate,
};

/// Workers per experiment at most (the API allows no more).
pub const MAX_WORKERS: usize = 256;
/// The fd a worker finds the page at.
pub const WORKER_FD: RawFd = 3;

#[repr(C)]
#[derive(Default)]
pub struct Slot {
    /// Bytes this worker has touched and holds.
    pub resident: AtomicU64,
    /// Bytes this worker has taken on disk.
    pub filled: AtomicU64,
    /// Bytes this worker wrote and read (IO stress).
    pub written: AtomicU64,
    pub read: AtomicU64,
    /// Set to 1 when the worker finished its set-up (all memory touched, space taken).
    pub ready: AtomicU64,
    /// A positive errno when the worker gave up.
    pub error: AtomicU64,
}

#[repr(C)]
pub struct Page {
    /// Busy share of each period for CPU workers, parts per million.
    pub duty_ppm: AtomicU64,
    pub slots: [Slot; MAX_WORKERS],
}

pub struct Totals {
    pub resident: u64,
    pub filled: u64,
    pub written: u64,
    pub read: u64,
}

pub struct Shared {
    fd: OwnedFd,
    page: NonNull<Page>,
}

// SAFETY: the mapping lives as long as Shared; every field is atomic.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

const PAGE_LEN: NonZeroUsize = match NonZeroUsize::new(size_of::<Page>()) {
    Some(n) => n,
    None => panic!("Page is not empty"),
};

fn map(fd: impl AsFd) -> io::Result<NonNull<Page>> {
    // SAFETY: a fresh shared mapping at an address the kernel picks (so it overlaps nothing of
    // ours) of a file at least size_of::<Page>() long; the memory is only ever reached through
    // atomics, so the other process writing it races with nothing.
    let p = unsafe {
        mmap(
            None,
            PAGE_LEN,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    }?;
    Ok(p.cast())
}

impl Shared {
    /// A new zeroed page (the agent's side).
    pub fn create() -> io::Result<Shared> {
        let fd = memfd_create(c"faultline-stress", MFdFlags::MFD_CLOEXEC)?;
        ftruncate(&fd, size_of::<Page>() as libc::off_t)?;
        let page = map(&fd)?;
        Ok(Shared { fd, page })
    }

    /// The page a worker inherited at WORKER_FD.
    pub fn inherited() -> io::Result<Shared> {
        // SAFETY: the agent placed the memfd at WORKER_FD before exec and nothing else in this
        // process claims that fd; owned from now on.
        let fd = unsafe { OwnedFd::from_raw_fd(WORKER_FD) };
        let page = map(&fd)?;
        Ok(Shared { fd, page })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn page(&self) -> &Page {
        // SAFETY: mapped for the life of self, aligned (page-aligned mapping) and initialized
        // (zero-filled, a valid Page); all fields are atomics, so shared references suffice.
        unsafe { self.page.as_ref() }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        &self.page().slots[i.min(MAX_WORKERS - 1)]
    }

    pub fn set_duty(&self, duty: f64) {
        let ppm = (duty.clamp(0.0, 1.0) * 1e6) as u64;
        self.page().duty_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn duty(&self) -> f64 {
        self.page().duty_ppm.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Sums of what the workers report.
    pub fn totals(&self, workers: usize) -> Totals {
        let slots = &self.page().slots[..workers.min(MAX_WORKERS)];
        let sum = |f: fn(&Slot) -> &AtomicU64| {
            slots.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<u64>()
        };
        Totals {
            resident: sum(|s| &s.resident),
            filled: sum(|s| &s.filled),
            written: sum(|s| &s.written),
            read: sum(|s| &s.read),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: mapped in create/inherited with this size; no references outlive self.
        let _ = unsafe { munmap(self.page.cast(), size_of::<Page>()) };
    }
}
