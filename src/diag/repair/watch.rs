//! Watching serde: a deserializer, visitor, seed and accessors that forward to
//! `toml`'s and keep the path of every value, so that a failure is known where it
//! happens. Every error serde's side creates is a [`Caught`].

use super::{Caught, Pass};
use crate::diag::FieldPath;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Wraps one of `toml`'s deserializers.
pub(super) struct Watch<'a, D> {
    pub(super) de: D,
    pub(super) pass: &'a Pass<'a>,
    pub(super) path: FieldPath,
    /// Deserializing a key: record the string.
    pub(super) key: bool,
}

struct WatchVisitor<'a, V> {
    v: V,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: bool,
}

struct WatchSeed<'a, S> {
    seed: S,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: bool,
}

struct WatchSeq<'a, A> {
    seq: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
    index: usize,
}

struct WatchMap<'a, A> {
    map: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
    key: Option<String>,
}

struct WatchEnum<'a, A> {
    data: A,
    pass: &'a Pass<'a>,
    path: FieldPath,
}

impl<'a, D> Watch<'a, D> {
    fn split<V>(self, v: V) -> (D, WatchVisitor<'a, V>, &'a Pass<'a>) {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v,
            pass,
            path: self.path,
            key: self.key,
        };
        (self.de, visitor, pass)
    }
}

macro_rules! watch_deserialize {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Caught> {
            let (de, visitor, pass) = self.split(visitor);
            de.$name($($arg,)* visitor).map_err(|e| pass.inbound(e))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Watch<'_, D> {
    type Error = Caught;

    watch_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Caught> {
        if name.starts_with("$__serde_spanned_private") || name.starts_with("$__toml_private") {
            // `toml::Spanned<T>` or a datetime: its map is `toml`'s own protocol, not
            // the file's.
            let pass = self.pass;
            return self
                .de
                .deserialize_struct(name, fields, visitor)
                .map_err(|e| pass.inbound(e));
        }
        let (de, visitor, pass) = self.split(visitor);
        de.deserialize_struct(name, fields, visitor)
            .map_err(|e| pass.inbound(e))
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! watch_visit {
    ($($name:ident($ty:ty);)*) => {$(
        fn $name<E: de::Error>(self, x: $ty) -> Result<Self::Value, E> {
            let pass = self.pass;
            self.v.$name::<Caught>(x).map_err(|c| pass.outbound(c))
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for WatchVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    watch_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        self.note(s);
        let pass = self.pass;
        self.v.visit_str::<Caught>(s).map_err(|c| pass.outbound(c))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        self.note(s);
        let pass = self.pass;
        self.v
            .visit_borrowed_str::<Caught>(s)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        self.note(&s);
        let pass = self.pass;
        self.v
            .visit_string::<Caught>(s)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        let pass = self.pass;
        self.v.visit_none::<Caught>().map_err(|c| pass.outbound(c))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        let pass = self.pass;
        self.v.visit_unit::<Caught>().map_err(|c| pass.outbound(c))
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.v.visit_some(de).map_err(|c| pass.outbound(c))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.v
            .visit_newtype_struct(de)
            .map_err(|c| pass.outbound(c))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let seq = WatchSeq {
            seq,
            pass,
            path: self.path,
            index: 0,
        };
        self.v.visit_seq(seq).map_err(|c| pass.outbound(c))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let map = WatchMap {
            map,
            pass,
            path: self.path,
            key: None,
        };
        self.v.visit_map(map).map_err(|c| pass.outbound(c))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let pass = self.pass;
        let data = WatchEnum {
            data,
            pass,
            path: self.path,
        };
        self.v.visit_enum(data).map_err(|c| pass.outbound(c))
    }
}

impl<V> WatchVisitor<'_, V> {
    fn note(&self, s: &str) {
        if self.key {
            *self.pass.key.borrow_mut() = Some(s.to_string());
        }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for WatchSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        let pass = self.pass;
        let de = Watch {
            de,
            pass,
            path: self.path,
            key: self.key,
        };
        self.seed.deserialize(de).map_err(|c| pass.outbound(c))
    }
}

impl<'de, A: de::SeqAccess<'de>> WatchSeq<'_, A> {
    /// The next element, its path and, on failure, the error (recorded).
    fn next<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> (FieldPath, Result<Option<S::Value>, Caught>) {
        let path = self.path.join(self.index);
        self.index += 1;
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: path.clone(),
            key: false,
        };
        let r = self.seq.next_element_seed(seed).map_err(|e| {
            let mut c = self.pass.inbound(e);
            self.pass.element_failed(&path, &mut c);
            c
        });
        (path, r)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for WatchSeq<'_, A> {
    type Error = Caught;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Caught> {
        self.next(seed).1
    }

    /// A failed element is left out and the list goes on (`Vec<T>` asks this way).
    fn next_element<T: de::Deserialize<'de>>(&mut self) -> Result<Option<T>, Caught> {
        loop {
            match self.next(PhantomData::<T>) {
                (path, Err(c)) if self.pass.skip(&self.path, &path, &c) => continue,
                (_, r) => return r,
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> WatchMap<'_, A> {
    /// The next key; on failure, the error and the key as far as it was read.
    fn next<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, (Caught, Option<String>)> {
        self.pass.key.borrow_mut().take();
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: self.path.clone(),
            key: true,
        };
        let r = self.map.next_key_seed(seed);
        self.key = self.pass.key.borrow_mut().take();
        r.map_err(|e| (self.pass.inbound(e), self.key.clone()))
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for WatchMap<'_, A> {
    type Error = Caught;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Caught> {
        self.next(seed).map_err(|(mut c, key)| {
            if let Some(key) = key {
                self.pass.key_failed(&self.path, &key, &mut c);
            }
            c
        })
    }

    /// A key that is not accepted (an unknown field) is reported and skipped, with
    /// its value; the table goes on (structs ask this way).
    fn next_key<K: de::Deserialize<'de>>(&mut self) -> Result<Option<K>, Caught> {
        loop {
            match self.next(PhantomData::<K>) {
                Ok(k) => return Ok(k),
                Err((mut c, Some(key))) => {
                    self.pass.key_failed(&self.path, &key, &mut c);
                    self.map
                        .next_value::<IgnoredAny>()
                        .map_err(|e| self.pass.inbound(e))?;
                }
                Err((c, None)) => return Err(c),
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Caught> {
        let key = self.key.clone().unwrap_or_default();
        let seed = WatchSeed {
            seed,
            pass: self.pass,
            path: self.path.join(key.as_str()),
            key: false,
        };
        self.map.next_value_seed(seed).map_err(|e| {
            let mut c = self.pass.inbound(e);
            self.pass.value_failed(&self.path, &key, &mut c);
            c
        })
    }

    /// A failed entry is left out and the map goes on (maps ask this way).
    fn next_entry<K, V>(&mut self) -> Result<Option<(K, V)>, Caught>
    where
        K: de::Deserialize<'de>,
        V: de::Deserialize<'de>,
    {
        loop {
            let Some(k) = self.next_key::<K>()? else {
                return Ok(None);
            };
            match self.next_value::<V>() {
                Ok(v) => return Ok(Some((k, v))),
                Err(c) => {
                    let entry = self
                        .path
                        .join(self.key.clone().unwrap_or_default().as_str());
                    if !self.pass.skip(&self.path, &entry, &c) {
                        return Err(c);
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for WatchEnum<'a, A> {
    type Error = Caught;
    type Variant = WatchEnum<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Caught> {
        let pass = self.pass;
        let seed = WatchSeed {
            seed,
            pass,
            path: self.path.clone(),
            key: false,
        };
        let (v, variant) = self.data.variant_seed(seed).map_err(|e| pass.inbound(e))?;
        let variant = WatchEnum {
            data: variant,
            pass,
            path: self.path,
        };
        Ok((v, variant))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for WatchEnum<'_, A> {
    type Error = Caught;

    fn unit_variant(self) -> Result<(), Caught> {
        let pass = self.pass;
        self.data.unit_variant().map_err(|e| pass.inbound(e))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Caught> {
        let pass = self.pass;
        let seed = WatchSeed {
            seed,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .newtype_variant_seed(seed)
            .map_err(|e| pass.inbound(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Caught> {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v: visitor,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .tuple_variant(len, visitor)
            .map_err(|e| pass.inbound(e))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Caught> {
        let pass = self.pass;
        let visitor = WatchVisitor {
            v: visitor,
            pass,
            path: self.path,
            key: false,
        };
        self.data
            .struct_variant(fields, visitor)
            .map_err(|e| pass.inbound(e))
    }
}
