//! The store's own tests: tmpdir based, no privileges.

use super::*;
use crate::testutil::TempDir;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Note {
    id: String,
    text: String,
}

impl Record for Note {
    const KIND: &'static str = "notes";
    const VERSION: u32 = 3;
    const OLDEST: u32 = 2;
    fn key(&self) -> String {
        self.id.clone()
    }
    fn encode(&self) -> Result<Vec<u8>, String> {
        json::encode(self)
    }
    fn decode(_version: u32, b: &[u8]) -> Result<Self, String> {
        json::decode(b)
    }
}

fn note(id: &str) -> Note {
    Note { id: id.into(), text: format!("about {id}") }
}

fn ids(r: &Replay<Note>) -> Vec<&str> {
    r.records.iter().map(|n| n.id.as_str()).collect()
}

/// The files in the kind's directory, sorted.
fn files(s: &Store<Note>) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn crc_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn round_trip_replace_and_remove() {
    let d = TempDir::new();
    let s = Store::<Note>::new(d.path());
    assert!(s.replay().records.is_empty(), "no directory yet");
    s.put(&note("b")).unwrap();
    s.put(&note("a")).unwrap();
    let mut changed = note("b");
    changed.text = "replaced".into();
    s.put(&changed).unwrap();
    let r = s.replay();
    assert_eq!(ids(&r), ["a", "b"]);
    assert_eq!(r.records[1], changed);
    assert!(r.aside.is_empty());
    assert_eq!(files(&s), ["a.rec", "b.rec"], "a temporary file was left");
    s.remove("a");
    s.remove("never-written");
    assert_eq!(ids(&s.replay()), ["b"]);
    assert!(s.dir().ends_with("notes"));
}

#[test]
fn keys_that_are_not_file_names_are_refused() {
    let d = TempDir::new();
    let s = Store::<Note>::new(d.path());
    for bad in ["", "../x", "a/b", ".hidden", "a.rec"] {
        let e = s.put(&note(bad)).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn every_truncation_and_flipped_byte_is_caught() {
    let b = encode(&note("k")).unwrap();
    assert_eq!(decode::<Note>(&b).unwrap(), note("k"));
    for cut in 0..b.len() {
        assert!(decode::<Note>(&b[..cut]).is_err(), "truncated at {cut} accepted");
    }
    for i in 0..b.len() {
        for bit in 0..8 {
            let mut x = b.clone();
            x[i] ^= 1 << bit;
            assert!(decode::<Note>(&x).is_err(), "flip of bit {bit} at {i} accepted");
        }
    }
}

/// A record framed by hand, with any kind and version.
fn framed(kind: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = b"FLR1".to_vec();
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn the_frame_is_the_documented_one() {
    let payload = serde_json::to_vec(&note("k")).unwrap();
    assert_eq!(encode(&note("k")).unwrap(), framed("notes", 3, &payload));
}

#[test]
fn torn_flipped_leftover_and_foreign_files_are_moved_aside() {
    let d = TempDir::new();
    let s = Store::<Note>::new(d.path());
    for id in ["good", "torn", "flipped", "misnamed"] {
        s.put(&note(id)).unwrap();
    }
    let torn = s.dir().join("torn.rec");
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&torn).unwrap().set_len(len - 3).unwrap();
    let flipped = s.dir().join("flipped.rec");
    let mut b = std::fs::read(&flipped).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&flipped, b).unwrap();
    std::fs::rename(s.dir().join("misnamed.rec"), s.dir().join("other.rec")).unwrap();
    std::fs::write(s.dir().join(".half.1-0.tmp"), b"FLR1\x05no").unwrap();
    std::fs::write(s.dir().join("1234-5.json"), b"{}").unwrap();
    std::fs::create_dir(s.dir().join("subdir")).unwrap();

    let r = s.replay();
    assert_eq!(ids(&r), ["good"]);
    let why = |name: &str| {
        r.aside
            .iter()
            .find(|a| a.path.file_name().is_some_and(|n| n == name))
            .map(|a| a.why.clone())
            .unwrap_or_else(|| panic!("{name} not moved aside: {:?}", r.aside))
    };
    assert!(why("torn.corrupt").contains("truncated"));
    assert_eq!(why("flipped.corrupt"), "checksum mismatch");
    assert!(why("other.corrupt").contains("stored as"));
    assert!(why("half.1-0.tmp.corrupt").contains("unfinished"));
    assert!(why("1234-5.json.corrupt").contains("not a record file"));
    assert_eq!(r.aside.len(), 5);
    assert_eq!(
        files(&s),
        [
            "1234-5.json.corrupt",
            "flipped.corrupt",
            "good.rec",
            "half.1-0.tmp.corrupt",
            "other.corrupt",
            "subdir",
            "torn.corrupt"
        ]
    );
    // Once aside, not reported again.
    let again = s.replay();
    assert_eq!((ids(&again), again.aside.len()), (vec!["good"], 0));
}

#[test]
fn an_earlier_version_is_read_a_newer_one_or_another_kind_moved_aside() {
    let d = TempDir::new();
    let s = Store::<Note>::new(d.path());
    s.put(&note("now")).unwrap();
    let payload = serde_json::to_vec(&note("earlier")).unwrap();
    std::fs::write(s.dir().join("earlier.rec"), framed("notes", 2, &payload)).unwrap();
    let payload = serde_json::to_vec(&note("next")).unwrap();
    std::fs::write(s.dir().join("next.rec"), framed("notes", 4, &payload)).unwrap();
    let payload = serde_json::to_vec(&note("elsewhere")).unwrap();
    std::fs::write(s.dir().join("elsewhere.rec"), framed("qdisc", 3, &payload)).unwrap();
    std::fs::write(s.dir().join("garbled.rec"), framed("notes", 3, b"{not json")).unwrap();
    let r = s.replay();
    assert_eq!(ids(&r), ["earlier", "now"]);
    let whys: Vec<&str> = r.aside.iter().map(|a| a.why.as_str()).collect();
    assert_eq!(whys.len(), 3, "{whys:?}");
    assert!(whys[0].contains("\"qdisc\" record"), "{whys:?}");
    assert!(whys[1].starts_with("undecodable notes"), "{whys:?}");
    assert_eq!(whys[2], "format version 4; this agent reads versions 2 to 3");
    assert!(s.dir().join("next.corrupt").exists());
}

struct Collect(std::sync::Mutex<Vec<Note>>);

impl Recover for Collect {
    type Record = Note;
    fn recover(&self, records: Vec<Note>) -> BoxFuture<'_> {
        self.0.lock().unwrap().extend(records);
        Box::pin(std::future::ready(()))
    }
}

#[tokio::test]
async fn a_recoverer_gets_the_intact_records_of_its_kind() {
    let d = TempDir::new();
    let s = Store::<Note>::new(d.path());
    s.put(&note("x")).unwrap();
    std::fs::write(s.dir().join("y.rec"), b"FLR1").unwrap();
    let c = Collect(Default::default());
    let steps: [&dyn Recoverer; 1] = [&c];
    for step in steps {
        assert_eq!(step.kind(), "notes");
        step.run(d.path()).await;
    }
    assert_eq!(*c.0.lock().unwrap(), [note("x")]);
    assert!(s.dir().join("y.corrupt").exists());
}
