//! Validation of stress faults: CPU, memory and disk fill.

use std::{path::PathBuf, time::Duration};

use faultline_proto::v1 as pb;

use super::fields::{non_negative, percent};
use crate::engine::{
    error::{Error, Result},
    model::{Amount, CpuStress, DiskFill, IoAmount, IoMode, IoStress, MemoryStress},
};

/// More workers than this is a typo, not a drill.
pub const MAX_WORKERS: u32 = 256;
pub const MAX_RAMP: Duration = Duration::from_secs(3600);

fn workers(n: u32, field: &str) -> Result<Option<u32>> {
    match n {
        0 => Ok(None),
        n if n <= MAX_WORKERS => Ok(Some(n)),
        n => Err(Error::invalid(field, format!("must be 0 (auto) to {MAX_WORKERS}, got {n}"))),
    }
}

pub fn cpu(c: &pb::CpuStress, field: &str) -> Result<CpuStress> {
    if !(1..=100).contains(&c.load_percent) {
        return Err(Error::invalid(
            format!("{field}.load_percent"),
            format!("must be 1 to 100, got {}", c.load_percent),
        ));
    }
    Ok(CpuStress {
        workers: workers(c.workers, &format!("{field}.workers"))?,
        load_percent: c.load_percent,
    })
}

/// Host memory in bytes (MemTotal); u64::MAX when the host does not say.
pub fn host_memory() -> u64 {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let ram = RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram());
    System::new_with_specifics(ram)
        .map(|s| s.total_memory())
        .ok()
        .filter(|&b| b > 0)
        .unwrap_or(u64::MAX)
}

pub fn memory(m: &pb::MemoryStress, field: &str) -> Result<MemoryStress> {
    let size = match m.size {
        None => {
            return Err(Error::invalid(format!("{field}.size"), "required: bytes or percent"));
        }
        Some(pb::memory_stress::Size::Bytes(b)) => {
            let host = host_memory();
            if b == 0 || b > host {
                return Err(Error::invalid(
                    format!("{field}.bytes"),
                    format!("must be > 0 and at most the host's memory ({host} bytes), got {b}"),
                ));
            }
            Amount::Bytes(b)
        }
        Some(pb::memory_stress::Size::Percent(p)) => {
            Amount::Percent(percent(p, &format!("{field}.percent"))?)
        }
    };
    let ramp = non_negative(m.ramp.as_ref(), &format!("{field}.ramp"))?;
    if ramp > MAX_RAMP {
        return Err(Error::invalid(
            format!("{field}.ramp"),
            format!("must be at most {}s", MAX_RAMP.as_secs()),
        ));
    }
    if let Some(adj) = m.oom_score_adj
        && !(-1000..=1000).contains(&adj)
    {
        return Err(Error::invalid(
            format!("{field}.oom_score_adj"),
            format!("must be -1000 to 1000, got {adj}"),
        ));
    }
    Ok(MemoryStress {
        size,
        workers: workers(m.workers, &format!("{field}.workers"))?.unwrap_or(1),
        ramp,
        oom_score_adj: m.oom_score_adj,
    })
}

pub fn disk_fill(d: &pb::DiskFill, field: &str) -> Result<DiskFill> {
    let path = PathBuf::from(&d.path);
    if !path.is_absolute() {
        return Err(Error::invalid(
            format!("{field}.path"),
            format!("must be an absolute path, got {:?}", d.path),
        ));
    }
    if !path.is_dir() {
        return Err(Error::invalid(
            format!("{field}.path"),
            format!("{:?} is not an existing directory", d.path),
        ));
    }
    let amount = match d.amount {
        None => {
            return Err(Error::invalid(format!("{field}.amount"), "required: bytes or percent"));
        }
        Some(pb::disk_fill::Amount::Bytes(0)) => {
            return Err(Error::invalid(format!("{field}.bytes"), "must be > 0"));
        }
        Some(pb::disk_fill::Amount::Bytes(b)) => Amount::Bytes(b),
        Some(pb::disk_fill::Amount::Percent(p)) => {
            Amount::Percent(percent(p, &format!("{field}.percent"))?)
        }
    };
    Ok(DiskFill { path, amount })
}

pub const MIN_BLOCK: u64 = 4096;
pub const MAX_BLOCK: u64 = 64 << 20;

pub fn io(s: &pb::IoStress, field: &str) -> Result<IoStress> {
    let block_size = match s.block_size {
        0 => 1 << 20,
        b if (MIN_BLOCK..=MAX_BLOCK).contains(&b) && b % MIN_BLOCK == 0 => b,
        b => {
            return Err(Error::invalid(
                format!("{field}.block_size"),
                format!("must be 4 KiB to 64 MiB in steps of 4 KiB (or 0: 1 MiB), got {b}"),
            ));
        }
    };
    let mode = match pb::IoMode::try_from(s.mode) {
        Ok(pb::IoMode::Unspecified | pb::IoMode::Write) => IoMode::Write,
        Ok(pb::IoMode::Read) => IoMode::Read,
        Ok(pb::IoMode::Mixed) => IoMode::Mixed,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.mode"),
                format!("must be WRITE, READ or MIXED, got {}", s.mode),
            ));
        }
    };
    let directory = if s.directory.is_empty() {
        None
    } else {
        let d = PathBuf::from(&s.directory);
        if !d.is_absolute() || !d.is_dir() {
            return Err(Error::invalid(
                format!("{field}.directory"),
                format!("{:?} is not an existing absolute directory", s.directory),
            ));
        }
        Some(d)
    };
    let amount = match s.amount {
        None => IoAmount::Unlimited,
        Some(pb::io_stress::Amount::Bytes(0)) => {
            return Err(Error::invalid(format!("{field}.bytes"), "must be > 0"));
        }
        Some(pb::io_stress::Amount::Bytes(b)) => IoAmount::Bytes(b),
        Some(pb::io_stress::Amount::RateBytesPerSecond(0)) => {
            return Err(Error::invalid(format!("{field}.rate_bytes_per_second"), "must be > 0"));
        }
        Some(pb::io_stress::Amount::RateBytesPerSecond(r)) => IoAmount::RatePerSecond(r),
    };
    Ok(IoStress {
        workers: workers(s.workers, &format!("{field}.workers"))?.unwrap_or(1),
        mode,
        block_size,
        direct: s.direct,
        directory,
        amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn cpu_bounds() {
        for load in [0, 101] {
            let c = pb::CpuStress { workers: 1, load_percent: load };
            assert_eq!(field_of(cpu(&c, "f")), "f.load_percent");
        }
        let c = pb::CpuStress { workers: MAX_WORKERS + 1, load_percent: 50 };
        assert_eq!(field_of(cpu(&c, "f")), "f.workers");
        let ok = cpu(&pb::CpuStress { workers: 0, load_percent: 100 }, "f").unwrap();
        assert_eq!(ok.workers, None);
    }

    #[test]
    fn memory_bounds() {
        let m = |size| pb::MemoryStress { size: Some(size), ..Default::default() };
        use pb::memory_stress::Size;
        assert_eq!(field_of(memory(&m(Size::Bytes(0)), "f")), "f.bytes");
        assert_eq!(field_of(memory(&m(Size::Bytes(u64::MAX)), "f")), "f.bytes");
        assert_eq!(field_of(memory(&m(Size::Percent(101.0)), "f")), "f.percent");
        let mut bad = m(Size::Bytes(1 << 20));
        bad.oom_score_adj = Some(1001);
        assert_eq!(field_of(memory(&bad, "f")), "f.oom_score_adj");
        assert_eq!(memory(&m(Size::Bytes(1 << 20)), "f").unwrap().workers, 1);
    }

    #[test]
    fn io_bounds() {
        let ok = |f: fn(&mut pb::IoStress)| {
            let mut s = pb::IoStress::default();
            f(&mut s);
            io(&s, "f")
        };
        assert_eq!(field_of(ok(|s| s.block_size = 1000)), "f.block_size");
        assert_eq!(field_of(ok(|s| s.block_size = 128 << 20)), "f.block_size");
        assert_eq!(field_of(ok(|s| s.mode = 9)), "f.mode");
        assert_eq!(field_of(ok(|s| s.directory = "/no/such".into())), "f.directory");
        assert_eq!(field_of(ok(|s| s.amount = Some(pb::io_stress::Amount::Bytes(0)))), "f.bytes");
        let d = ok(|_| {}).unwrap();
        assert_eq!((d.block_size, d.mode, d.workers), (1 << 20, IoMode::Write, 1));
    }

    #[test]
    fn disk_fill_bounds() {
        let d = |path: &str, amount| pb::DiskFill { path: path.into(), amount: Some(amount) };
        use pb::disk_fill::Amount as A;
        assert_eq!(field_of(disk_fill(&d("tmp", A::Bytes(1)), "f")), "f.path");
        assert_eq!(field_of(disk_fill(&d("/no/such/dir", A::Bytes(1)), "f")), "f.path");
        assert_eq!(field_of(disk_fill(&d("/tmp", A::Bytes(0)), "f")), "f.bytes");
        assert_eq!(field_of(disk_fill(&d("/tmp", A::Percent(150.0)), "f")), "f.percent");
        assert!(disk_fill(&d("/tmp", A::Percent(90.0)), "f").is_ok());
    }

    #[test]
    fn host_memory_is_memtotal_in_bytes() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(host_memory(), kib * 1024);
    }
}
