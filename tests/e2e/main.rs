//! End-to-end tests against the NAT lab: one test binary, modules with shared
//! helpers (see `lab.rs`). Run as root with plain `cargo test --test e2e`; without
//! root the lab tests skip loudly, with `CI=true` that skip is a failure.

#[macro_use]
mod lab;

mod article;
mod cli;
mod corridor;
mod dht;
mod gpgsm;
mod hostile;
mod lab_sanity;
mod library;
mod loader;
mod mail;
mod nat;
mod netns;
mod plugins;
mod portmap;
mod relay;
mod ttl;
mod tunnel;
