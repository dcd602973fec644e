//! TLS set-up: rustls with the ring provider, installed once per process.

/// Installs ring as the process-wide rustls crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first; either way one is in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
