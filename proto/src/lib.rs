//! Generated code for the faultline.v1 gRPC API (see proto/faultline/v1/*.proto).

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/faultline.v1.rs"));

    /// Encoded FileDescriptorSet of faultline.v1, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/faultline_descriptor.bin"));
}
