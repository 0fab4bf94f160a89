//! The one fingerprint of a request's content: how a replay (the same request again under the
//! same idempotency key, order id or page token) is told from another request.
//!
//! A fingerprint is SHA-256 over a canonical, versioned encoding of the typed command's fields,
//! each listed explicitly by name at its one call site ([`Canonical::field`]). Nothing derived
//! (field order of a struct, `Debug` text, proto encoding, default values of absent fields)
//! enters it, so refactoring a type cannot change a print; only editing the field list does,
//! and then [`VERSION`] or the kind name is bumped.
//!
//! Encoding (all lengths and counts u32 big-endian, integers i64 big-endian):
//!
//! ```text
//! print   = SHA-256( len "restock.fingerprint" | VERSION | len kind | field* )
//! field   = len name | value
//! value   = 's' len bytes          text
//!         | 'i' i64                integer (every width)
//!         | 'b' 0|1                boolean
//!         | 't' i64                time, microseconds since the Unix epoch (UTC)
//!         | 'u' 16 bytes           UUID
//!         | 'n'                    absent (None)
//!         | 'y' value              present (Some)
//!         | 'l' count value*       list, in the given order
//!         | 'm' count (value value)*  map, in key order
//! ```
//!
//! Stored prints: idempotency keys and orders keep theirs without expiry, and rows written
//! before this form hold an older one. [`Fingerprint`] carries the canonical print (what is
//! stored from now on) and the legacy print of the same request, and a stored print matching
//! either is the same request.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The encoding's version, digested into every print.
pub const VERSION: u8 = 1;
const MAGIC: &[u8] = b"restock.fingerprint";

/// A SHA-256 print.
pub type Print = [u8; 32];

/// A canonical encoding being built: the kind of command, then its fields by name.
#[derive(Debug, Clone)]
pub struct Canonical {
    bytes: Vec<u8>,
}

impl Canonical {
    /// The encoding of a command of `kind` (e.g. `"Subscribe"`, an RPC name).
    pub fn new(kind: &str) -> Self {
        let mut bytes = Vec::with_capacity(128);
        put_len(&mut bytes, MAGIC);
        bytes.push(VERSION);
        put_len(&mut bytes, kind.as_bytes());
        Self { bytes }
    }

    /// Adds the field `name` with `value`.
    pub fn field(mut self, name: &str, value: impl Value) -> Self {
        put_len(&mut self.bytes, name.as_bytes());
        value.put(&mut self.bytes);
        self
    }

    /// The encoded bytes (what is digested).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The print: SHA-256 of the encoding.
    pub fn finish(&self) -> Print {
        Sha256::digest(&self.bytes).into()
    }
}

/// A print to compare with a stored one: the canonical print, stored from now on, and the form
/// rows written before it hold, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    canonical: Print,
    legacy: Option<Vec<u8>>,
}

impl Fingerprint {
    pub fn new(canonical: Print, legacy: Option<Vec<u8>>) -> Self {
        Self { canonical, legacy }
    }

    /// What to store with a new row.
    pub fn stored(&self) -> &[u8] {
        &self.canonical
    }

    /// Whether `stored` (the print of a row) is this request's, in either form.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored == self.canonical || self.legacy.as_deref() == Some(stored)
    }
}

fn put_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a field under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_count(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    out.extend_from_slice(&u32::try_from(n).expect("under 4G items").to_be_bytes());
}

/// A value with a canonical encoding (see the module's grammar).
pub trait Value {
    fn put(&self, out: &mut Vec<u8>);
}

impl<T: Value + ?Sized> Value for &T {
    fn put(&self, out: &mut Vec<u8>) {
        (**self).put(out)
    }
}

impl Value for str {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(b's');
        put_len(out, self.as_bytes());
    }
}

impl Value for String {
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out)
    }
}

macro_rules! integer {
    ($($t:ty),+) => {$(
        impl Value for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.push(b'i');
                out.extend_from_slice(&i64::from(*self).to_be_bytes());
            }
        }
    )+};
}
integer!(i64, i32, u32, i16, u16, u8);

impl Value for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(b'b');
        out.push(u8::from(*self));
    }
}

impl Value for DateTime<Utc> {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(b't');
        out.extend_from_slice(&self.timestamp_micros().to_be_bytes());
    }
}

impl Value for Uuid {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(b'u');
        out.extend_from_slice(self.as_bytes());
    }
}

impl<T: Value> Value for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(b'n'),
            Some(v) => {
                out.push(b'y');
                v.put(out);
            }
        }
    }
}

impl<T: Value> Value for [T] {
    fn put(&self, out: &mut Vec<u8>) {
        put_count(out, b'l', self.len());
        for v in self {
            v.put(out);
        }
    }
}

impl<T: Value> Value for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.as_slice().put(out)
    }
}

impl<K: Value, V: Value> Value for BTreeMap<K, V> {
    fn put(&self, out: &mut Vec<u8>) {
        put_count(out, b'm', self.len());
        for (k, v) in self {
            k.put(out);
            v.put(out);
        }
    }
}

/// The stored states are encoded by their one stored name.
macro_rules! by_name {
    ($($t:ty),+) => {$(
        impl Value for $t {
            fn put(&self, out: &mut Vec<u8>) {
                self.as_str().put(out)
            }
        }
    )+};
}
by_name!(
    crate::ConsentSource,
    crate::MessageStatus,
    crate::ReleaseState,
    crate::SubscriptionStatus
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_frozen() {
        let c = Canonical::new("K")
            .field("s", "ab")
            .field("i", 7u32)
            .field("o", None::<&str>)
            .field("l", vec![true]);
        assert_eq!(
            hex::encode(c.bytes()),
            concat!(
                "00000013",
                "726573746f636b2e66696e6765727072696e74", // "restock.fingerprint"
                "01",                                     // version
                "00000001",
                "4b", // kind "K"
                "00000001",
                "73",
                "73",
                "00000002",
                "6162", // s: 's' "ab"
                "00000001",
                "69",
                "69",
                "0000000000000007", // i: 'i' 7
                "00000001",
                "6f",
                "6e", // o: 'n'
                "00000001",
                "6c",
                "6c",
                "00000001",
                "6201", // l: 'l' 1 'b' 1
            )
        );
    }

    #[test]
    fn adjacent_fields_cannot_trade_bytes() {
        let a = Canonical::new("K").field("a", "xy").field("b", "z");
        let b = Canonical::new("K").field("a", "x").field("b", "yz");
        assert_ne!(a.finish(), b.finish());
        let none = Canonical::new("K").field("a", None::<&str>);
        let empty = Canonical::new("K").field("a", Some(""));
        assert_ne!(none.finish(), empty.finish());
        assert_ne!(
            Canonical::new("K").field("a", "x").finish(),
            Canonical::new("L").field("a", "x").finish()
        );
    }

    #[test]
    fn a_stored_print_matches_in_either_form() {
        let print = Canonical::new("K").field("a", "x").finish();
        let f = Fingerprint::new(print, Some(vec![1, 2, 3]));
        assert_eq!(f.stored(), print);
        assert!(f.matches(&print));
        assert!(f.matches(&[1, 2, 3]));
        assert!(!f.matches(&[1, 2]));
        assert!(!Fingerprint::new(print, None).matches(&[1, 2, 3]));
    }
}
