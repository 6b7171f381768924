//! The one place an engine error becomes a gRPC status: each kind keeps its own code.

use faultline_core::engine::error::Error;
use tonic::Status;

pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument { .. } => Status::invalid_argument(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::ResourceExhausted(_) => Status::resource_exhausted(msg),
        Error::PermissionDenied(_) => Status::permission_denied(msg),
        Error::Internal(_) => Status::internal(msg),
    }
}
