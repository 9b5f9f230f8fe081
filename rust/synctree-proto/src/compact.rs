//! How a [`Value`] is encoded: the commonest types as msgpack's own (`bool`, an integer, a
//! 64-bit float, a string), `Nil` as an empty array (msgpack's `nil` is `None` of an
//! `Option<Value>`, which must stay apart from `Some(Nil)`), every other one as
//! `[type, payload]` with Godot's `Variant.Type` number as the type (one byte). A serde-derived enum would write a map with
//! the variant's name around each value: 3 bytes or more per value, in every log entry,
//! snapshot and update sent to a client.
//!
//! ```text
//!   Int(300)           -> cd 01 2c                    (3 bytes; derived: 7)
//!   Vector2([1.0, 2.0]) -> 92 05 92 ca .. ca ..        (13 bytes)
//! ```

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::Value;

/// Godot's `Variant.Type` numbers of the types that travel as `[type, payload]`.
mod ty {
    pub const VECTOR2: u8 = 5;
    pub const VECTOR2I: u8 = 6;
    pub const RECT2: u8 = 7;
    pub const RECT2I: u8 = 8;
    pub const VECTOR3: u8 = 9;
    pub const VECTOR3I: u8 = 10;
    pub const TRANSFORM2D: u8 = 11;
    pub const VECTOR4: u8 = 12;
    pub const VECTOR4I: u8 = 13;
    pub const QUATERNION: u8 = 15;
    pub const BASIS: u8 = 17;
    pub const TRANSFORM3D: u8 = 18;
    pub const COLOR: u8 = 20;
    pub const STRING_NAME: u8 = 21;
    pub const NODE_PATH: u8 = 22;
    pub const DICTIONARY: u8 = 27;
    pub const ARRAY: u8 = 28;
    pub const PACKED_BYTE_ARRAY: u8 = 29;
    pub const PACKED_INT32_ARRAY: u8 = 30;
    pub const PACKED_INT64_ARRAY: u8 = 31;
    pub const PACKED_FLOAT32_ARRAY: u8 = 32;
    pub const PACKED_FLOAT64_ARRAY: u8 = 33;
    pub const PACKED_STRING_ARRAY: u8 = 34;
    pub const PACKED_VECTOR2_ARRAY: u8 = 35;
    pub const PACKED_VECTOR3_ARRAY: u8 = 36;
    pub const PACKED_COLOR_ARRAY: u8 = 37;
    pub const PACKED_VECTOR4_ARRAY: u8 = 38;
}

/// Bytes as msgpack binary (not an array of integers).
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn tagged<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    ty: u8,
    payload: &T,
) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(&ty)?;
    t.serialize_element(payload)?;
    t.end()
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use Value as V;
        match self {
            V::Nil => s.serialize_tuple(0)?.end(),
            V::Bool(b) => s.serialize_bool(*b),
            V::Int(i) => s.serialize_i64(*i),
            V::Float(x) => s.serialize_f64(*x),
            V::String(x) => s.serialize_str(x),
            V::StringName(x) => tagged(s, ty::STRING_NAME, x),
            V::NodePath(x) => tagged(s, ty::NODE_PATH, x),
            V::Vector2(a) => tagged(s, ty::VECTOR2, a),
            V::Vector2i(a) => tagged(s, ty::VECTOR2I, a),
            V::Vector3(a) => tagged(s, ty::VECTOR3, a),
            V::Vector3i(a) => tagged(s, ty::VECTOR3I, a),
            V::Vector4(a) => tagged(s, ty::VECTOR4, a),
            V::Vector4i(a) => tagged(s, ty::VECTOR4I, a),
            V::Rect2(a) => tagged(s, ty::RECT2, a),
            V::Rect2i(a) => tagged(s, ty::RECT2I, a),
            V::Color(a) => tagged(s, ty::COLOR, a),
            V::Quaternion(a) => tagged(s, ty::QUATERNION, a),
            V::Basis(a) => tagged(s, ty::BASIS, a),
            V::Transform2D(a) => tagged(s, ty::TRANSFORM2D, a),
            V::Transform3D(a) => tagged(s, ty::TRANSFORM3D, a),
            V::Array(xs) => tagged(s, ty::ARRAY, xs),
            V::Dictionary(kv) => tagged(s, ty::DICTIONARY, kv),
            V::PackedByteArray(xs) => tagged(s, ty::PACKED_BYTE_ARRAY, &Bin(xs)),
            V::PackedInt32Array(xs) => tagged(s, ty::PACKED_INT32_ARRAY, xs),
            V::PackedInt64Array(xs) => tagged(s, ty::PACKED_INT64_ARRAY, xs),
            V::PackedFloat32Array(xs) => tagged(s, ty::PACKED_FLOAT32_ARRAY, xs),
            V::PackedFloat64Array(xs) => tagged(s, ty::PACKED_FLOAT64_ARRAY, xs),
            V::PackedStringArray(xs) => tagged(s, ty::PACKED_STRING_ARRAY, xs),
            V::PackedVector2Array(xs) => tagged(s, ty::PACKED_VECTOR2_ARRAY, xs),
            V::PackedVector3Array(xs) => tagged(s, ty::PACKED_VECTOR3_ARRAY, xs),
            V::PackedVector4Array(xs) => tagged(s, ty::PACKED_VECTOR4_ARRAY, xs),
            V::PackedColorArray(xs) => tagged(s, ty::PACKED_COLOR_ARRAY, xs),
        }
    }
}

struct ValueVisitor;

fn payload<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    ty: u8,
) -> Result<T, A::Error> {
    let value = seq
        .next_element()?
        .ok_or_else(|| de::Error::custom(format!("a value of type {ty} without its payload")))?;
    if seq.next_element::<IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(format!(
            "a value of type {ty} with more than a payload"
        )));
    }
    Ok(value)
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value: [], bool, integer, float, string or [type, payload]")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {u} is out of range for an int")))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Float(x))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        use Value as V;
        let Some(ty) = seq.next_element::<u8>()? else {
            return Ok(V::Nil);
        };
        let s = &mut seq;
        Ok(match ty {
            ty::STRING_NAME => V::StringName(payload(s, ty)?),
            ty::NODE_PATH => V::NodePath(payload(s, ty)?),
            ty::VECTOR2 => V::Vector2(payload(s, ty)?),
            ty::VECTOR2I => V::Vector2i(payload(s, ty)?),
            ty::VECTOR3 => V::Vector3(payload(s, ty)?),
            ty::VECTOR3I => V::Vector3i(payload(s, ty)?),
            ty::VECTOR4 => V::Vector4(payload(s, ty)?),
            ty::VECTOR4I => V::Vector4i(payload(s, ty)?),
            ty::RECT2 => V::Rect2(payload(s, ty)?),
            ty::RECT2I => V::Rect2i(payload(s, ty)?),
            ty::COLOR => V::Color(payload(s, ty)?),
            ty::QUATERNION => V::Quaternion(payload(s, ty)?),
            ty::BASIS => V::Basis(payload(s, ty)?),
            ty::TRANSFORM2D => V::Transform2D(payload(s, ty)?),
            ty::TRANSFORM3D => V::Transform3D(payload(s, ty)?),
            ty::ARRAY => V::Array(payload(s, ty)?),
            ty::DICTIONARY => V::Dictionary(payload(s, ty)?),
            ty::PACKED_BYTE_ARRAY => {
                V::PackedByteArray(payload::<_, bytes::Bytes>(s, ty)?.to_vec())
            }
            ty::PACKED_INT32_ARRAY => V::PackedInt32Array(payload(s, ty)?),
            ty::PACKED_INT64_ARRAY => V::PackedInt64Array(payload(s, ty)?),
            ty::PACKED_FLOAT32_ARRAY => V::PackedFloat32Array(payload(s, ty)?),
            ty::PACKED_FLOAT64_ARRAY => V::PackedFloat64Array(payload(s, ty)?),
            ty::PACKED_STRING_ARRAY => V::PackedStringArray(payload(s, ty)?),
            ty::PACKED_VECTOR2_ARRAY => V::PackedVector2Array(payload(s, ty)?),
            ty::PACKED_VECTOR3_ARRAY => V::PackedVector3Array(payload(s, ty)?),
            ty::PACKED_VECTOR4_ARRAY => V::PackedVector4Array(payload(s, ty)?),
            ty::PACKED_COLOR_ARRAY => V::PackedColorArray(payload(s, ty)?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown value type {other} (not a Variant type synctree replicates)"
                )))
            }
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_values_are_msgpack_scalars() {
        let len = |v: &Value| crate::encode(v).unwrap().len();
        assert_eq!(len(&Value::Nil), 1);
        assert_eq!(len(&Value::Bool(true)), 1);
        assert_eq!(len(&Value::Int(5)), 1);
        assert_eq!(len(&Value::Int(300)), 3);
        assert_eq!(len(&Value::Float(0.5)), 9);
        assert_eq!(len(&Value::String("ab".into())), 3);
        // [type, [x, y]]: 2 + 1 + 2 * 5.
        assert_eq!(len(&Value::Vector2([1.0, 2.0])), 13);
        assert_eq!(len(&Value::PackedByteArray(vec![7; 100])), 2 + 2 + 100);
    }

    #[test]
    fn other_shapes_are_refused_with_the_reason() {
        let err = |bytes: &[u8]| crate::decode::<Value>(bytes, 64).unwrap_err().to_string();
        // [99, 1]: no such type.
        assert!(err(&[0x92, 99, 1]).contains("unknown value type 99"));
        // [5]: a Vector2 without its payload; [5, [1, 2], 3]: one element too many.
        assert!(err(&[0x91, 5]).contains("without its payload"));
        assert!(err(&[0x93, 21, 0xa1, b'a', 3]).contains("more than a payload"));
        // u64::MAX is not an int; nil and maps are not values.
        assert!(
            err(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).contains("out of range")
        );
        assert!(err(&[0xc0]).contains("invalid type"));
        assert!(err(&[0x80]).contains("invalid type"));
    }

    #[test]
    fn an_optional_nil_is_not_none() {
        for v in [None, Some(Value::Nil), Some(Value::Int(0))] {
            let bytes = crate::encode(&v).unwrap();
            assert_eq!(crate::decode::<Option<Value>>(&bytes, 64).unwrap(), v);
        }
    }
}
