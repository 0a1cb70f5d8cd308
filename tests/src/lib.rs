//! Test harness of medchain: helpers for multi-process end-to-end tests of the real `medchain`
//! binary (and, as the consensus issues land, the deterministic simulator).
//!
//! It drives the binary as a separate process and must not link the node's internals, so that the
//! tests see exactly what an operator sees.

pub mod devnet;
pub mod sim;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of the `medchain` binary built by this same `cargo test --workspace` invocation.
pub fn medchain_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/medchain
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("medchain");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// Runs `medchain` with `args`, no stdin, and returns its output.
pub fn medchain(args: &[&str]) -> Output {
    medchain_with_env(args, &[])
}

/// Runs `medchain` with extra environment variables.
pub fn medchain_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(medchain_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .env_remove("MEDCHAIN_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("medchain runs")
}

/// stdout and stderr of a finished command, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
