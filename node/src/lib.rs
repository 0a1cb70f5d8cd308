//! The medchain node as a library: command-line interface, configuration, and (as later issues land)
//! networking, the client API, ledger execution and the bridge. `main.rs` only parses arguments and
//! reports errors.
//!
//! This is the top of the dependency graph: it may use every other medchain crate, tokio, libp2p
//! and clap. `anyhow` is used only in the command handlers (the binary's edge); the configuration
//! module has typed errors.

#[macro_use]
mod output;

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod devnet;
pub mod driver;
pub mod genesis_cmd;
pub mod header_votes;
pub mod home_files;
pub mod logging;
pub mod mempool;
pub mod metrics;
pub mod net;
pub mod password;
pub mod private;
pub mod status;
pub mod views;
