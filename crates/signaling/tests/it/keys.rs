//! Test RSA keys, generated with the `rsa` crate once and cached in the target tmp dir so
//! that every test process (nextest runs one per test) does not pay for key generation.

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use std::path::PathBuf;
use std::sync::OnceLock;

fn cached_key(name: &str) -> RsaPrivateKey {
    let path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("signaling-test-{name}.pem"));
    let read = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|pem| RsaPrivateKey::from_pkcs8_pem(&pem).ok())
    };
    if let Some(k) = read() {
        return k;
    }
    // One process generates (guarded by a lock file); the others wait for its file.
    let lock = path.with_extension("lock");
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .is_err()
    {
        for _ in 0..1200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if let Some(k) = read() {
                return k;
            }
        }
    }
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, pem.as_bytes()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let _ = std::fs::remove_file(&lock);
    key
}

/// The signing key of the fake notification service.
pub fn service_key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| cached_key("service"))
}

/// A second key (rotation, forged signatures, client certificates).
pub fn other_key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| cached_key("other"))
}

/// PKCS#8 PEM of a key.
pub fn pem(key: &RsaPrivateKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

/// The public half.
pub fn public(key: &RsaPrivateKey) -> RsaPublicKey {
    key.to_public_key()
}
