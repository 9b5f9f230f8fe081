//! Variant <-> [`Value`]: the typed encoding of the Variant types synctree replicates.
//! Anything else is refused at call time with an error naming the type.

use godot::builtin::*;
use godot::meta::ToGodot;
use godot::obj::EngineEnum;
use synctree_proto::{Value, MAX_VALUE_DEPTH};

fn v2(v: Vector2) -> [f32; 2] {
    [v.x, v.y]
}
fn v3(v: Vector3) -> [f32; 3] {
    [v.x, v.y, v.z]
}
fn v4(v: Vector4) -> [f32; 4] {
    [v.x, v.y, v.z, v.w]
}
fn c4(c: Color) -> [f32; 4] {
    [c.r, c.g, c.b, c.a]
}

fn get<T: godot::meta::FromGodot>(v: &Variant) -> Result<T, String> {
    v.try_to::<T>()
        .map_err(|e| format!("cannot read {:?}: {e}", v.get_type()))
}

/// Converts a Variant to a replicable value, or names the type that cannot be replicated.
/// Arrays and dictionaries nest at most [`MAX_VALUE_DEPTH`] deep (which also stops an array
/// that contains itself).
pub fn to_value(v: &Variant) -> Result<Value, String> {
    to_value_at(v, 0)
}

fn to_value_at(v: &Variant, depth: usize) -> Result<Value, String> {
    use VariantType as T;
    if depth > MAX_VALUE_DEPTH {
        return Err(format!(
            "arrays and dictionaries nest deeper than {MAX_VALUE_DEPTH} levels (or contain themselves)"
        ));
    }
    let to_value = |x: &Variant| to_value_at(x, depth + 1);
    Ok(match v.get_type() {
        T::NIL => Value::Nil,
        T::BOOL => Value::Bool(get(v)?),
        T::INT => Value::Int(get(v)?),
        T::FLOAT => Value::Float(get(v)?),
        T::STRING => Value::String(get::<GString>(v)?.to_string()),
        T::STRING_NAME => Value::StringName(get::<StringName>(v)?.to_string()),
        T::NODE_PATH => Value::NodePath(get::<NodePath>(v)?.to_string()),
        T::VECTOR2 => Value::Vector2(v2(get(v)?)),
        T::VECTOR2I => {
            let x: Vector2i = get(v)?;
            Value::Vector2i([x.x, x.y])
        }
        T::VECTOR3 => Value::Vector3(v3(get(v)?)),
        T::VECTOR3I => {
            let x: Vector3i = get(v)?;
            Value::Vector3i([x.x, x.y, x.z])
        }
        T::VECTOR4 => Value::Vector4(v4(get(v)?)),
        T::VECTOR4I => {
            let x: Vector4i = get(v)?;
            Value::Vector4i([x.x, x.y, x.z, x.w])
        }
        T::RECT2 => {
            let r: Rect2 = get(v)?;
            Value::Rect2([r.position.x, r.position.y, r.size.x, r.size.y])
        }
        T::RECT2I => {
            let r: Rect2i = get(v)?;
            Value::Rect2i([r.position.x, r.position.y, r.size.x, r.size.y])
        }
        T::COLOR => Value::Color(c4(get(v)?)),
        T::QUATERNION => {
            let q: Quaternion = get(v)?;
            Value::Quaternion([q.x, q.y, q.z, q.w])
        }
        T::BASIS => {
            let b: Basis = get(v)?;
            let [x, y, z] = b.rows;
            Value::Basis([x.x, x.y, x.z, y.x, y.y, y.z, z.x, z.y, z.z])
        }
        T::TRANSFORM2D => {
            let t: Transform2D = get(v)?;
            Value::Transform2D([t.a.x, t.a.y, t.b.x, t.b.y, t.origin.x, t.origin.y])
        }
        T::TRANSFORM3D => {
            let t: Transform3D = get(v)?;
            let [x, y, z] = t.basis.rows;
            let o = t.origin;
            Value::Transform3D([x.x, x.y, x.z, y.x, y.y, y.z, z.x, z.y, z.z, o.x, o.y, o.z])
        }
        T::ARRAY => {
            let a: VarArray = get(v)?;
            Value::Array(a.iter_shared().map(|x| to_value(&x)).collect::<Result<_, _>>()?)
        }
        T::DICTIONARY => {
            let d: VarDictionary = get(v)?;
            Value::Dictionary(
                d.iter_shared().map(|(k, x)| Ok((to_value(&k)?, to_value(&x)?))).collect::<Result<_, String>>()?,
            )
        }
        T::PACKED_BYTE_ARRAY => Value::PackedByteArray(get::<PackedByteArray>(v)?.to_vec()),
        T::PACKED_INT32_ARRAY => Value::PackedInt32Array(get::<PackedInt32Array>(v)?.to_vec()),
        T::PACKED_INT64_ARRAY => Value::PackedInt64Array(get::<PackedInt64Array>(v)?.to_vec()),
        T::PACKED_FLOAT32_ARRAY => Value::PackedFloat32Array(get::<PackedFloat32Array>(v)?.to_vec()),
        T::PACKED_FLOAT64_ARRAY => Value::PackedFloat64Array(get::<PackedFloat64Array>(v)?.to_vec()),
        T::PACKED_STRING_ARRAY => Value::PackedStringArray(
            get::<PackedStringArray>(v)?.as_slice().iter().map(|s| s.to_string()).collect(),
        ),
        T::PACKED_VECTOR2_ARRAY => {
            Value::PackedVector2Array(get::<PackedVector2Array>(v)?.as_slice().iter().map(|x| v2(*x)).collect())
        }
        T::PACKED_VECTOR3_ARRAY => {
            Value::PackedVector3Array(get::<PackedVector3Array>(v)?.as_slice().iter().map(|x| v3(*x)).collect())
        }
        T::PACKED_VECTOR4_ARRAY => {
            Value::PackedVector4Array(get::<PackedVector4Array>(v)?.as_slice().iter().map(|x| v4(*x)).collect())
        }
        T::PACKED_COLOR_ARRAY => {
            Value::PackedColorArray(get::<PackedColorArray>(v)?.as_slice().iter().map(|x| c4(*x)).collect())
        }
        other => {
            return Err(format!(
                "values of type {} cannot be synced (supported: bool, int, float, String, StringName, \
                 NodePath, vectors, Rect2, Color, Quaternion, Basis, Transform2D/3D, Array, Dictionary, \
                 Packed*Array)",
                type_name(other)
            ))
        }
    })
}

/// Godot's own name of a Variant type (`type_string()`), e.g. `Callable`, `Object`.
fn type_name(t: VariantType) -> String {
    godot::global::type_string(t.ord() as i64).to_string()
}

/// Converts a committed value back to a Variant.
#[inline]
pub fn from_value(v: &Value) -> Variant {
    // The scalars games write most, without a call.
    match v {
        Value::Int(i) => i.to_variant(),
        Value::Float(f) => f.to_variant(),
        Value::Bool(b) => b.to_variant(),
        _ => from_other_value(v),
    }
}

#[inline(never)]
fn from_other_value(v: &Value) -> Variant {
    match v {
        Value::Nil => Variant::nil(),
        Value::Bool(b) => b.to_variant(),
        Value::Int(i) => i.to_variant(),
        Value::Float(f) => f.to_variant(),
        Value::String(s) => GString::from(s.as_str()).to_variant(),
        Value::StringName(s) => StringName::from(s.as_str()).to_variant(),
        Value::NodePath(s) => NodePath::from(s.as_str()).to_variant(),
        Value::Vector2([x, y]) => Vector2::new(*x, *y).to_variant(),
        Value::Vector2i([x, y]) => Vector2i::new(*x, *y).to_variant(),
        Value::Vector3([x, y, z]) => Vector3::new(*x, *y, *z).to_variant(),
        Value::Vector3i([x, y, z]) => Vector3i::new(*x, *y, *z).to_variant(),
        Value::Vector4([x, y, z, w]) => Vector4::new(*x, *y, *z, *w).to_variant(),
        Value::Vector4i([x, y, z, w]) => Vector4i::new(*x, *y, *z, *w).to_variant(),
        Value::Rect2([x, y, w, h]) => Rect2::from_components(*x, *y, *w, *h).to_variant(),
        Value::Rect2i([x, y, w, h]) => Rect2i::from_components(*x, *y, *w, *h).to_variant(),
        Value::Color([r, g, b, a]) => Color::from_rgba(*r, *g, *b, *a).to_variant(),
        Value::Quaternion([x, y, z, w]) => Quaternion::new(*x, *y, *z, *w).to_variant(),
        Value::Basis(m) => basis(m).to_variant(),
        Value::Transform2D([ax, ay, bx, by, ox, oy]) => Transform2D::from_cols(
            Vector2::new(*ax, *ay),
            Vector2::new(*bx, *by),
            Vector2::new(*ox, *oy),
        )
        .to_variant(),
        Value::Transform3D(m) => {
            let mut b = [0.0; 9];
            b.copy_from_slice(&m[..9]);
            Transform3D::new(basis(&b), Vector3::new(m[9], m[10], m[11])).to_variant()
        }
        Value::Array(xs) => {
            let mut a = VarArray::new();
            for x in xs {
                a.push(&from_value(x));
            }
            a.to_variant()
        }
        Value::Dictionary(kv) => {
            let mut d = VarDictionary::new();
            for (k, x) in kv {
                d.set(&from_value(k), &from_value(x));
            }
            d.to_variant()
        }
        Value::PackedByteArray(xs) => PackedByteArray::from(xs.as_slice()).to_variant(),
        Value::PackedInt32Array(xs) => PackedInt32Array::from(xs.as_slice()).to_variant(),
        Value::PackedInt64Array(xs) => PackedInt64Array::from(xs.as_slice()).to_variant(),
        Value::PackedFloat32Array(xs) => PackedFloat32Array::from(xs.as_slice()).to_variant(),
        Value::PackedFloat64Array(xs) => PackedFloat64Array::from(xs.as_slice()).to_variant(),
        Value::PackedStringArray(xs) => {
            let v: Vec<GString> = xs.iter().map(|s| GString::from(s.as_str())).collect();
            PackedStringArray::from(v.as_slice()).to_variant()
        }
        Value::PackedVector2Array(xs) => {
            let v: Vec<Vector2> = xs.iter().map(|[x, y]| Vector2::new(*x, *y)).collect();
            PackedVector2Array::from(v.as_slice()).to_variant()
        }
        Value::PackedVector3Array(xs) => {
            let v: Vec<Vector3> = xs
                .iter()
                .map(|[x, y, z]| Vector3::new(*x, *y, *z))
                .collect();
            PackedVector3Array::from(v.as_slice()).to_variant()
        }
        Value::PackedVector4Array(xs) => {
            let v: Vec<Vector4> = xs
                .iter()
                .map(|[x, y, z, w]| Vector4::new(*x, *y, *z, *w))
                .collect();
            PackedVector4Array::from(v.as_slice()).to_variant()
        }
        Value::PackedColorArray(xs) => {
            let v: Vec<Color> = xs
                .iter()
                .map(|[r, g, b, a]| Color::from_rgba(*r, *g, *b, *a))
                .collect();
            PackedColorArray::from(v.as_slice()).to_variant()
        }
    }
}

fn basis(m: &[f32; 9]) -> Basis {
    Basis::from_rows(
        Vector3::new(m[0], m[1], m[2]),
        Vector3::new(m[3], m[4], m[5]),
        Vector3::new(m[6], m[7], m[8]),
    )
}
