//! The demo's library part: the fleet of replica processes that both the demo's
//! `--processes` run and the fleet tests drive. See [`fleet`].

pub mod fleet;
