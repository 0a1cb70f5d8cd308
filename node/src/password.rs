//! Where key passwords come from: a file, the environment, or the terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A password, wiped from memory when dropped.
pub type Secret = zeroize::Zeroizing<String>;

pub const PASSWORD_ENV: &str = "MEDCHAIN_PASSWORD";

/// Reads a password: `--password-file`, else `MEDCHAIN_PASSWORD`, else a terminal prompt
/// (asked twice when `confirm`).
pub fn obtain(file: Option<&Path>, confirm: bool) -> Result<Secret> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("password file {} is empty", path.display());
        }
        return Ok(Secret::new(line));
    }
    if let Ok(pw) = std::env::var(PASSWORD_ENV) {
        if !pw.is_empty() {
            return Ok(Secret::new(pw));
        }
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "a key password is needed: pass --password-file FILE or set {PASSWORD_ENV} \
             (or --insecure-plaintext on a development network)"
        );
    }
    let pw = Secret::new(rpassword::prompt_password("Key password: ")?);
    if confirm {
        let again = Secret::new(rpassword::prompt_password("Repeat password: ")?);
        if *pw != *again {
            bail!("the passwords differ");
        }
    }
    Ok(pw)
}
