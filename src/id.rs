//! [`Id`]: a shared, immutable name (sensor id, device, channel, unit, detector).
//!
//! Every reading the pipeline emits carries its channel's names. As `String`s that
//! was four allocations, copies and frees per reading (15,000 a second at W500, the
//! largest share of the allocator's time in the plant profile). The processor already
//! holds each channel's names as `Arc<str>`; an `Id` is one of them, so putting it
//! into a record is a reference count, not a copy.
//!
//! It reads like a `&str` (`Deref`, `Display`, comparisons with `str`) and serializes
//! as a plain string, so the outbox payload and every wire format are unchanged.
//! Decoding builds it straight from the borrowed string: one allocation, as a
//! `String` took (serde's own `Arc<str>` decodes into a `Box<str>` first and copies).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A map keyed by names (sensor ids, devices) on a hot path: hashed with foldhash,
/// not the standard SipHash, which was ~4 % of the daemon's CPU at W500 for the
/// processor's and the upstream's lookups. Seeded at random per map like the
/// standard one; the keys come from profiles, config and the gateway's own records.
pub type NameMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The set of [`NameMap`].
pub type NameSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A shared, immutable name. Cloning it is a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Arc<str>);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string itself, for maps keyed by `Arc<str>`.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl Default for Id {
    fn default() -> Self {
        Id(Arc::from(""))
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Arc<str>> for Id {
    fn from(s: Arc<str>) -> Self {
        Id(s)
    }
}

impl From<&Arc<str>> for Id {
    fn from(s: &Arc<str>) -> Self {
        Id(Arc::clone(s))
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id(Arc::from(s))
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id(Arc::from(s))
    }
}

impl From<&String> for Id {
    fn from(s: &String) -> Self {
        Id(Arc::from(s.as_str()))
    }
}

impl From<Id> for String {
    fn from(id: Id) -> Self {
        id.0.to_string()
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Id> for str {
    fn eq(&self, other: &Id) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Id> for &str {
    fn eq(&self, other: &Id) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Id> for String {
    fn eq(&self, other: &Id) -> bool {
        **self == *other.0
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::from(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_a_plain_string_in_messagepack_and_json() {
        let id = Id::from("press-01.vib_rms");
        let mp = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(mp, rmp_serde::to_vec("press-01.vib_rms").unwrap());
        let back: Id = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(back, "press-01.vib_rms");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"press-01.vib_rms\"");
        let back: Id = serde_json::from_str("\"a\\u00e9b\"").unwrap();
        assert_eq!(back.as_str(), "a\u{e9}b");
        assert!(serde_json::from_str::<Id>("3").is_err());
    }

    #[test]
    fn a_clone_shares_the_string() {
        let arc: Arc<str> = Arc::from("dev-1");
        let id = Id::from(&arc);
        let copy = id.clone();
        assert!(Arc::ptr_eq(copy.as_arc(), &arc));
        assert_eq!(Arc::strong_count(&arc), 3);
    }
}
