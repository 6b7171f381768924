//! What the fuzz targets and the seed generator share: the journal's framing, written here
//! independently of the agent's (decode is what is under test), and the agent's two uses of
//! a validated request that must hold for every input: the journal round trip and the
//! restart path.

use std::time::SystemTime;

use faultline_core::{
    engine::{Snapshot, journal, model::ExperimentSpec, model::State},
    wire::{convert, validate},
};
use faultline_proto::v1 as pb;

/// The kind and format version of experiment records in the agent's record store.
const KIND: &[u8] = b"experiments";
const VERSION: u32 = 1;

/// A journal entry around `body`: `FLR1` | kind length (u8) | kind | version (u32 LE) |
/// length (u32 LE) | body | CRC-32 of everything before it (u32 LE).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + KIND.len() + 17);
    out.extend_from_slice(b"FLR1");
    out.push(KIND.len() as u8);
    out.extend_from_slice(KIND);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |crc, &b| table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8))
}

pub use journal::{request_of, time_of as recovered_time};

/// What the agent does with a journal entry that decoded: re-validate it, read its times,
/// and work out what is left of it. Must not panic, whatever the entry says.
pub fn recover(e: &pb::Experiment) {
    let spec = validate::inject(&request_of(e), &validate::Limits::default());
    if let Err(err) = &spec {
        std::hint::black_box(err.to_string());
    }
    let now = SystemTime::now();
    for t in [&e.created_at, &e.started_at, &e.deadline, &e.ended_at, &e.first_hit_at] {
        std::hint::black_box(recovered_time(t));
    }
    let left = recovered_time(&e.deadline).and_then(|d| d.duration_since(now).ok());
    std::hint::black_box(left.map(|left| now.checked_add(left)));
}

/// An accepted request is journaled as the experiment the API reports (convert::experiment),
/// and read back at the next start: that must give back the same spec, or a restart would
/// drop or change a running experiment.
pub fn journal_round_trip(spec: &ExperimentSpec) {
    let now = SystemTime::now();
    let snap = Snapshot {
        id: "0123456789abcdef".into(),
        spec: spec.clone(),
        state: State::Active,
        reason: String::new(),
        resolved: None,
        backend: "fuzz".into(),
        note: String::new(),
        created_at: now,
        started_at: Some(now),
        deadline: now.checked_add(spec.duration),
        ended_at: None,
        first_hit_at: None,
        counters: Default::default(),
        lease_expires: spec.lease.and_then(|l| now.checked_add(l)),
        abort: None,
        no_hit: false,
        followed: 0,
    };
    let exp = convert::experiment(&snap);
    let entry = journal::encode(&exp);
    let back = match journal::decode(&entry) {
        Ok(back) => back,
        Err(err) => panic!("a journal entry the agent wrote does not decode: {err}\n{exp:?}"),
    };
    assert_eq!(back, exp, "journal entry changed on the way through");
    match validate::inject(&request_of(&back), &validate::Limits::default()) {
        Ok(again) => assert_eq!(&again, spec, "journaled spec re-validates to another spec"),
        Err(err) => panic!("journaled spec no longer validates: {err}\nspec: {spec:?}"),
    }
}
