//! The journal reader. The input is read twice: as a whole entry (the frame checks:
//! magic, kind, version, length, CRC), and as the body of an entry framed with the right
//! header and CRC, so that the message decoding, the id check and the restart path (re-validation, timestamps)
//! are reached by most inputs rather than by the few that pass a random CRC.
#![no_main]

use faultline_core::engine::journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for entry in [data, faultline_fuzz::frame(data).as_slice()] {
        match journal::decode(entry) {
            Ok(e) => faultline_fuzz::recover(&e),
            Err(why) => {
                std::hint::black_box(why);
            }
        }
    }
});
