//! CSRF tokens bound to the host's session: an HMAC of the session id, checked in constant time on every POST.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"switchboard-admin-csrf-v1\0";

/// The token for `session_id` under `key`.
pub(crate) fn token(key: &[u8; 32], session_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, session_id))
}

fn mac(key: &[u8; 32], session_id: &str) -> Vec<u8> {
    // An HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(DOMAIN);
    m.update(session_id.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Whether `presented` is the token of `session_id`.
pub(crate) fn verify(key: &[u8; 32], session_id: &str, presented: &str) -> bool {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
        return false;
    };
    let expected = mac(key, session_id);
    !expected.is_empty() && bool::from(expected.ct_eq(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_to_session_and_key() {
        let k = [7u8; 32];
        let t = token(&k, "s1");
        assert!(verify(&k, "s1", &t));
        assert!(!verify(&k, "s2", &t));
        assert!(!verify(&[8u8; 32], "s1", &t));
        assert!(!verify(&k, "s1", ""));
        assert!(!verify(&k, "s1", "not base64!"));
    }
}
