//! A client's request frame, and the checks its write meets when it applies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synctree_proto::fuzz::client_request(data));
