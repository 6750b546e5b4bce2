//! Teams outgoing-webhook verification: `Authorization: HMAC <base64(HMAC-SHA256(secret, body))>` checked in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Result;
use crate::inbound::{hmac_sha256, unauthorized};

/// Longest `Authorization` value considered (an HMAC-SHA256 in base64 is 44 characters).
const MAX_AUTHORIZATION_LEN: usize = 256;

/// Verifies a Teams outgoing-webhook request.
///
/// Teams signs the raw request body with HMAC-SHA256 under the security token
/// shown when the webhook was created (a base64 string; the key is its decoded
/// bytes) and sends `Authorization: HMAC <base64 digest>`. The scheme is matched
/// case-insensitively, surrounding whitespace is ignored, and the digest is
/// compared in constant time. Any failure is `ErrorKind::Unauthorized` with a
/// reason meant for logs, never for the response.
///
/// ```
/// use switchboard::teams::verify_outgoing_webhook;
/// // Secret "c2VjcmV0" is base64 of "secret"; the digest was computed with
/// // `printf '{"type":"message"}' | openssl dgst -sha256 -hmac secret -binary | base64`.
/// let body = br#"{"type":"message"}"#;
/// let auth = "HMAC jEWTK4xlc06+DrS1r4SB0TpbXoqvAKH/7tz/E7o3lpo=";
/// assert!(verify_outgoing_webhook("c2VjcmV0", auth, body).is_ok());
/// assert!(verify_outgoing_webhook("c2VjcmV0", auth, b"tampered").is_err());
/// ```
pub fn verify_outgoing_webhook(
    secret_base64: &str,
    authorization: &str,
    body: &[u8],
) -> Result<()> {
    let key = STANDARD
        .decode(secret_base64.trim())
        .map_err(|_| unauthorized("the outgoing-webhook secret is not valid base64"))?;
    if key.is_empty() {
        return Err(unauthorized("the outgoing-webhook secret is empty"));
    }
    if authorization.len() > MAX_AUTHORIZATION_LEN {
        return Err(unauthorized("the Authorization header is too long"));
    }
    let value = authorization.trim();
    let (scheme, digest) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("the Authorization header is not `HMAC <digest>`"))?;
    if !scheme.eq_ignore_ascii_case("HMAC") {
        return Err(unauthorized("the Authorization scheme is not HMAC"));
    }
    let given = STANDARD
        .decode(digest.trim())
        .map_err(|_| unauthorized("the HMAC digest is not valid base64"))?;
    let computed = hmac_sha256(&key, &[body]);
    if crate::inbound::constant_time_eq(&computed, &given) {
        Ok(())
    } else {
        Err(unauthorized("the HMAC digest does not match the body"))
    }
}

/// The `Authorization` value Teams would send for `body` (tests and tools).
pub fn outgoing_webhook_authorization(secret_base64: &str, body: &[u8]) -> Result<String> {
    let key = STANDARD
        .decode(secret_base64.trim())
        .map_err(|_| unauthorized("the outgoing-webhook secret is not valid base64"))?;
    Ok(format!(
        "HMAC {}",
        STANDARD.encode(hmac_sha256(&key, &[body]))
    ))
}
