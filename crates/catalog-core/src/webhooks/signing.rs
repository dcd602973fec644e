//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the secret is
//! `whsec_<base64>`, whose decoded bytes are the HMAC-SHA256 key; the signed content is
//! `<webhook-id>.<webhook-timestamp>.<body>`, and the header carries `v1,<base64 signature>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// The prefix of a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest and longest accepted key, in decoded bytes (the spec's reference libraries make
/// 24 to 64; 16 is the least that is still a real key).
const MIN_KEY: usize = 16;
const MAX_KEY: usize = 128;

/// The HMAC key of a `whsec_<base64>` secret, or what is wrong with it (never the value).
pub fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = secret.trim().strip_prefix(SECRET_PREFIX) else {
        return Err(format!(
            "the secret does not start with `{SECRET_PREFIX}` (a Standard Webhooks secret is whsec_<base64>)"
        ));
    };
    let key = STANDARD.decode(b64).map_err(|_| "the part after `whsec_` is not standard base64".to_string())?;
    if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
        return Err(format!(
            "the key is {} bytes after base64 decoding; use {MIN_KEY} to {MAX_KEY} random bytes",
            key.len()
        ));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn signature(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    // Any key length is valid for HMAC; the error arm cannot happen.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (their test vector).
    #[test]
    fn reference_vector() {
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refused_secrets() {
        assert!(key_of("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(key_of("whsec_not base64!").is_err());
        assert!(key_of("whsec_YWJj").is_err());
    }
}
