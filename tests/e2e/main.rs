//! End-to-end tests: each drives the real `gleaner` binary on temporary directories, the way a
//! user or Kubernetes does, and checks what it leaves behind.

#![allow(unreachable_pub)] // helpers are `pub` for sibling test modules only

mod supervisor;
mod support;

mod bad_input;
mod baseline;
mod campaign;
mod cleanup;
mod cli;
mod crash;
mod demo;
mod discovery;
mod docs;
mod drain;
mod errors;
mod fleet;
mod guards;
mod http;
mod identity;
mod labels;
mod lifecycle;
mod manifest;
mod once;
mod processors;
mod race;
mod readiness;
mod repair;
mod replay;
mod resources;
mod signals;
mod state;
