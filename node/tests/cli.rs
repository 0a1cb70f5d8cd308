//! End-to-end tests of `medchain keygen`, `init`, `config check` and `--version` through the real
//! binary.

use std::os::unix::fs::PermissionsExt;

mod support;

use support::{medchain, medchain_with_env, text};

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
    let base = support::base_port(23_800, 110, 30);
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
        "took the patient's keys from a proof: verified against block",
        "certificate of 3 of 4 validators",
        "Dr B's read was refused and audited",
        "identical to what Dr A wrote",
        "stored ciphertext intact",
        "demo done; stopping the nodes",
    ] {
        assert!(o.contains(needle), "{needle:?} missing:\n{o}\n{e}");
    }
}

/// A genesis built with `medchain genesis` from key cards; the node refuses to start on exactly
/// what `config check` reports (unsafe settings outside development, a data folder of another
/// genesis), with the same messages.
#[test]
#[allow(clippy::disallowed_methods)] // waits for a real process
fn node_refuses_to_start_on_what_config_check_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let port = support::base_port(27_200, 110, 7);
    let ok = |args: &[&str]| {
        let out = medchain(args);
        assert!(out.status.success(), "{args:?}: {:?}", text(&out));
        text(&out).0
    };
    for i in 0..4 {
        ok(&[
            "init",
            "--home",
            &path(&format!("n{i}")),
            "--insecure-plaintext",
            "--chain-id",
            "hospital-t",
            "--p2p-listen",
            &format!("/ip4/127.0.0.1/tcp/{}", port + i),
            "--api-listen",
            &format!("127.0.0.1:{}", port + 100 + i),
        ]);
    }
    ok(&[
        "keygen",
        "--out",
        &path("office.key"),
        "--insecure-plaintext",
    ]);
    let genesis = path("genesis.toml");
    ok(&[
        "genesis",
        "new",
        "--out",
        &genesis,
        "--chain-id",
        "hospital-t",
        "--development",
    ]);
    for i in 0..4 {
        let added = ok(&[
            "genesis",
            "add-validator",
            "--genesis",
            &genesis,
            "--card",
            &path(&format!("n{i}/keys/node.card.json")),
            "--name",
            &format!("n{i}"),
            "--address",
            &format!("/ip4/127.0.0.1/tcp/{}", port + i),
        ]);
        assert!(
            added.contains(&format!("{} validator(s)", i + 1)),
            "{added}"
        );
    }
    // A card already in the genesis, and a malformed address, are refused.
    let again = medchain(&[
        "genesis",
        "add-authority",
        "--genesis",
        &genesis,
        "--card",
        &path("n0/keys/node.card.json"),
        "--name",
        "office",
    ]);
    assert!(!again.status.success() && text(&again).1.contains("already a validator"));
    let bad = medchain(&[
        "genesis",
        "add-validator",
        "--genesis",
        &genesis,
        "--card",
        &path("office.card.json"),
        "--name",
        "x",
        "--address",
        "10.0.0.1:26656",
    ]);
    assert!(!bad.status.success() && text(&bad).1.contains("not a libp2p multiaddr"));
    ok(&[
        "genesis",
        "add-authority",
        "--genesis",
        &genesis,
        "--card",
        &path("office.card.json"),
        "--name",
        "office",
    ]);
    std::fs::copy(&genesis, dir.path().join("n0/genesis.toml")).unwrap();
    let home = path("n0");
    let checked = ok(&["config", "check", "--home", &home]);
    assert!(checked.contains("4 validators, 1 authorities"), "{checked}");
    assert!(checked.contains("genesis hash: "), "{checked}");

    // Run, checked the same way: both refuse, with the same problem lines.
    let refused_alike = |needle: &str| {
        let check = medchain(&["config", "check", "--home", &home]);
        let run = medchain(&["run", "--home", &home]);
        assert!(!check.status.success() && !run.status.success());
        let (c, r) = (text(&check).1, text(&run).1);
        let line = c
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {c}"));
        assert!(r.contains(line.trim()), "run said:\n{r}\ncheck said:\n{c}");
    };
    let config = dir.path().join("n0/config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        original.replace("development = true", "development = false"),
    )
    .unwrap();
    refused_alike("the key file is not encrypted");
    let open_api = original.replace(
        &format!("127.0.0.1:{}", port + 100),
        &format!("0.0.0.0:{}", port + 100),
    );
    std::fs::write(
        &config,
        open_api.replace("development = true", "development = false"),
    )
    .unwrap();
    refused_alike("exposes the client API beyond this machine");
    std::fs::write(&config, &original).unwrap();

    // The first start pins the data folder to this genesis...
    let mut node = std::process::Command::new(support::medchain_bin())
        .args(["run", "--home", &home])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("127.0.0.1:{}", port + 100);
    let mut up = false;
    for _ in 0..100 {
        if support::devnet::http(&api, "GET", "/health", None).is_some() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = node.kill();
    let _ = node.wait();
    assert!(up, "the node did not start");
    // ...so an edited genesis is refused over that data, by both.
    let g0 = dir.path().join("n0/genesis.toml");
    let text0 = std::fs::read_to_string(&g0).unwrap();
    std::fs::write(
        &g0,
        text0.replace("block_interval_ms = 200", "block_interval_ms = 300"),
    )
    .unwrap();
    let check = medchain(&["config", "check", "--home", &home]);
    let run = medchain(&["run", "--home", &home]);
    assert!(!check.status.success() && !run.status.success());
    for out in [&check, &run] {
        let err = text(out).1;
        assert!(err.contains("belongs to the chain with genesis"), "{err}");
    }
}
