//! Entry points for fuzzing every decoder of what game clients send a server, shared by the
//! cargo-fuzz targets in `fuzz/` and the smoke test that runs them on every test run
//! (`tests/fuzz_smoke.rs`). Each must return, without panicking, whatever the bytes.

use crate::{
    decode, ClientRequest, Hello, Op, Request, ShadowTree, MAX_HELLO_BYTES, MAX_REQUEST_BYTES,
    SERVER_PEER,
};

/// The hello a server reads first from a new client connection.
pub fn client_hello(data: &[u8]) {
    let _ = decode::<Hello>(data, MAX_HELLO_BYTES);
}

/// A request frame after the hello; a write goes on to the checks a state machine makes when
/// it applies (as the client, then as a server).
pub fn client_request(data: &[u8]) {
    let Ok(Request { request, .. }) = decode::<Request>(data, MAX_REQUEST_BYTES) else {
        return;
    };
    if let ClientRequest::Write(op) = request {
        let mut tree = sample_tree();
        let _ = tree.apply_as(77, op.clone());
        let _ = tree.apply_as(SERVER_PEER, op);
        let _ = tree.dump();
    }
}

/// A small tree with nodes of the servers and of peer 77.
fn sample_tree() -> ShadowTree {
    let mut t = ShadowTree::new();
    for (parent, name, owner) in [
        ("", "World", SERVER_PEER),
        ("World", "P77", 77),
        ("", "Free", SERVER_PEER),
    ] {
        let _ = t.apply(&Op::Spawn {
            parent: parent.into(),
            name: name.into(),
            scene: "Node".into(),
            props: vec![],
            owner,
        });
    }
    t
}
