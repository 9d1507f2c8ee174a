//! `xhttp-suite` holds the workspace's end-to-end tests (`tests/`) and benchmarks
//! (`benches/`). It has no code of its own; see the `xhttp` crate.
//!
//! The README is included below so that its example compiles with every `cargo test`.
#![doc = include_str!("../README.md")]
