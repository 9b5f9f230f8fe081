//! The fuzz targets' entry points (`synctree_proto::fuzz`, run by cargo-fuzz from `fuzz/`) on
//! every test run: valid messages, every truncation of them, byte mutations, random bytes, and
//! inputs nested far deeper than any value may be, on a small stack. None may panic or
//! overflow the stack.

use synctree_proto::{
    encode, fuzz, ClientRequest, Hello, Op, PeerRpc, Request, Resume, Value,
    CLIENT_PROTOCOL_VERSION,
};

fn seeds() -> Vec<Vec<u8>> {
    let hello = Hello {
        version: CLIENT_PROTOCOL_VERSION,
        token: "token".into(),
        resume: Some(Resume {
            cluster: "c".into(),
            index: 9,
        }),
    };
    let requests = [
        ClientRequest::Write(Op::Spawn {
            parent: "World".into(),
            name: "N".into(),
            scene: "res://n.tscn".into(),
            props: vec![("hp".into(), Value::Int(3))],
            owner: 0,
        }),
        ClientRequest::Write(Op::SetProperty {
            path: "World/P77".into(),
            property: "position".into(),
            value: Value::Array(vec![Value::Vector2([1.0, 2.0]), Value::String("s".into())]),
        }),
        ClientRequest::Write(Op::Despawn {
            path: "World/P77".into(),
        }),
        ClientRequest::Write(Op::CompareAndSet {
            path: "Free".into(),
            property: "x".into(),
            expected: None,
            value: Value::Dictionary(vec![(Value::Int(1), Value::Nil)]),
        }),
        ClientRequest::Read {
            path: "World".into(),
            property: "x".into(),
        },
        ClientRequest::Rpc(PeerRpc {
            from: 0,
            to: -5,
            path: "/root/Game".into(),
            method: "m".into(),
            args: vec![1, 2, 3],
            ..Default::default()
        }),
    ];
    let mut out = vec![encode(&hello).unwrap()];
    out.extend(
        requests
            .into_iter()
            .map(|request| encode(&Request { id: 1, request }).unwrap()),
    );
    out
}

/// xorshift64: a fixed, dependency-free source of "random" bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run_all(data: &[u8]) {
    fuzz::client_hello(data);
    fuzz::client_request(data);
}

#[test]
fn decoders_of_client_input_survive_mutations_and_noise() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for seed in seeds() {
        for len in 0..=seed.len() {
            run_all(&seed[..len]);
            runs += 1;
        }
        for i in 0..seed.len() {
            for b in [0x00, 0xff, 0xc1, 0x7f, 0x80, 0xdc, 0xdf] {
                let mut m = seed.clone();
                m[i] = b;
                run_all(&m);
                runs += 1;
            }
        }
        for _ in 0..2000 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                m[i] = rng.next() as u8;
            }
            run_all(&m);
            runs += 1;
        }
    }
    for _ in 0..5000 {
        let len = (rng.next() % 300) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        run_all(&data);
        runs += 1;
    }
    assert!(runs > 20_000, "{runs}");
}

/// An encoded request setting property `x` of node `Free` to `value`.
fn set_x(value: Value) -> Vec<u8> {
    encode(&Request {
        id: 1,
        request: ClientRequest::Write(Op::SetProperty {
            path: "Free".into(),
            property: "x".into(),
            value,
        }),
    })
    .unwrap()
}

#[test]
fn deeply_nested_input_is_refused_without_exhausting_the_stack() {
    // A request whose value is an array nested 100 000 deep (fixarray of one, repeated),
    // decoded on a 256 KiB stack: the depth limit must stop it long before.
    let mut data = set_x(Value::Nil);
    data.pop(); // drop the Nil value's encoding ...
    data.extend(std::iter::repeat_n(0x91u8, 100_000)); // ... for 100 000 nested arrays
    data.push(0xc0);
    let data = std::sync::Arc::new(data);
    let d = data.clone();
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            run_all(&d[..d.len().min(60_000)]);
            assert!(synctree_proto::decode::<Request>(&d, usize::MAX).is_err());
            // The deepest value a Godot process may replicate decodes ...
            let mut ok = Value::Nil;
            for _ in 0..synctree_proto::MAX_VALUE_DEPTH {
                ok = Value::Array(vec![ok]);
            }
            let ok = set_x(ok);
            assert!(synctree_proto::decode::<Request>(&ok, usize::MAX).is_ok());
            // ... a well-formed value 200 arrays deep is refused for its depth.
            let mut v = Value::Nil;
            for _ in 0..200 {
                v = Value::Array(vec![v]);
            }
            let deep = set_x(v);
            let e = synctree_proto::decode::<Request>(&deep, usize::MAX)
                .expect_err("nesting beyond the limit is refused")
                .to_string();
            assert!(e.contains("depth limit"), "{e}");
            run_all(&deep);
        })
        .unwrap()
        .join()
        .expect("decoding deep nesting neither panicked nor overflowed");
}
