//! Generated protobuf types and tonic services for the server ↔ dataplane
//! protocol (`proto/corral.proto`), plus conversions to the core model.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("corral.v1");
}

/// Shared-secret authentication of gRPC calls (the dataplane join token).
pub mod auth {
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::{Request, Status};

    /// Client side: adds `authorization: Bearer <token>` to every call.
    #[derive(Clone, Default)]
    pub struct BearerToken(Option<MetadataValue<Ascii>>);

    impl BearerToken {
        /// `None` sends no header. A token that is not a valid header value
        /// is an error, reported once at start-up rather than on every call.
        pub fn new(token: Option<&str>) -> Result<Self, String> {
            match token {
                None => Ok(BearerToken(None)),
                Some(t) => format!("Bearer {t}")
                    .parse()
                    .map(|v| BearerToken(Some(v)))
                    .map_err(|_| "the token must be printable ASCII".to_string()),
            }
        }
    }

    impl Interceptor for BearerToken {
        fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
            if let Some(v) = &self.0 {
                req.metadata_mut().insert("authorization", v.clone());
            }
            Ok(req)
        }
    }

    /// Server side: rejects calls without the token (when one is set).
    #[derive(Clone, Default)]
    pub struct RequireToken(Option<String>);

    impl RequireToken {
        pub fn new(token: Option<String>) -> Self {
            RequireToken(token)
        }
    }

    impl Interceptor for RequireToken {
        fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
            let Some(expected) = &self.0 else { return Ok(req) };
            let presented = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(corral_core::auth::bearer)
                .unwrap_or("");
            if corral_core::auth::constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                Ok(req)
            } else {
                Err(Status::unauthenticated("a valid join token is required"))
            }
        }
    }
}
