//! docs/OPERATIONS.md works as written: every `sh` block of it runs, in order, in one bash
//! script (`set -euo pipefail`) in a fresh folder, with this build's `medchain` first on PATH.
//! The guide sets up a 4-replica hospital chain from nothing (keys, genesis, checks, start,
//! registration, backup, restore, rolling upgrade, stop); the test then checks the outcomes the
//! guide promises.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::medchain_bin;

/// The `sh` blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated sh block");
    blocks
}

#[test]
fn sh_blocks_are_extracted_in_order() {
    let md = "text\n```sh\na\nb\n```\n```ini\nno\n```\n```sh\nc\n```\n";
    assert_eq!(sh_blocks(md), vec!["a\nb\n", "c\n"]);
}

#[test]
#[allow(clippy::disallowed_methods)] // polls a real process tree with a deadline
fn operations_guide_runs_as_written() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md"),
    )
    .expect("docs/OPERATIONS.md");
    let blocks = sh_blocks(&doc);
    assert!(blocks.len() >= 12, "only {} sh blocks", blocks.len());
    let script = format!("set -euo pipefail\nset -x\n{}", blocks.concat());

    let dir = tempfile::tempdir().unwrap();
    let bin = medchain_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("MEDCHAIN_NODE")
        .env_remove("MEDCHAIN_PASSWORD")
        .env_remove("MEDCHAIN_KEY")
        .env_remove("MEDCHAIN_LOG")
        .env_remove("MEDCHAIN_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so every node the guide starts in the background can be
        // stopped even if the script fails halfway.
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let group = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let logs: String = (1..=4)
        .map(|i| {
            let log = std::fs::read_to_string(dir.path().join(format!("replica{i}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!(
                "--- replica{i}.log (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    let report = format!("stdout:\n{out}\nstderr (trace):\n{err}\n{logs}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the guide's commands failed or timed out (5 min):\n{report}"
    );

    // What the guide promises, seen in the commands' output.
    for expected in [
        "config and genesis are valid (private node of chain \"hospital-a\", 4 validators, 1 authorities)",
        "added authority records office",
        "ready       yes",
        "medchain_height ",
        "medchain_peers_connected 3",
        "registered ",
        "\"Dr Grey\"",
        "backed up replica4/data to backups/replica4-1",
        "\"sealed_proxy_fragments\": 0",
        "restored backups/replica4-1 into replica4/data",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{report}");
    }
    // The guide compared block 1 across the replicas; the files it wrote hold one hash.
    let hashes: std::collections::BTreeSet<String> = (1..=4)
        .map(|i| {
            let json = std::fs::read_to_string(dir.path().join(format!("block1-replica{i}.json")))
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["hash"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(hashes.len(), 1, "{hashes:?}");
}
