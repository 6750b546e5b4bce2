//! Plumbing for inbound requests: HMAC-SHA256, constant-time comparison, timestamp windows, body caps and `http` request/response types.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Error, ErrorKind, Result};

/// An inbound HTTP request with its raw body (verification needs the exact bytes).
pub type InboundRequest = http::Request<Bytes>;
/// The response an inbound handler returns.
pub type InboundResponse = http::Response<Bytes>;

/// The signature window platforms use: requests older (or newer) than this are rejected.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Default cap on inbound bodies (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Checks in constant time that HMAC-SHA256(`key`, `parts`) equals `expected`.
pub fn verify_hmac_sha256(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let computed = hmac_sha256(key, parts);
    constant_time_eq(&computed, expected)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Rejects a request timestamp more than `window` before or after `now_unix`.
pub fn check_timestamp(timestamp_unix: i64, now_unix: i64, window: Duration) -> Result<()> {
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let skew = now_unix.saturating_sub(timestamp_unix);
    if skew > window {
        return Err(unauthorized("request timestamp is too old"));
    }
    if skew < -window {
        return Err(unauthorized("request timestamp is in the future"));
    }
    Ok(())
}

/// Parses a decimal unix timestamp header value.
pub fn parse_timestamp(raw: &str) -> Result<i64> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| unauthorized("request timestamp is not a unix time"))
}

/// Rejects bodies over `limit` bytes.
pub fn check_body_size(len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!("body of {len} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(())
}

/// An `Unauthorized` error with a reason (for logs; responses never carry it).
pub fn unauthorized(reason: &str) -> Error {
    Error::new(ErrorKind::Unauthorized, reason)
}

/// The value of header `name` as text, if present and valid UTF-8.
pub fn header<'a>(request: &'a InboundRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A response with a status, a content type and a body.
pub fn response(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> InboundResponse {
    let mut r = http::Response::new(body.into());
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json_response(status: http::StatusCode, body: &serde_json::Value) -> InboundResponse {
    response(status, "application/json", body.to_string())
}

/// The response for a request that failed verification or processing: the status
/// follows the error kind and the body carries no detail.
pub fn error_response(error: &Error) -> InboundResponse {
    let status = match error.kind() {
        ErrorKind::Unauthorized => http::StatusCode::UNAUTHORIZED,
        ErrorKind::PayloadTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::InvalidInput => http::StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => http::StatusCode::NOT_FOUND,
        _ => http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    let text = status.canonical_reason().unwrap_or("error");
    response(status, "text/plain; charset=utf-8", text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hmac_sha256(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            &[b"what do ya want for nothing!"],
            &mac
        ));
    }

    #[test]
    fn window_is_two_sided_and_inclusive() {
        let w = DEFAULT_WINDOW;
        assert!(check_timestamp(1000, 1300, w).is_ok());
        assert!(check_timestamp(1000, 1301, w).is_err());
        assert!(check_timestamp(1300, 1000, w).is_ok());
        assert!(check_timestamp(1301, 1000, w).is_err());
        assert!(check_timestamp(i64::MIN, i64::MAX, w).is_err());
        assert!(check_timestamp(i64::MAX, i64::MIN, w).is_err());
    }

    #[test]
    fn body_cap() {
        assert!(check_body_size(10, 10).is_ok());
        assert_eq!(
            check_body_size(11, 10).unwrap_err().kind(),
            ErrorKind::PayloadTooLarge
        );
    }
}
