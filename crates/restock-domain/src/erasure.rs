//! Keyed hashing of personal data for erasure: the value is gone, but the same value erased
//! twice gives the same hash, so counts and audits stay true without keeping the data.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Replaces `value` by `erased:` and the hex HMAC-SHA256 of it under `key`.
pub fn erase(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(value.as_bytes());
    format!("erased:{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_key_and_hides_the_value() {
        let a = erase(b"k1", "+14155550132");
        assert_eq!(a, erase(b"k1", "+14155550132"));
        assert_ne!(a, erase(b"k2", "+14155550132"));
        assert!(!a.contains("4155550132"));
        assert!(a.starts_with("erased:"));
    }
}
