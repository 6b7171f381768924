//! Request validation, proto to domain: any bytes that decode as an InjectRequest are
//! validated; a panic is a bug. A request that passes must also survive the journal round
//! trip (converted, framed, read back and validated again to the same spec).
#![no_main]

use faultline_core::wire::validate;
use faultline_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::InjectRequest::decode(data) else { return };
    match validate::inject(&req, &validate::Limits::default()) {
        Ok(spec) => faultline_fuzz::journal_round_trip(&spec),
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }
});
