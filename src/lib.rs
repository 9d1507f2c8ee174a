//! `xhttp-suite` holds the workspace's end-to-end tests (`tests/`) and benchmarks
//! (`benches/`). It has no code of its own; see the `xhttp` crate.
