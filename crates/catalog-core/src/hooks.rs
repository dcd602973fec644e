//! Signed notifications in (`POST /hooks/refresh/...`): checking a request body's signature
//! against a source's secret. Two schemes are accepted, so a Git host can call the hook as it
//! is:
//! - GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds, within 5 minutes of
//!   now) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>` (one or
//!   more, space-separated), the key being the base64 after `whsec_` in the secret (a secret
//!   without that prefix is used as it is).
//!
//! Comparisons are constant-time (`Mac::verify_slice`). Pure: no I/O, the clock is a parameter.

use base64::Engine as _;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// How far a Standard Webhooks timestamp may be from now (replays older than this fail).
pub const TOLERANCE_SECS: i64 = 300;

/// The signature headers of a request, as sent (missing ones `None`).
#[derive(Clone, Debug, Default)]
pub struct HookSignature {
    /// `X-Hub-Signature-256`.
    pub github: Option<String>,
    /// `webhook-id`.
    pub id: Option<String>,
    /// `webhook-timestamp`.
    pub timestamp: Option<String>,
    /// `webhook-signature`.
    pub signature: Option<String>,
}

impl HookSignature {
    /// Whether the request carries a signature of either scheme at all.
    pub fn present(&self) -> bool {
        self.github.is_some() || self.signature.is_some()
    }
}

fn mac(key: &[u8]) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(key).ok()
}

/// The shortest key accepted, in bytes: HMAC takes any key, so an empty or short secret (an
/// empty env var, a file holding only a newline) would let anyone sign.
pub const MIN_KEY_BYTES: usize = 16;

/// `key`, unless it is too short to be a secret.
fn long_enough(key: Vec<u8>) -> Result<Vec<u8>, &'static str> {
    if key.len() < MIN_KEY_BYTES {
        return Err("the secret is shorter than 16 bytes; every signature is refused until it is replaced");
    }
    Ok(key)
}

/// The Standard Webhooks key a secret stands for: the bytes after `whsec_`, base64-decoded
/// (a `whsec_` secret that is not base64 is refused), else the secret's own bytes.
fn key_of(secret: &str) -> Result<Vec<u8>, &'static str> {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "the whsec_ secret is not base64")?,
        None => secret.as_bytes().to_vec(),
    };
    long_enough(key)
}

/// Whether `body` carries a valid signature made with `secret` (`now`: Unix seconds). The
/// error says why not, for the log (never for the caller: it could probe with it).
pub fn verify(secret: &str, body: &[u8], sig: &HookSignature, now: i64) -> Result<(), &'static str> {
    if let Some(header) = &sig.github {
        let hex_sig = header.trim().strip_prefix("sha256=").ok_or("X-Hub-Signature-256 does not start with sha256=")?;
        let expected = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature-256 is not hex")?;
        let key = long_enough(secret.as_bytes().to_vec())?;
        let mut m = mac(&key).ok_or("the secret cannot be an HMAC key")?;
        m.update(body);
        if m.verify_slice(&expected).is_ok() {
            return Ok(());
        }
        if sig.signature.is_none() {
            return Err("X-Hub-Signature-256 does not match");
        }
    }
    let (Some(id), Some(ts), Some(signatures)) = (&sig.id, &sig.timestamp, &sig.signature) else {
        return Err("no signature: send X-Hub-Signature-256 or webhook-id, webhook-timestamp and webhook-signature");
    };
    let sent: i64 = ts.trim().parse().map_err(|_| "webhook-timestamp is not Unix seconds")?;
    let off = now.checked_sub(sent).map(i64::unsigned_abs);
    if off.is_none_or(|d| d > TOLERANCE_SECS.unsigned_abs()) {
        return Err("webhook-timestamp is more than 5 minutes from now");
    }
    let key = key_of(secret)?;
    for candidate in signatures.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else { continue };
        let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
        let mut m = mac(&key).ok_or("the secret cannot be an HMAC key")?;
        m.update(id.as_bytes());
        m.update(b".");
        m.update(ts.trim().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("webhook-signature does not match")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(secret: &str, body: &[u8]) -> String {
        let mut m = mac(secret.as_bytes()).unwrap();
        m.update(body);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    }

    #[test]
    fn github_signatures_verify_and_others_do_not() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let ok = HookSignature { github: Some(github("s3cret-s3cret-s3cret", body)), ..Default::default() };
        assert!(verify("s3cret-s3cret-s3cret", body, &ok, 0).is_ok());
        assert!(verify("other", body, &ok, 0).is_err());
        assert!(verify("s3cret-s3cret-s3cret", b"tampered", &ok, 0).is_err());
        let bad = HookSignature { github: Some("sha1=abc".into()), ..Default::default() };
        assert!(verify("s3cret-s3cret-s3cret", body, &bad, 0).is_err());
        assert!(verify("s3cret-s3cret-s3cret", body, &HookSignature::default(), 0).is_err());
    }

    /// The example of the Standard Webhooks specification (its README), verified here.
    #[test]
    fn the_standard_webhooks_example_verifies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = HookSignature {
            id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
            timestamp: Some("1614265330".into()),
            signature: Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()),
            ..Default::default()
        };
        assert_eq!(verify(secret, body, &sig, 1614265330), Ok(()));
        assert!(verify(secret, body, &sig, 1614265330 + 301).is_err(), "a replay after 5 minutes");
        assert!(verify("whsec_AAAA", body, &sig, 1614265330).is_err());
        let two = HookSignature {
            signature: Some("v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()),
            ..sig
        };
        assert_eq!(verify(secret, body, &two, 1614265330), Ok(()), "any of several signatures");
        let ancient = HookSignature { timestamp: Some(i64::MIN.to_string()), ..two };
        assert!(verify(secret, body, &ancient, 1614265330).is_err(), "no overflow, no pass");
    }

    /// HMAC accepts any key: an empty or short secret (an empty env var, a newline-only file)
    /// must not let a signature made with that key through, in either scheme.
    #[test]
    fn empty_and_short_secrets_refuse_every_signature() {
        let body = b"{}";
        for secret in ["", "short", "whsec_", "whsec_c2hvcnQ=", "whsec_not base64!!"] {
            // GitHub signs with the secret's own bytes: only a short one must be refused.
            let github = HookSignature { github: Some(github(secret, body)), ..Default::default() };
            assert_eq!(verify(secret, body, &github, 0).is_err(), secret.len() < MIN_KEY_BYTES, "{secret:?}");
            let key = key_of(secret).unwrap_or_default();
            let mut m = mac(&key).unwrap();
            m.update(b"id.0.{}");
            let sig = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()));
            let standard = HookSignature {
                id: Some("id".into()),
                timestamp: Some("0".into()),
                signature: Some(sig),
                ..Default::default()
            };
            assert!(verify(secret, body, &standard, 0).is_err(), "{secret:?}");
        }
    }
}
