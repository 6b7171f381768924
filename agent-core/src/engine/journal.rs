//! The experiment journal: one file per experiment in effect, written (and fsync'd) before
//! the fault is applied and removed once it is reverted. What a killed agent leaves here is
//! what the next start resumes, or records as ended.
//!
//! An entry is the experiment in its wire form (the proto is the one stable encoding the
//! project keeps), framed so that truncation and corruption are detected:
//! `FLJ1` | length (u32 LE) | pb::Experiment | CRC-32 of the message (u32 LE).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use faultline_proto::v1 as pb;
use prost::Message as _;

const MAGIC: &[u8; 4] = b"FLJ1";
/// No experiment comes near this; a larger length field is corruption.
const MAX_ENTRY: usize = 1 << 20;

pub struct Journal {
    dir: PathBuf,
}

/// An entry that could not be read, moved aside as `<id>.corrupt`.
#[derive(Debug)]
pub struct Corrupt {
    pub path: PathBuf,
    pub why: String,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal { dir: state_dir.join("experiments") }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.exp"))
    }

    /// Writes the entry durably: a temporary file, fsync, rename, fsync of the directory.
    pub fn record(&self, e: &pb::Experiment) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.tmp", e.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(e))?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path(&e.id))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Every entry: the readable ones, and the others moved aside with the reason.
    pub fn load(&self) -> (Vec<pb::Experiment>, Vec<Corrupt>) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return (good, bad) };
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that never completed: the fault was never applied.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".exp") {
                continue;
            }
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| decode(&b)) {
                Ok(e) => good.push(e),
                Err(why) => {
                    let aside = path.with_extension("corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    bad.push(Corrupt { path: aside, why });
                }
            }
        }
        (good, bad)
    }
}

/// The request a journaled experiment is re-validated from at start.
pub fn request_of(e: &pb::Experiment) -> pb::InjectRequest {
    pb::InjectRequest {
        target: e.target.clone(),
        fault: e.fault.clone(),
        duration: e.duration,
        labels: e.labels.clone(),
    }
}

/// A journaled timestamp as wall-clock time; None when unset or out of range.
pub fn time_of(t: &Option<prost_types::Timestamp>) -> Option<std::time::SystemTime> {
    t.as_ref().and_then(|t| {
        let d = std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
        std::time::SystemTime::UNIX_EPOCH.checked_add(d)
    })
}

pub fn encode(e: &pb::Experiment) -> Vec<u8> {
    let body = e.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out
}

/// Reads one entry; never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Result<pb::Experiment, String> {
    if b.len() < 12 || &b[..4] != MAGIC {
        return Err(format!("not a journal entry ({} bytes, no FLJ1 header)", b.len()));
    }
    let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    if len > MAX_ENTRY || b.len() != 12 + len {
        return Err(format!("truncated or padded: {} bytes for a {len}-byte entry", b.len()));
    }
    let body = &b[8..8 + len];
    let want = u32::from_le_bytes([b[8 + len], b[9 + len], b[10 + len], b[11 + len]]);
    if crc32(body) != want {
        return Err("checksum mismatch".into());
    }
    let e = pb::Experiment::decode(body).map_err(|e| format!("undecodable: {e}"))?;
    if e.id.is_empty() || !e.id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("bad experiment id {:?}", e.id));
    }
    Ok(e)
}

/// CRC-32 (IEEE), bitwise: entries are small and written once per experiment.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn exp(id: &str) -> pb::Experiment {
        pb::Experiment { id: id.into(), reason: "r".into(), ..Default::default() }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let e = exp("0a1b2c3d4e5f");
        let b = encode(&e);
        assert_eq!(decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x40;
            assert!(decode(&x).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn load_moves_corrupt_entries_aside_and_keeps_the_rest() {
        let d = TempDir::new();
        let j = Journal::new(d.path());
        j.record(&exp("aaaa")).unwrap();
        j.record(&exp("bbbb")).unwrap();
        let bad = j.path("bbbb");
        let len = std::fs::metadata(&bad).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&bad).unwrap().set_len(len - 3).unwrap();
        std::fs::write(j.dir.join(".cccc.tmp"), b"half").unwrap();
        let (good, corrupt) = j.load();
        assert_eq!(good.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["aaaa"]);
        assert_eq!(corrupt.len(), 1);
        assert!(corrupt[0].path.ends_with("bbbb.corrupt") && corrupt[0].why.contains("truncated"));
        assert!(!j.dir.join(".cccc.tmp").exists());
        j.remove("aaaa");
        assert_eq!(j.load().0.len(), 0);
    }
}
