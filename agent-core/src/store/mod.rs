//! The durable record store behind every journal: what a killed agent leaves in the kernel
//! (a qdisc it replaced, a frozen cgroup, ...) or has in effect (an experiment) is written
//! here before it happens, removed when it is undone, and replayed at the next start.
//!
//! One directory per kind under the state dir, one file per record, `<key>.rec`. A record is
//! written to a temporary file, fsync'd, renamed over the old one and the directory fsync'd,
//! so a reader sees the old record or the new one, never a mix. The file is framed so that
//! truncation, corruption and a record from an unknown format version are detected:
//! `FLR1` | kind length (u8) | kind | version (u32 LE) | payload length (u32 LE) | payload |
//! CRC-32 of everything before it (u32 LE). The payload's encoding is the kind's own
//! (protobuf for experiments, JSON for the rest).
//!
//! At replay, whatever cannot be read (a torn or corrupt record, a record of a newer version,
//! a temporary file a crash left, a file of an earlier agent's format) is moved aside as
//! `<name>.corrupt` in the same directory and logged; it never stops the agent.

use std::{
    future::Future,
    io::Write as _,
    marker::PhantomData,
    path::{Path, PathBuf},
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
};

use tracing::{info, warn};

const MAGIC: &[u8; 4] = b"FLR1";
/// No record comes near this; a larger length field is corruption.
const MAX_PAYLOAD: usize = 1 << 20;
const EXT: &str = "rec";
const ASIDE: &str = "corrupt";

/// A kind of record: its directory and header name, its format version, its file name and
/// its payload encoding.
pub trait Record: Sized {
    /// The directory under the state dir, also written in each record's header.
    const KIND: &'static str;
    /// The payload's format version this agent writes.
    const VERSION: u32;
    /// The oldest version it still reads. A later release keeps reading what an earlier one
    /// wrote (a node is upgraded with faults in flight: the journals in
    /// agent-core/tests/journal-fixtures/, one directory per release, are read in a test);
    /// a record of a newer version than `VERSION` (a downgrade) is moved aside unread.
    const OLDEST: u32 = 1;
    /// The record's file name in its kind's directory: ASCII letters, digits, `-` and `_`.
    fn key(&self) -> String;
    fn encode(&self) -> Result<Vec<u8>, String>;
    /// `payload` as written at format `version` (`OLDEST..=VERSION`).
    fn decode(version: u32, payload: &[u8]) -> Result<Self, String>;
}

/// Payload helpers for kinds stored as JSON.
pub mod json {
    pub fn encode<T: serde::Serialize>(r: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(r).map_err(|e| e.to_string())
    }

    pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        serde_json::from_slice(b).map_err(|e| e.to_string())
    }
}

/// The records of one kind under a state dir.
pub struct Store<R> {
    dir: PathBuf,
    kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Store<R> {
    fn clone(&self) -> Self {
        Store { dir: self.dir.clone(), kind: PhantomData }
    }
}

impl<R> std::fmt::Debug for Store<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// A record that could not be written: the kind's directory, and the system's reason (a full
/// or read-only state directory among them).
#[derive(Debug, thiserror::Error)]
#[error("writing a record in {}: {source}", dir.display())]
pub struct PutError {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PutError {
    /// The state directory has no room left (ENOSPC, EDQUOT).
    pub fn is_full(&self) -> bool {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        matches!(self.source.kind(), StorageFull | QuotaExceeded)
    }

    /// The state directory cannot be written at all (EROFS).
    pub fn is_read_only(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::ReadOnlyFilesystem
    }
}

/// A file that could not be read, moved aside.
#[derive(Debug)]
pub struct Aside {
    pub path: PathBuf,
    pub why: String,
}

/// What a replay found.
#[derive(Debug)]
pub struct Replay<R> {
    pub records: Vec<R>,
    pub aside: Vec<Aside>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl<R: Record> Store<R> {
    pub fn new(state_dir: &Path) -> Self {
        Store { dir: state_dir.join(R::KIND), kind: PhantomData }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{EXT}"))
    }

    /// Writes `r` durably, replacing the record of the same key: a temporary file, fsync,
    /// rename, fsync of the directory.
    pub fn put(&self, r: &R) -> Result<(), PutError> {
        self.write(r).map_err(|source| PutError { dir: self.dir.clone(), source })
    }

    fn write(&self, r: &R) -> std::io::Result<()> {
        let key = r.key();
        if !valid_key(&key) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("record key {key:?} is not a file name"),
            ));
        }
        let bytes = encode(r).map_err(std::io::Error::other)?;
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir)?;
            if let Some(parent) = self.dir.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        // Unique, so that two writers of one key never share a temporary file.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{key}.{}-{n}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, self.path(&key))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Removes the record of `key`, if any. Not followed by a directory fsync: a removal a
    /// power cut loses makes the next start undo again what is already undone.
    pub fn remove(&self, key: &str) {
        match std::fs::remove_file(self.path(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(kind = R::KIND, key, error = %e, "removing a journal entry"),
        }
    }

    /// Every record of the kind, in key order; the files that cannot be read are moved aside
    /// and logged.
    pub fn replay(&self) -> Replay<R> {
        let mut out = Replay { records: Vec::new(), aside: Vec::new() };
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return out };
        let mut paths: Vec<PathBuf> = dir
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                self.put_aside(&mut out, &path, "file name is not UTF-8".into());
                continue;
            };
            if name.ends_with(&format!(".{ASIDE}")) {
                continue;
            }
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write that never completed, so the change it guarded was never made.
                self.put_aside(&mut out, &path, "an unfinished write".into());
                continue;
            }
            let Some(stem) = name.strip_suffix(&format!(".{EXT}")) else {
                self.put_aside(&mut out, &path, "not a record file (an earlier agent's?)".into());
                continue;
            };
            let read =
                std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| decode::<R>(&b));
            match read {
                Ok(r) if r.key() == stem => out.records.push(r),
                Ok(r) => {
                    let why = format!("the record of {:?} stored as {stem:?}", r.key());
                    self.put_aside(&mut out, &path, why);
                }
                Err(why) => self.put_aside(&mut out, &path, why),
            }
        }
        if !out.aside.is_empty()
            && let Ok(d) = std::fs::File::open(&self.dir)
        {
            let _ = d.sync_all();
        }
        out
    }

    fn put_aside(&self, out: &mut Replay<R>, path: &Path, why: String) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let base = name.trim_start_matches('.');
        let base = base.strip_suffix(&format!(".{EXT}")).unwrap_or(base);
        let aside = self.dir.join(format!("{base}.{ASIDE}"));
        if let Err(e) = std::fs::rename(path, &aside) {
            warn!(kind = R::KIND, path = %path.display(), error = %e, "could not move a journal entry aside");
        }
        warn!(kind = R::KIND, path = %aside.display(), why = %why, "unreadable journal entry, moved aside");
        out.aside.push(Aside { path: aside, why });
    }
}

/// `r` framed as a record file.
pub fn encode<R: Record>(r: &R) -> Result<Vec<u8>, String> {
    let payload = r.encode()?;
    let kind = R::KIND.as_bytes();
    if kind.len() > usize::from(u8::MAX) || payload.len() > MAX_PAYLOAD {
        return Err(format!("a {} record of {} bytes is too large", R::KIND, payload.len()));
    }
    let mut out = Vec::with_capacity(payload.len() + kind.len() + 17);
    out.extend_from_slice(MAGIC);
    out.push(kind.len() as u8);
    out.extend_from_slice(kind);
    out.extend_from_slice(&R::VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads one record file; never panics, whatever the bytes.
pub fn decode<R: Record>(b: &[u8]) -> Result<R, String> {
    if b.len() < 5 || &b[..4] != MAGIC {
        return Err(format!("not a record ({} bytes, no FLR1 header)", b.len()));
    }
    let kind_len = usize::from(b[4]);
    let header = 5 + kind_len + 8;
    if b.len() < header + 4 {
        return Err(format!("truncated: {} bytes, shorter than its header", b.len()));
    }
    let version = u32_at(b, 5 + kind_len);
    let len = u32_at(b, 9 + kind_len) as usize;
    if len > MAX_PAYLOAD || b.len() != header + len + 4 {
        return Err(format!("truncated or padded: {} bytes for a {len}-byte record", b.len()));
    }
    if crc32(&b[..header + len]) != u32_at(b, header + len) {
        return Err("checksum mismatch".into());
    }
    let kind = &b[5..5 + kind_len];
    if kind != R::KIND.as_bytes() {
        return Err(format!("a {:?} record, not {}", String::from_utf8_lossy(kind), R::KIND));
    }
    if !(R::OLDEST..=R::VERSION).contains(&version) {
        let reads = match (R::OLDEST, R::VERSION) {
            (a, b) if a == b => format!("version {b}"),
            (a, b) => format!("versions {a} to {b}"),
        };
        return Err(format!("format version {version}; this agent reads {reads}"));
    }
    R::decode(version, &b[header..header + len])
        .map_err(|e| format!("undecodable {}: {e}", R::KIND))
}

/// Every record of kind `R` in the journals earlier releases wrote, kept in the repository
/// (agent-core/tests/journal-fixtures/RELEASE/KIND/KEY.rec, made by real agents killed with
/// faults in flight: see the README there), each read as a start reads it: `(release,
/// record)`, in order. Panics on one this release cannot read. Each kind's tests call it.
#[cfg(test)]
pub fn fixtures<R: Record>() -> Vec<(String, R)> {
    let sorted = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/journal-fixtures");
    let mut out = Vec::new();
    for release in sorted(&root).into_iter().filter(|p| p.is_dir()) {
        let name = release.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for file in sorted(&release.join(R::KIND)) {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let r = decode::<R>(&bytes).unwrap_or_else(|e| {
                panic!("release {name}'s {} is not read by this one: {e}", file.display())
            });
            let stem = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            assert_eq!(r.key(), stem, "{}", file.display());
            out.push((name.clone(), r));
        }
    }
    assert!(!out.is_empty(), "no {} records under {}", R::KIND, root.display());
    out
}

/// CRC-32 (IEEE), bitwise: records are small and written once per change.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A kind's step at start: what each intact record a previous agent left describes is
/// undone (or, for experiments, resumed), and the record removed when it is done with.
pub trait Recover: Send + Sync {
    type Record: Record + Send;
    fn recover(&self, records: Vec<Self::Record>) -> BoxFuture<'_>;
}

/// Any kind's recovery, so that start-up runs them all from one list.
pub trait Recoverer: Send + Sync {
    fn kind(&self) -> &'static str;
    fn run<'a>(&'a self, state_dir: &Path) -> BoxFuture<'a>;
}

impl<T: Recover> Recoverer for T {
    fn kind(&self) -> &'static str {
        T::Record::KIND
    }

    /// Replays the kind's records (moving aside what cannot be read), then recovers them.
    fn run<'a>(&'a self, state_dir: &Path) -> BoxFuture<'a> {
        let replay = Store::<T::Record>::new(state_dir).replay();
        if !replay.records.is_empty() || !replay.aside.is_empty() {
            info!(
                kind = T::Record::KIND,
                records = replay.records.len(),
                moved_aside = replay.aside.len(),
                "journal replayed"
            );
        }
        self.recover(replay.records)
    }
}

#[cfg(test)]
mod tests;
