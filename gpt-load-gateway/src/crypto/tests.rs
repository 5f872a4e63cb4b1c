use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::test_ciphers::{A, B, PASSWORD_A};
use super::*;

const KEY: &str = "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz";

/// Decodes a `v1:` value, lets `change` alter the raw bytes, encodes it again.
fn tamper(stored: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let body = stored.strip_prefix(V1_PREFIX).unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(body).unwrap();
    change(&mut raw);
    format!("{V1_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn round_trip() {
    for plain in [KEY, "x", "密钥-ключ-🔑"] {
        let stored = A.encrypt(plain);
        assert!(stored.starts_with("v1:"));
        assert_ne!(stored, plain);
        assert_eq!(A.decrypt(&stored).unwrap(), plain);
    }
}

#[test]
fn stored_form_is_unpadded_base64url_of_nonce_ciphertext_and_tag() {
    let stored = A.encrypt(KEY);
    let body = stored.strip_prefix("v1:").unwrap();
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let raw = URL_SAFE_NO_PAD.decode(body).unwrap();
    assert_eq!(raw.len(), NONCE_LEN + KEY.len() + TAG_LEN);
}

#[test]
fn same_plaintext_encrypts_differently_but_hashes_equal() {
    let first = A.encrypt(KEY);
    let second = A.encrypt(KEY);
    assert_ne!(first, second);
    assert_eq!(A.decrypt(&first).unwrap(), A.decrypt(&second).unwrap());
    assert_eq!(A.hash(KEY), A.hash(KEY));
}

#[test]
fn disabled_cipher_passes_values_through() {
    let off = KeyCipher::from_password(None);
    assert!(!off.is_enabled());
    assert!(!KeyCipher::from_password(Some("")).is_enabled());
    assert_eq!(off.encrypt(KEY), KEY);
    assert_eq!(off.decrypt(KEY).unwrap(), KEY);
    assert_eq!(off.decrypt("").unwrap(), "");
}

#[test]
fn disabled_hash_is_plain_sha256_hex() {
    let off = KeyCipher::disabled();
    assert_eq!(
        off.hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(off.hash(""), "");
}

#[test]
fn enabled_hash_is_keyed() {
    let off = KeyCipher::disabled();
    let hash = A.hash(KEY);
    assert!(A.is_enabled());
    assert_eq!(hash.len(), 64);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_ne!(hash, off.hash(KEY));
    assert_ne!(hash, B.hash(KEY));
    assert_eq!(A.hash(""), "");
}

#[test]
fn empty_value_stays_empty_when_enabled() {
    assert_eq!(A.encrypt(""), "");
    assert_eq!(A.decrypt("").unwrap(), "");
}

#[test]
fn wrong_password_fails_authentication() {
    let err = B.decrypt(&A.encrypt(KEY)).unwrap_err();
    assert!(matches!(err, CryptoError::Authentication));
    assert_eq!(
        err.to_string(),
        "stored value does not decrypt: wrong encryption key or tampered value"
    );
}

#[test]
fn tampered_values_fail_authentication() {
    let stored = A.encrypt(KEY);
    let flip_ciphertext = tamper(&stored, |raw| raw[NONCE_LEN] ^= 0x01);
    let flip_nonce = tamper(&stored, |raw| raw[0] ^= 0x80);
    let flip_tag = tamper(&stored, |raw| {
        if let Some(last) = raw.last_mut() {
            *last ^= 0x01;
        }
    });
    let truncate = tamper(&stored, |raw| raw.truncate(raw.len() - 1));
    for value in [flip_ciphertext, flip_nonce, flip_tag, truncate] {
        assert!(matches!(A.decrypt(&value), Err(CryptoError::Authentication)));
    }
}

#[test]
fn disabled_cipher_refuses_encrypted_values() {
    let err = KeyCipher::disabled().decrypt(&A.encrypt(KEY)).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMissing));
    assert_eq!(
        err.to_string(),
        "stored value is encrypted but ENCRYPTION_KEY is not set"
    );
}

#[test]
fn enabled_cipher_reports_malformed_values() {
    assert!(matches!(A.decrypt(KEY), Err(CryptoError::NotEncrypted)));
    match A.decrypt("v2:AAAA") {
        Err(CryptoError::UnknownVersion { version }) => assert_eq!(version, "v2"),
        other => panic!("expected an unknown version, got {other:?}"),
    }
    assert!(matches!(
        A.decrypt("v1:not*base64"),
        Err(CryptoError::BadEncoding)
    ));
    assert!(matches!(A.decrypt("v1:AAAA="), Err(CryptoError::BadEncoding)));
    let short = format!("v1:{}", URL_SAFE_NO_PAD.encode([0_u8; NONCE_LEN + TAG_LEN - 1]));
    assert!(matches!(
        A.decrypt(&short),
        Err(CryptoError::TooShort { len: 39 })
    ));
}

#[test]
fn error_messages_never_contain_the_value() {
    let secret = "sk-secret-that-must-not-leak";
    let errors = [
        A.decrypt(secret).unwrap_err(),
        KeyCipher::disabled().decrypt(&A.encrypt(secret)).unwrap_err(),
        B.decrypt(&A.encrypt(secret)).unwrap_err(),
    ];
    for err in errors {
        let text = err.to_string();
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

#[test]
fn debug_reveals_no_key_material() {
    let shown = format!("{:?}", *A);
    assert_eq!(shown, "KeyCipher { enabled: true, .. }");
    assert!(!shown.contains(PASSWORD_A));
    let cloned = A.clone();
    assert_eq!(format!("{cloned:#?}"), format!("{:#?}", *A));
    assert_eq!(
        format!("{:?}", KeyCipher::disabled()),
        "KeyCipher { enabled: false, .. }"
    );
}

#[test]
fn clones_share_the_keys() {
    let cloned = A.clone();
    assert_eq!(cloned.decrypt(&A.encrypt(KEY)).unwrap(), KEY);
    assert_eq!(cloned.hash(KEY), A.hash(KEY));
}

#[test]
fn looks_encrypted_matches_version_prefixes_only() {
    assert!(looks_encrypted(&A.encrypt(KEY)));
    for value in ["v1:", "v2:abc", "v123:abc"] {
        assert!(looks_encrypted(value), "{value}");
    }
    for value in [
        KEY,
        "",
        "AIzaSyA-0123456789",
        "sk-ant-api03-abc",
        "v:abc",
        "vx:abc",
        "v1234:abc",
        "V1:abc",
        "1:abc",
        "v1",
    ] {
        assert!(!looks_encrypted(value), "{value}");
    }
}
