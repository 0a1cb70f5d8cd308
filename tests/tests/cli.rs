//! End-to-end tests of `medchain keygen`, `init`, `config check` and `--version` through the real
//! binary.

use std::os::unix::fs::PermissionsExt;

use medchain_tests::{medchain, medchain_with_env, text};

#[test]
fn version_and_help() {
    let out = medchain(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out).0.starts_with("medchain "), "{:?}", text(&out));
    for sub in [
        &["--help"][..],
        &["keygen", "--help"],
        &["init", "--help"],
        &["config", "check", "--help"],
    ] {
        let out = medchain(sub);
        assert!(out.status.success(), "{sub:?}");
        assert!(text(&out).0.contains("Usage: medchain"), "{sub:?}");
    }
}

#[test]
fn keygen_encrypted_with_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret passphrase\n").unwrap();
    let key = dir.path().join("doctor.key");
    let out = medchain(&[
        "keygen",
        "--out",
        key.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let id_line = stdout.lines().find(|l| l.starts_with("identity:")).unwrap();
    let id = id_line.split_whitespace().nth(1).unwrap();
    assert!(id.starts_with("mcid1"), "{id}");
    assert!(stdout.contains("encrypted, argon2id"));

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = std::fs::read_to_string(&key).unwrap();
    assert!(file.contains(id) && file.contains("\"kind\": \"encrypted\""));

    // The file opens with the password and yields the printed identity.
    let keys = medchain_crypto::keystore::read_key_file(&key, Some("s3cret passphrase")).unwrap();
    assert_eq!(keys.signing_key().identity().to_string(), id);

    // Never overwrites an existing key.
    let again = medchain(&[
        "keygen",
        "--out",
        key.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).1.contains("refusing to overwrite"),
        "{:?}",
        text(&again)
    );
}

#[test]
fn keygen_without_password_source_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let out = medchain(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains("--password-file") && err.contains("MEDCHAIN_PASSWORD"),
        "{err}"
    );
    assert!(!key.exists(), "nothing written on failure");

    let out = medchain_with_env(
        &["keygen", "--out", key.to_str().unwrap()],
        &[("MEDCHAIN_PASSWORD", "pw")],
    );
    assert!(out.status.success(), "{:?}", text(&out));
}

#[test]
fn init_writes_a_home_that_checks_after_adding_validators() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node0");
    let out = medchain(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--insecure-plaintext",
        "--chain-id",
        "hospital-a",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("identity:  mcid1"), "{stdout}");
    for f in ["config.toml", "genesis.toml", "keys/node.key"] {
        assert!(home.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::metadata(home.join("keys/node.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // The template has one validator: config check names the problem and the fix.
    let out = medchain(&["config", "check", "--home", home.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains("genesis.toml") && err.contains("`validators`"),
        "{err}"
    );
    assert!(
        err.contains("PBFT needs at least 4") && err.contains("fix:"),
        "{err}"
    );

    assert!(
        err.contains("`authorities`") && err.contains("nobody could register"),
        "{err}"
    );

    // Add three more replicas' identities and a registration authority, as an operator would.
    let mut genesis = std::fs::read_to_string(home.join("genesis.toml")).unwrap();
    for i in 1..5 {
        let key = dir.path().join(format!("n{i}.key"));
        let out = medchain(&[
            "keygen",
            "--out",
            key.to_str().unwrap(),
            "--insecure-plaintext",
        ]);
        let stdout = text(&out).0;
        let id = stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        if i == 4 {
            genesis.push_str(&format!(
                "\n[[authorities]]\nname = \"records office\"\nidentity = \"{id}\"\n"
            ));
        } else {
            genesis.push_str(&format!(
                "\n[[validators]]\nname = \"node{i}\"\nidentity = \"{id}\"\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n",
                26656 + i
            ));
        }
    }
    std::fs::write(home.join("genesis.toml"), genesis).unwrap();
    let out = medchain(&["config", "check", "--home", home.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("4 validators"));

    // A typo in a field is named with the file.
    let cfg = std::fs::read_to_string(home.join("config.toml")).unwrap();
    std::fs::write(home.join("config.toml"), cfg.replace("data_dir", "datadir")).unwrap();
    let out = medchain(&["config", "check", "--home", home.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains("config.toml") && err.contains("datadir"),
        "{err}"
    );

    // init refuses to reuse a non-empty home.
    let out = medchain(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--insecure-plaintext",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("not empty"));
}

#[test]
fn json_logs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let out = medchain(&[
        "--log-format",
        "json",
        "keygen",
        "--out",
        key.to_str().unwrap(),
        "--insecure-plaintext",
    ]);
    assert!(out.status.success());
    let stderr = text(&out).1;
    let line = stderr
        .lines()
        .find(|l| l.contains("UNENCRYPTED"))
        .expect("warning logged");
    let v: serde_json::Value = serde_json::from_str(line).expect("log line is JSON");
    assert_eq!(v["level"], "WARN");
}

/// The README's main command, in its non-interactive form: a 4-node devnet, the scripted record
/// workflow, a clean stop.
#[test]
fn devnet_runs_the_record_demo_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let base = (35_000 + (std::process::id() % 200) * 150) as u16;
    let out = medchain(&[
        "devnet",
        "--dir",
        dir.path().join("dn").to_str().unwrap(),
        "--exit-after-demo",
        "--base-port",
        &base.to_string(),
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}\n{e}");
    for needle in [
        "registered two doctors and a patient",
        "Dr B's read was refused and audited",
        "identical to what Dr A wrote",
        "stored ciphertext intact",
        "demo done; stopping the nodes",
    ] {
        assert!(o.contains(needle), "{needle:?} missing:\n{o}\n{e}");
    }
}
