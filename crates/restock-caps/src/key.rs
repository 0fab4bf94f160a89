//! Redis keys of the caps and the Redis Cluster slot each one hashes to.
//!
//! A key is `{prefix}:{kind:id}:{name}:{shape}`. The braces are the hash tag: every bucket of one
//! scope (one phone, one sender, one tenant) hashes to one slot, so one script may touch them all
//! on Redis Cluster. The prefix stays outside the tag, so a prefix per test or per deployment
//! changes no slot.

use crate::bucket::Shape;

/// Whose capacity a bucket counts: a phone, a sender, a tenant. The scope is the hash tag of its
/// buckets' keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    kind: String,
    id: String,
}

impl Scope {
    /// A scope of any kind; `kind` and `id` must be non-empty and free of `{` and `}`, which
    /// would move the hash tag.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// The buckets of one phone number (E.164), across tenants and releases.
    pub fn phone(e164: impl Into<String>) -> Self {
        Self::new("phone", e164)
    }

    /// The buckets of one sending number or messaging service (the provider's throughput).
    pub fn sender(id: impl Into<String>) -> Self {
        Self::new("sender", id)
    }

    /// The buckets of one tenant.
    pub fn tenant(id: impl Into<String>) -> Self {
        Self::new("tenant", id)
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `{kind:id}`: the part of every key of this scope that Redis Cluster hashes.
    pub fn hash_tag(&self) -> String {
        format!("{{{}:{}}}", self.kind, self.id)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.kind.is_empty() || self.id.is_empty() {
            return Err(format!("scope {:?}: kind and id must be non-empty", self));
        }
        if has_brace(&self.kind) || has_brace(&self.id) {
            return Err(format!("scope {:?}: braces would move the hash tag", self));
        }
        Ok(())
    }
}

fn has_brace(s: &str) -> bool {
    s.contains(['{', '}'])
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<(), String> {
    // A brace in the prefix would become the hash tag of every key.
    if has_brace(prefix) {
        return Err(format!("key prefix {prefix:?} must not contain braces"));
    }
    Ok(())
}

pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || has_brace(name) {
        return Err(format!(
            "limit name {name:?} must be non-empty and free of braces"
        ));
    }
    Ok(())
}

/// The key of one bucket. The shape is part of the key because the two shapes store different
/// Redis types: changing a limit's shape starts a fresh bucket instead of a WRONGTYPE error.
pub(crate) fn bucket_key(prefix: &str, scope: &Scope, name: &str, shape: Shape) -> String {
    let shape = match shape {
        Shape::Window => "w",
        Shape::Rate => "r",
    };
    if prefix.is_empty() {
        format!("{{{}:{}}}:{name}:{shape}", scope.kind, scope.id)
    } else {
        format!("{prefix}:{{{}:{}}}:{name}:{shape}", scope.kind, scope.id)
    }
}

/// Number of hash slots of Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16 (XMODEM) of the
/// hash tag (the bytes between the first `{` and the next `}`, when non-empty), else of the
/// whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// CRC16-CCITT in its XMODEM form (polynomial 0x1021, initial value 0), the one Redis Cluster
/// uses. Bitwise: keys are short and a batch has a few thousand of them at most.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn empty_or_unclosed_tags_hash_the_whole_key() {
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % SLOTS);
    }

    #[test]
    fn keys_put_the_scope_in_the_hash_tag_and_the_prefix_outside() {
        let phone = Scope::phone("+14155550123");
        let key = bucket_key("t-1", &phone, "texts", Shape::Window);
        assert_eq!(key, "t-1:{phone:+14155550123}:texts:w");
        assert_eq!(phone.hash_tag(), "{phone:+14155550123}");
        assert_eq!(key_slot(key.as_bytes()), key_slot(b"phone:+14155550123"));
    }

    #[test]
    fn braces_are_refused_where_they_would_move_the_tag() {
        assert!(validate_prefix("a{b").is_err());
        assert!(validate_prefix("").is_ok());
        assert!(Scope::phone("+1}").validate().is_err());
        assert!(Scope::new("", "x").validate().is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("day").is_ok());
    }

    proptest! {
        #[test]
        fn every_bucket_of_a_scope_shares_a_slot(
            prefix in "[a-z0-9:-]{0,12}",
            kind in "[a-z]{1,8}",
            id in "[^{}]{1,20}",
            a in "[a-z0-9]{1,8}",
            b in "[a-z0-9]{1,8}",
        ) {
            let scope = Scope::new(kind, id);
            let ka = bucket_key(&prefix, &scope, &a, Shape::Window);
            let kb = bucket_key("other", &scope, &b, Shape::Rate);
            prop_assert_eq!(key_slot(ka.as_bytes()), key_slot(kb.as_bytes()));
            let tag = scope.hash_tag();
            prop_assert_eq!(key_slot(ka.as_bytes()), key_slot(tag.as_bytes()));
        }

        #[test]
        fn a_slot_is_in_range_and_ignores_text_outside_the_tag(
            tag in "[a-z0-9]{1,10}", before in "[a-z0-9:]{0,10}", after in ".{0,10}",
        ) {
            let key = format!("{before}{{{tag}}}{after}");
            let slot = key_slot(key.as_bytes());
            prop_assert!(slot < SLOTS);
            prop_assert_eq!(slot, key_slot(tag.as_bytes()));
        }
    }
}
