//! Integration tests of synctree-net, one binary (faster to link), one module per feature.
//!
//! QUIC tests run real endpoints on 127.0.0.1 port 0 with certificates generated per test.

mod common;

mod certs;
mod datagrams;
mod mem_faults;
mod quic_auth;
mod quic_concurrency;
mod quic_latency;
mod quic_restart;
mod quic_roundtrip;
mod quic_violations;
