//! Secrets at rest: a keyring of host-supplied keys sealing connection secrets with XChaCha20-Poly1305 (random nonce per value, key id stored beside it).
//!
//! Every store seals connection secrets with the [`Keyring`] it was opened with
//! and refuses to write one without a key. A sealed value reads
//! `v1.<key id>.<base64(nonce ‖ ciphertext)>`; the associated data binds it to
//! its connection and secret name, so a value copied to another row does not
//! open. Keys rotate by adding the new key as primary and keeping the old ones
//! for opening ([`Keyring::with_old_key`]); [`Keyring::needs_reseal`] tells which
//! values to re-encrypt.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::tenant::Secrets;
use crate::{Error, ErrorKind, Result};

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The host's encryption keys for secrets at rest: one primary key that seals,
/// and older keys that still open values sealed before a rotation.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn valid_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::config(
            "a key id must be 1-64 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(())
}

fn secret_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Secret, message)
}

impl Keyring {
    /// A keyring whose primary key is `key` (32 bytes), known as `key_id`.
    pub fn new(key_id: impl Into<String>, key: [u8; 32]) -> Result<Keyring> {
        let id = key_id.into();
        valid_id(&id)?;
        Ok(Keyring {
            keys: vec![Key {
                id,
                cipher: XChaCha20Poly1305::new(&key.into()),
            }],
        })
    }

    /// A keyring from a base64-encoded 32-byte key (e.g. from an environment variable).
    pub fn from_base64(key_id: impl Into<String>, key: &SecretString) -> Result<Keyring> {
        let bytes = STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| Error::config("the encryption key is not valid base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::config("the encryption key must be 32 bytes"))?;
        Keyring::new(key_id, key)
    }

    /// A keyring with a fresh random key: for tests and throwaway stores only
    /// (values sealed with it cannot be opened after the process ends).
    pub fn generate(key_id: impl Into<String>) -> Result<Keyring> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Keyring::new(key_id, key)
    }

    /// Adds an older key that still opens values sealed with it (key rotation).
    pub fn with_old_key(mut self, key_id: impl Into<String>, key: [u8; 32]) -> Result<Keyring> {
        let id = key_id.into();
        valid_id(&id)?;
        if self.keys.iter().any(|k| k.id == id) {
            return Err(Error::config(format!("two keys are named {id:?}")));
        }
        self.keys.push(Key {
            id,
            cipher: XChaCha20Poly1305::new(&key.into()),
        });
        Ok(self)
    }

    /// The id of the key that seals new values.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals one secret; `context` (e.g. `slack:T123/access_token`) is bound as
    /// associated data and must be given again to open it.
    pub fn seal(&self, context: &str, secret: &SecretString) -> Result<String> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| secret_error("sealing a secret failed"))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{VERSION}.{}.{}", key.id, STANDARD.encode(blob)))
    }

    /// Opens a value made by [`Keyring::seal`] with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<SecretString> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(version), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(secret_error("a stored secret is not in the sealed format"));
        };
        if version != VERSION {
            return Err(secret_error(format!(
                "a stored secret uses format {version:?}, which this version cannot open"
            )));
        }
        let key = self.keys.iter().find(|k| k.id == kid).ok_or_else(|| {
            secret_error(format!(
                "a stored secret was sealed with key {kid:?}, which is not in the keyring"
            ))
        })?;
        let blob = STANDARD
            .decode(body)
            .map_err(|_| secret_error("a stored secret is corrupted (bad base64)"))?;
        if blob.len() < NONCE_LEN {
            return Err(secret_error("a stored secret is corrupted (too short)"));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                secret_error(format!(
                    "a stored secret does not open with key {kid:?}: wrong key, or the value was altered"
                ))
            })?;
        let text = String::from_utf8(plain)
            .map_err(|_| secret_error("a stored secret is not UTF-8 after opening"))?;
        Ok(SecretString::from(text))
    }

    /// True when `sealed` was sealed with a key other than the primary one.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.primary_id())
    }

    /// Seals every secret of a connection into one JSON text (name → sealed
    /// value), binding each to `context/name`.
    pub fn seal_secrets(&self, context: &str, secrets: &Secrets) -> Result<String> {
        let mut map = serde_json::Map::new();
        for (name, value) in secrets.iter() {
            let sealed = self.seal(&format!("{context}/{name}"), value)?;
            map.insert(name.to_owned(), serde_json::Value::String(sealed));
        }
        Ok(serde_json::Value::Object(map).to_string())
    }

    /// Opens what [`Keyring::seal_secrets`] made.
    pub fn open_secrets(&self, context: &str, sealed: &str) -> Result<Secrets> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(sealed)
            .map_err(|_| secret_error("stored secrets are corrupted (not a JSON object)"))?;
        let mut secrets = Secrets::new();
        for (name, value) in map {
            let Some(text) = value.as_str() else {
                return Err(secret_error("stored secrets are corrupted (not a string)"));
            };
            secrets.insert(name.clone(), self.open(&format!("{context}/{name}"), text)?);
        }
        Ok(secrets)
    }
}

/// Seals `secrets` with `keyring`, refusing to store secrets without a key.
/// Empty secrets need no key. Shared by every store.
pub fn seal_or_refuse(
    keyring: Option<&Keyring>,
    context: &str,
    secrets: &Secrets,
) -> Result<String> {
    match keyring {
        _ if secrets.is_empty() => Ok("{}".to_owned()),
        Some(k) => k.seal_secrets(context, secrets),
        None => Err(secret_error(
            "this store has no encryption key, so it refuses to write secrets; \
             open it with a Keyring (with_keyring)",
        )),
    }
}

/// Opens stored secrets with `keyring`; without a key only empty secrets open.
pub fn open_or_refuse(keyring: Option<&Keyring>, context: &str, sealed: &str) -> Result<Secrets> {
    match keyring {
        Some(k) => k.open_secrets(context, sealed),
        None if sealed.trim() == "{}" => Ok(Secrets::new()),
        None => Err(secret_error(
            "stored secrets cannot be opened: this store has no encryption key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binds_context_and_key() {
        let k = Keyring::new("k1", [7; 32]).unwrap();
        let s = k
            .seal("slack:T1/access_token", &SecretString::from("xoxb-1"))
            .unwrap();
        assert!(!s.contains("xoxb"));
        assert_eq!(
            k.open("slack:T1/access_token", &s).unwrap().expose_secret(),
            "xoxb-1"
        );
        assert_eq!(
            k.open("slack:T2/access_token", &s).unwrap_err().kind(),
            ErrorKind::Secret
        );
        let other = Keyring::new("k1", [8; 32]).unwrap();
        assert_eq!(
            other.open("slack:T1/access_token", &s).unwrap_err().kind(),
            ErrorKind::Secret
        );
        let rotated = Keyring::new("k2", [9; 32])
            .unwrap()
            .with_old_key("k1", [7; 32])
            .unwrap();
        assert_eq!(
            rotated
                .open("slack:T1/access_token", &s)
                .unwrap()
                .expose_secret(),
            "xoxb-1"
        );
        assert!(rotated.needs_reseal(&s));
        assert!(!k.needs_reseal(&s));
    }

    #[test]
    fn refuses_without_key() {
        let secrets = Secrets::new().with("access_token", SecretString::from("t"));
        assert_eq!(
            seal_or_refuse(None, "x", &secrets).unwrap_err().kind(),
            ErrorKind::Secret
        );
        assert_eq!(seal_or_refuse(None, "x", &Secrets::new()).unwrap(), "{}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let k = Keyring::new("k1", [7; 32]).unwrap();
        for bad in [
            "",
            "v1",
            "v1.k1",
            "v1.k1.!!",
            "v1.k1.AAAA",
            "v2.k1.AAAA",
            "v1.zz.AAAA",
        ] {
            assert_eq!(k.open("c", bad).unwrap_err().kind(), ErrorKind::Secret);
        }
    }
}
