//! Helpers of the multi-process end-to-end tests of the real `medchain` binary.
//!
//! The tests live in the node package so that Cargo builds the `medchain` binary of the code under
//! test before it builds them and hands them its path (`CARGO_BIN_EXE_medchain`): no test can run
//! a binary left behind by an earlier build. They drive that binary as a separate process, as an
//! operator would, and link none of the node's internals.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod devnet;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `medchain` binary built from the code under test, by the same `cargo test`.
pub fn medchain_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_medchain"))
}

/// A file of public test data shipped with the tests (`node/tests/data/`, licences beside them).
pub fn test_data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
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

/// The first of `width` consecutive ports for one test, below Linux's ephemeral range (32768 and
/// up, where the kernel picks the local ports of outgoing connections, so a fixed port there can
/// be taken by any client at any moment: "Address already in use"). Each test file owns its own
/// band from `first`; the process id picks one of `slots` places in it, so two test runs at once
/// rarely meet.
pub fn base_port(first: u16, width: u16, slots: u32) -> u16 {
    let top = first as u32 + slots * width as u32;
    assert!(
        top < 32_768,
        "ports {first}..{top} reach the ephemeral range"
    );
    first + (std::process::id() % slots) as u16 * width
}

/// Makes a plaintext development key for each `(name, role)` in `users` (`NAME.key` and its
/// card `NAME.card.json`) with `medchain keygen`, and has the authority whose key file is
/// `authority` register it through the node API `api` with `medchain identity register`.
pub fn register_participants(api: &str, users: &Path, authority: &str, who: &[(&str, &str)]) {
    let node = format!("http://{api}");
    let run = |args: &[&str]| {
        let out = medchain_with_env(args, &[("MEDCHAIN_NODE", &node)]);
        let (o, e) = text(&out);
        assert!(out.status.success(), "medchain {args:?} failed:\n{o}\n{e}");
    };
    for (name, role) in who {
        let key = users.join(format!("{name}.key"));
        run(&[
            "keygen",
            "--out",
            key.to_str().unwrap(),
            "--insecure-plaintext",
        ]);
        let card = users.join(format!("{name}.card.json"));
        let mut args = vec![
            "identity",
            "register",
            "--card",
            card.to_str().unwrap(),
            "--role",
            role,
            "--key",
            authority,
        ];
        // A patient has no name on chain (rules 3).
        if *role != "patient" {
            args.extend(["--name", name]);
        }
        run(&args);
    }
}
