//! A JSON body extractor whose every rejection is an [`ApiError`].
//!
//! Unlike axum's `Json` it does not insist on a `Content-Type` and treats an
//! empty body as `{}`, so `curl -X POST …/v1/sandboxes` just works.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// Reads the body, mapping an oversized one to `413 payload_too_large`.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        let status = rej.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_request" };
        ApiError::new(status, code, rej.body_text())
    })
}

pub fn parse<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |e: serde_json::Error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("request body: {e}"));
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
    if !value.is_object() {
        // serde would also fill a struct from an array, by position.
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "request body: must be a JSON object"));
    }
    whole_floats_to_integers(&mut value);
    serde_json::from_value(value).map_err(bad)
}

/// JSON has one number type: `5.0` is the integer 5 to JSON Schema (and to
/// most clients' encoders), but serde refuses it for an integer field. Whole
/// numbers written with a fraction become integers so both agree; anything
/// with a real fraction is left to fail as it should.
fn whole_floats_to_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                    *v = serde_json::Value::from(f as i64);
                } else if f >= 0.0 && f < u64::MAX as f64 {
                    *v = serde_json::Value::from(f as u64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_floats_to_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_floats_to_integers),
        _ => {}
    }
}

/// A query-string extractor whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        #[derive(Debug, Default, serde::Deserialize, PartialEq)]
        struct T {
            n: u32,
            x: f64,
        }
        assert_eq!(parse::<T>(br#"{"n": 1000000000.0, "x": 2.0}"#).unwrap(), T { n: 1_000_000_000, x: 2.0 });
        assert_eq!(parse::<T>(br#"{"n": 1e3, "x": 0.5}"#).unwrap(), T { n: 1000, x: 0.5 });
        assert_eq!(parse::<T>(br#"{"n": 1.5, "x": 0}"#).unwrap_err().code, "invalid_json");
        assert_eq!(parse::<T>(br#"{"n": -1.0, "x": 0}"#).unwrap_err().code, "invalid_json");
        assert_eq!(parse::<T>(b"  ").unwrap(), T::default());
        assert_eq!(parse::<T>(b"[1, 2.0]").unwrap_err().code, "invalid_json", "not filled by position");
    }
}
