//! A typed encoding of the Godot Variant types synctree replicates.
//!
//! Vectors and matrices use `f32` like Godot's default (single-precision `real_t`) builds;
//! `Float` is `f64` like GDScript's `float`. Anything else (objects, callables, RIDs, ...) is
//! refused by the Godot layer when the call is made, naming the type.

use std::fmt::{self, Write};

/// The deepest arrays and dictionaries may nest in a replicated value (well inside what
/// [`crate::decode`] accepts: each level takes two levels of the encoding).
pub const MAX_VALUE_DEPTH: usize = 32;

/// A replicated value. Equality is structural (`NaN != NaN` like Godot's `==`).
///
/// Encoded compactly (values are in every log entry, snapshot and update sent to clients):
/// see [`crate::compact`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    StringName(String),
    NodePath(String),
    Vector2([f32; 2]),
    Vector2i([i32; 2]),
    Vector3([f32; 3]),
    Vector3i([i32; 3]),
    Vector4([f32; 4]),
    Vector4i([i32; 4]),
    /// position x, y, size x, y
    Rect2([f32; 4]),
    Rect2i([i32; 4]),
    /// r, g, b, a
    Color([f32; 4]),
    /// x, y, z, w
    Quaternion([f32; 4]),
    /// rows x, y, z
    Basis([f32; 9]),
    /// columns x, y, origin
    Transform2D([f32; 6]),
    /// basis rows x, y, z, then origin
    Transform3D([f32; 12]),
    Array(Vec<Value>),
    /// Entries in insertion order, as Godot's Dictionary keeps them.
    Dictionary(Vec<(Value, Value)>),
    PackedByteArray(Vec<u8>),
    PackedInt32Array(Vec<i32>),
    PackedInt64Array(Vec<i64>),
    PackedFloat32Array(Vec<f32>),
    PackedFloat64Array(Vec<f64>),
    PackedStringArray(Vec<String>),
    PackedVector2Array(Vec<[f32; 2]>),
    PackedVector3Array(Vec<[f32; 3]>),
    PackedVector4Array(Vec<[f32; 4]>),
    PackedColorArray(Vec<[f32; 4]>),
}

/// The Variant type of a [`Value`], named as Godot names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Nil,
    Bool,
    Int,
    Float,
    String,
    StringName,
    NodePath,
    Vector2,
    Vector2i,
    Vector3,
    Vector3i,
    Vector4,
    Vector4i,
    Rect2,
    Rect2i,
    Color,
    Quaternion,
    Basis,
    Transform2D,
    Transform3D,
    Array,
    Dictionary,
    PackedByteArray,
    PackedInt32Array,
    PackedInt64Array,
    PackedFloat32Array,
    PackedFloat64Array,
    PackedStringArray,
    PackedVector2Array,
    PackedVector3Array,
    PackedVector4Array,
    PackedColorArray,
}

impl ValueKind {
    /// Godot's name of the type (`Variant.get_type_name`).
    pub fn name(self) -> &'static str {
        use ValueKind::*;
        match self {
            Nil => "Nil",
            Bool => "bool",
            Int => "int",
            Float => "float",
            String => "String",
            StringName => "StringName",
            NodePath => "NodePath",
            Vector2 => "Vector2",
            Vector2i => "Vector2i",
            Vector3 => "Vector3",
            Vector3i => "Vector3i",
            Vector4 => "Vector4",
            Vector4i => "Vector4i",
            Rect2 => "Rect2",
            Rect2i => "Rect2i",
            Color => "Color",
            Quaternion => "Quaternion",
            Basis => "Basis",
            Transform2D => "Transform2D",
            Transform3D => "Transform3D",
            Array => "Array",
            Dictionary => "Dictionary",
            PackedByteArray => "PackedByteArray",
            PackedInt32Array => "PackedInt32Array",
            PackedInt64Array => "PackedInt64Array",
            PackedFloat32Array => "PackedFloat32Array",
            PackedFloat64Array => "PackedFloat64Array",
            PackedStringArray => "PackedStringArray",
            PackedVector2Array => "PackedVector2Array",
            PackedVector3Array => "PackedVector3Array",
            PackedVector4Array => "PackedVector4Array",
            PackedColorArray => "PackedColorArray",
        }
    }
}

impl Value {
    /// True if dropping this value frees nothing: scalars and fixed-size math types, which
    /// own no heap memory (so a caller may skip their drop on a hot path).
    #[inline]
    pub fn owns_no_heap(&self) -> bool {
        use Value as V;
        match self {
            V::Nil
            | V::Bool(_)
            | V::Int(_)
            | V::Float(_)
            | V::Vector2(_)
            | V::Vector2i(_)
            | V::Vector3(_)
            | V::Vector3i(_)
            | V::Vector4(_)
            | V::Vector4i(_)
            | V::Rect2(_)
            | V::Rect2i(_)
            | V::Color(_)
            | V::Quaternion(_)
            | V::Basis(_)
            | V::Transform2D(_)
            | V::Transform3D(_) => true,
            V::String(_)
            | V::StringName(_)
            | V::NodePath(_)
            | V::Array(_)
            | V::Dictionary(_)
            | V::PackedByteArray(_)
            | V::PackedInt32Array(_)
            | V::PackedInt64Array(_)
            | V::PackedFloat32Array(_)
            | V::PackedFloat64Array(_)
            | V::PackedStringArray(_)
            | V::PackedVector2Array(_)
            | V::PackedVector3Array(_)
            | V::PackedVector4Array(_)
            | V::PackedColorArray(_) => false,
        }
    }

    /// The Variant type of this value.
    pub fn kind(&self) -> ValueKind {
        use Value as V;
        use ValueKind as K;
        match self {
            V::Nil => K::Nil,
            V::Bool(_) => K::Bool,
            V::Int(_) => K::Int,
            V::Float(_) => K::Float,
            V::String(_) => K::String,
            V::StringName(_) => K::StringName,
            V::NodePath(_) => K::NodePath,
            V::Vector2(_) => K::Vector2,
            V::Vector2i(_) => K::Vector2i,
            V::Vector3(_) => K::Vector3,
            V::Vector3i(_) => K::Vector3i,
            V::Vector4(_) => K::Vector4,
            V::Vector4i(_) => K::Vector4i,
            V::Rect2(_) => K::Rect2,
            V::Rect2i(_) => K::Rect2i,
            V::Color(_) => K::Color,
            V::Quaternion(_) => K::Quaternion,
            V::Basis(_) => K::Basis,
            V::Transform2D(_) => K::Transform2D,
            V::Transform3D(_) => K::Transform3D,
            V::Array(_) => K::Array,
            V::Dictionary(_) => K::Dictionary,
            V::PackedByteArray(_) => K::PackedByteArray,
            V::PackedInt32Array(_) => K::PackedInt32Array,
            V::PackedInt64Array(_) => K::PackedInt64Array,
            V::PackedFloat32Array(_) => K::PackedFloat32Array,
            V::PackedFloat64Array(_) => K::PackedFloat64Array,
            V::PackedStringArray(_) => K::PackedStringArray,
            V::PackedVector2Array(_) => K::PackedVector2Array,
            V::PackedVector3Array(_) => K::PackedVector3Array,
            V::PackedVector4Array(_) => K::PackedVector4Array,
            V::PackedColorArray(_) => K::PackedColorArray,
        }
    }

    /// Canonical text used by dumps: the type, then the value, with floats in Rust's
    /// shortest round-trip form, so equal values always print alike.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = write_canonical(&mut s, self);
        s
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

fn floats(out: &mut String, xs: &[f32]) -> fmt::Result {
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{x:?}")?;
    }
    Ok(())
}

fn ints(out: &mut String, xs: &[i32]) -> fmt::Result {
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{x}")?;
    }
    Ok(())
}

fn list<T>(
    out: &mut String,
    xs: &[T],
    mut item: impl FnMut(&mut String, &T) -> fmt::Result,
) -> fmt::Result {
    out.push('[');
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, x)?;
    }
    out.push(']');
    Ok(())
}

fn write_canonical(out: &mut String, v: &Value) -> fmt::Result {
    use Value as V;
    let name = v.kind().name();
    match v {
        V::Nil => out.push_str("null"),
        V::Bool(b) => write!(out, "{b}")?,
        V::Int(i) => write!(out, "{i}")?,
        V::Float(x) => write!(out, "float({x:?})")?,
        V::String(s) => write!(out, "{s:?}")?,
        V::StringName(s) => write!(out, "&{s:?}")?,
        V::NodePath(s) => write!(out, "^{s:?}")?,
        V::Vector2(a) => wrap(out, name, |o| floats(o, a))?,
        V::Vector3(a) => wrap(out, name, |o| floats(o, a))?,
        V::Vector4(a) | V::Rect2(a) | V::Color(a) | V::Quaternion(a) => {
            wrap(out, name, |o| floats(o, a))?
        }
        V::Basis(a) => wrap(out, name, |o| floats(o, a))?,
        V::Transform2D(a) => wrap(out, name, |o| floats(o, a))?,
        V::Transform3D(a) => wrap(out, name, |o| floats(o, a))?,
        V::Vector2i(a) => wrap(out, name, |o| ints(o, a))?,
        V::Vector3i(a) => wrap(out, name, |o| ints(o, a))?,
        V::Vector4i(a) | V::Rect2i(a) => wrap(out, name, |o| ints(o, a))?,
        V::Array(xs) => list(out, xs, write_canonical)?,
        V::Dictionary(kv) => {
            out.push('{');
            for (i, (k, v)) in kv.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_canonical(out, k)?;
                out.push_str(": ");
                write_canonical(out, v)?;
            }
            out.push('}');
        }
        V::PackedByteArray(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x}")))?,
        V::PackedInt32Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x}")))?,
        V::PackedInt64Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x}")))?,
        V::PackedFloat32Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x:?}")))?,
        V::PackedFloat64Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x:?}")))?,
        V::PackedStringArray(xs) => wrap(out, name, |o| list(o, xs, |o, x| write!(o, "{x:?}")))?,
        V::PackedVector2Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| paren(o, x)))?,
        V::PackedVector3Array(xs) => wrap(out, name, |o| list(o, xs, |o, x| paren(o, x)))?,
        V::PackedVector4Array(xs) | V::PackedColorArray(xs) => {
            wrap(out, name, |o| list(o, xs, |o, x| paren(o, x)))?
        }
    }
    Ok(())
}

fn wrap(
    out: &mut String,
    name: &str,
    inner: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    out.push_str(name);
    out.push('(');
    inner(out)?;
    out.push(')');
    Ok(())
}

fn paren(out: &mut String, xs: &[f32]) -> fmt::Result {
    out.push('(');
    floats(out, xs)?;
    out.push(')');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(Value::Int(5).canonical(), "5");
        assert_eq!(Value::Float(0.5).canonical(), "float(0.5)");
        assert_eq!(Value::Float(1.0).canonical(), "float(1.0)");
        assert_eq!(Value::String("a\"b".into()).canonical(), "\"a\\\"b\"");
        assert_eq!(Value::Vector2([1.0, 2.5]).canonical(), "Vector2(1.0, 2.5)");
        assert_eq!(
            Value::Vector3i([1, -2, 3]).canonical(),
            "Vector3i(1, -2, 3)"
        );
        assert_eq!(
            Value::Dictionary(vec![(
                Value::StringName("k".into()),
                Value::Array(vec![Value::Nil])
            )])
            .canonical(),
            "{&\"k\": [null]}"
        );
        assert_eq!(
            Value::PackedVector2Array(vec![[0.0, 1.0]]).canonical(),
            "PackedVector2Array([(0.0, 1.0)])"
        );
    }

    #[test]
    fn kind_names_match_godot() {
        assert_eq!(Value::Transform3D([0.0; 12]).kind().name(), "Transform3D");
        assert_eq!(
            Value::PackedColorArray(vec![]).kind().name(),
            "PackedColorArray"
        );
    }
}
