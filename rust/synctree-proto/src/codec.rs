//! The wire and log encoding: MessagePack through rmp-serde, with a size bound on input.

use serde::{de::DeserializeOwned, Serialize};

/// Encoding or decoding failed; the message says which type and why.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: rmp_serde::encode::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: rmp_serde::decode::Error,
    },
    #[error("cannot decode {what}: {len} bytes exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// Encodes `value` as compact MessagePack (structs as arrays).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec(value).map_err(|source| CodecError::Encode {
        what: short_name::<T>(),
        source,
    })
}

/// The deepest nesting a decoded value may have (values inside arrays inside dictionaries
/// ...). Decoding recurses once per level: a crafted input nested thousands deep would
/// otherwise exhaust a thread's stack.
pub const MAX_DECODE_DEPTH: usize = 128;

/// Decodes a value from `bytes`, refusing inputs longer than `max` bytes or nested deeper than
/// [`MAX_DECODE_DEPTH`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            what: short_name::<T>(),
            len: bytes.len(),
            max,
        });
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DECODE_DEPTH);
    T::deserialize(&mut de).map_err(|source| CodecError::Decode {
        what: short_name::<T>(),
        source,
    })
}

fn short_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Clock, Event, Op, OpId, Value};

    /// One value of every supported Variant type, with awkward contents.
    pub(crate) fn every_value() -> Vec<Value> {
        vec![
            Value::Nil,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(-0.1),
            Value::Float(f64::INFINITY),
            Value::String("héllo \"world\"\n".into()),
            Value::StringName("speed".into()),
            Value::NodePath("../Other:position".into()),
            Value::Vector2([1.5, -2.0]),
            Value::Vector2i([i32::MAX, i32::MIN]),
            Value::Vector3([0.1, 0.2, 0.3]),
            Value::Vector3i([1, 2, 3]),
            Value::Vector4([1.0, 2.0, 3.0, 4.0]),
            Value::Vector4i([4, 3, 2, 1]),
            Value::Rect2([0.0, 0.0, 10.0, 20.0]),
            Value::Rect2i([0, 0, 10, 20]),
            Value::Color([1.0, 0.5, 0.25, 1.0]),
            Value::Quaternion([0.0, 0.0, 0.0, 1.0]),
            Value::Basis([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            Value::Transform2D([1.0, 0.0, 0.0, 1.0, 5.0, 6.0]),
            Value::Transform3D([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 7.0, 8.0, 9.0]),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::String("x".into())]),
            ]),
            Value::Dictionary(vec![
                (Value::String("b".into()), Value::Int(2)),
                (Value::Int(1), Value::Dictionary(vec![])),
            ]),
            Value::PackedByteArray(vec![0, 255, 7]),
            Value::PackedInt32Array(vec![-1, 0, 1]),
            Value::PackedInt64Array(vec![i64::MAX]),
            Value::PackedFloat32Array(vec![0.5, -0.0]),
            Value::PackedFloat64Array(vec![1e300]),
            Value::PackedStringArray(vec!["a".into(), "".into()]),
            Value::PackedVector2Array(vec![[1.0, 2.0]]),
            Value::PackedVector3Array(vec![[1.0, 2.0, 3.0]]),
            Value::PackedVector4Array(vec![[1.0, 2.0, 3.0, 4.0]]),
            Value::PackedColorArray(vec![[0.0, 0.0, 0.0, 1.0]]),
        ]
    }

    #[test]
    fn every_value_round_trips() {
        let values = every_value();
        // Each kind appears at least once.
        let kinds: std::collections::HashSet<_> = values.iter().map(|v| v.kind()).collect();
        assert_eq!(
            kinds.len(),
            32,
            "one value of each of the 32 supported kinds"
        );
        for v in values {
            let bytes = encode(&v).expect("encode");
            let back: Value = decode(&bytes, 1 << 20).expect("decode");
            assert_eq!(back, v, "round trip of {}", v.kind().name());
            assert_eq!(back.canonical(), v.canonical());
        }
    }

    #[test]
    fn encoded_batch_round_trips_inside_another_message() {
        let batch = Batch {
            origin: 3,
            seq: 9,
            events: vec![],
        };
        let encoded = crate::EncodedBatch::encode(&batch).expect("encode");
        assert_eq!(encoded.decode().expect("decode"), batch);
        // As a field of a log entry or an RPC: the bytes go through unchanged.
        let outer = encode(&(7u64, encoded.clone())).expect("encode outer");
        let (n, back): (u64, crate::EncodedBatch) = decode(&outer, 1 << 20).expect("decode outer");
        assert_eq!((n, back), (7, encoded));
        let garbage = crate::EncodedBatch::from_bytes(vec![0xc1u8, 0, 1]);
        let err = garbage
            .decode()
            .expect_err("garbage is refused")
            .to_string();
        assert!(err.contains("Batch"), "{err}");
    }

    #[test]
    fn batch_round_trips() {
        let clock = Clock::new(2, Clock::DEFAULT_MAX_DELTA);
        let batch = Batch {
            origin: 2,
            seq: 1,
            events: every_value()
                .into_iter()
                .enumerate()
                .map(|(i, value)| Event {
                    id: OpId {
                        origin: 2,
                        seq: i as u64,
                    },
                    stamp: clock.stamp(),
                    peer: 7,
                    op: Op::SetProperty {
                        path: "A/B".into(),
                        property: "p".into(),
                        value,
                    },
                })
                .collect(),
        };
        let bytes = encode(&batch).expect("encode");
        let back: Batch = decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(back, batch);
    }

    #[test]
    fn refuses_garbage_and_oversized_input() {
        let err = decode::<Batch>(&[0xc1, 0x00, 0x13], 1024).expect_err("garbage");
        assert!(err.to_string().contains("cannot decode Batch"), "{err}");
        let err = decode::<Batch>(&[0u8; 2048], 1024).expect_err("too large");
        assert!(
            err.to_string().contains("exceeds the limit of 1024"),
            "{err}"
        );
    }
}
