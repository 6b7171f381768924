//! The proto <-> domain boundary: `validate` turns requests into checked domain values (every
//! refusal names the field and the allowed range), `convert` renders domain values as proto.

pub mod convert;
pub mod fields;
pub mod validate;
pub mod validate_drill;
pub mod validate_net;
pub mod validate_process;
pub mod validate_stress;
pub mod validate_sys;
pub mod validate_time;
