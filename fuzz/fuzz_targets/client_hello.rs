//! The hello a server reads from every new client connection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synctree_proto::fuzz::client_hello(data));
