//! Generated protobuf types and tonic services for the server ↔ dataplane
//! protocol (`proto/corral.proto`), plus conversions to the core model.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("corral.v1");
}
