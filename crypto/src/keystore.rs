//! Key files.
//!
//! A key file holds one participant's master seed ([`KeyMaterial`]). By default the seed is sealed
//! with XChaCha20-Poly1305 under a key stretched from a password by Argon2id (64 MiB, 3 passes), so a
//! stolen file does not give the key away. The file is JSON so an operator can see what it is, and
//! it names its identity so the right file can be found without the password. A plaintext key file
//! exists only for local development networks and must be asked for explicitly.
//!
//! Files are written with mode 0600 through a temporary file and a rename, never over an existing
//! key, and a file readable by group or others is refused on load, as ssh does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::keys::KeyMaterial;
use crate::CryptoError;

const FILE_VERSION: u32 = 1;
/// Bounds on the KDF cost read from a file, so a crafted file cannot exhaust memory or time.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's recommended Argon2id floor is 19 MiB / 2 passes; we use 64 MiB / 3 passes.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// How the seed is protected on disk.
#[derive(Clone, Debug)]
pub enum Protection {
    /// Sealed under a password.
    Password {
        password: Zeroizing<String>,
        params: KdfParams,
    },
    /// Stored in the clear: only for local development networks.
    InsecurePlaintext,
}

// Unknown top-level fields are refused by `Body` (serde's `flatten` hands them to it).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    identity: Identity,
    #[serde(flatten)]
    body: Body,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Body {
    Encrypted {
        kdf: String,
        kdf_params: KdfParams,
        salt: String,
        cipher: String,
        nonce: String,
        ciphertext: String,
    },
    InsecurePlaintext {
        seed: String,
    },
}

fn err(path: &Path, reason: impl Into<String>) -> CryptoError {
    CryptoError::Keystore {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn stretch(
    path: &Path,
    password: &str,
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    if params.m_cost_kib > MAX_M_COST_KIB || params.t_cost > MAX_T_COST {
        return Err(err(path, "KDF cost parameters exceed the allowed maximum"));
    }
    let p = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| err(path, format!("invalid KDF parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(password.as_bytes(), salt, key.as_mut())
        .map_err(|e| err(path, format!("KDF failed: {e}")))?;
    Ok(key)
}

fn associated_data(identity: &Identity) -> Vec<u8> {
    format!("medchain keystore v{FILE_VERSION} {identity}").into_bytes()
}

/// Writes `keys` to `path` (which must not exist yet) with mode 0600.
pub fn write_key_file(
    path: &Path,
    keys: &KeyMaterial,
    protection: &Protection,
) -> Result<Identity, CryptoError> {
    if path.exists() {
        return Err(err(
            path,
            "file already exists; refusing to overwrite a key (move it away first)",
        ));
    }
    let identity = keys.signing_key().identity();
    let body = match protection {
        Protection::InsecurePlaintext => Body::InsecurePlaintext {
            seed: hex::encode(keys.seed()),
        },
        Protection::Password { password, params } => {
            if password.is_empty() {
                return Err(err(
                    path,
                    "the password is empty; choose a non-empty password",
                ));
            }
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let key = stretch(path, password, &salt, *params)?;
            let cipher = XChaCha20Poly1305::new(key.as_ref().into());
            let ciphertext = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: keys.seed(),
                        aad: &associated_data(&identity),
                    },
                )
                .map_err(|_| err(path, "sealing the key failed"))?;
            Body::Encrypted {
                kdf: "argon2id".into(),
                kdf_params: *params,
                salt: hex::encode(salt),
                cipher: "xchacha20poly1305".into(),
                nonce: hex::encode(nonce),
                ciphertext: hex::encode(ciphertext),
            }
        }
    };
    let file = KeyFile {
        version: FILE_VERSION,
        identity,
        body,
    };
    let json = serde_json::to_vec_pretty(&file).expect("key file serialises");
    write_private_file(path, &json)?;
    Ok(identity)
}

/// Writes `contents` to `path` with mode 0600, atomically (temporary file, fsync, rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), CryptoError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = dir {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// The identity a key file claims, readable without the password.
pub fn peek_identity(path: &Path) -> Result<Identity, CryptoError> {
    Ok(read_file(path)?.identity)
}

/// Whether a key file is stored without a password.
pub fn is_plaintext(path: &Path) -> Result<bool, CryptoError> {
    Ok(matches!(
        read_file(path)?.body,
        Body::InsecurePlaintext { .. }
    ))
}

fn read_file(path: &Path) -> Result<KeyFile, CryptoError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(
            path,
            format!(
                "permissions {mode:04o} let others read the key; run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    let file: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| err(path, format!("not a medchain key file: {e}")))?;
    if file.version != FILE_VERSION {
        return Err(err(
            path,
            format!(
                "key file version {} is not supported (this build reads version {FILE_VERSION})",
                file.version
            ),
        ));
    }
    Ok(file)
}

/// Loads a key file. `password` is required for an encrypted file and ignored for a plaintext one.
pub fn read_key_file(path: &Path, password: Option<&str>) -> Result<KeyMaterial, CryptoError> {
    let file = read_file(path)?;
    let hex_field = |name: &str, value: &str| {
        hex::decode(value).map_err(|_| err(path, format!("field `{name}` is not hex")))
    };
    let keys = match &file.body {
        Body::InsecurePlaintext { seed } => KeyMaterial::from_seed(&hex_field("seed", seed)?)
            .map_err(|e| err(path, e.to_string()))?,
        Body::Encrypted {
            kdf,
            kdf_params,
            salt,
            cipher,
            nonce,
            ciphertext,
        } => {
            if kdf != "argon2id" || cipher != "xchacha20poly1305" {
                return Err(err(
                    path,
                    format!("unsupported kdf {kdf:?} or cipher {cipher:?}"),
                ));
            }
            let password = password.ok_or_else(|| {
                err(
                    path,
                    "the key is encrypted: give its password (--password-file or MEDCHAIN_PASSWORD)",
                )
            })?;
            let nonce = hex_field("nonce", nonce)?;
            if nonce.len() != 24 {
                return Err(err(path, "field `nonce` must be 24 bytes"));
            }
            let key = stretch(path, password, &hex_field("salt", salt)?, *kdf_params)?;
            let seed = Zeroizing::new(
                XChaCha20Poly1305::new(key.as_ref().into())
                    .decrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &hex_field("ciphertext", ciphertext)?,
                            aad: &associated_data(&file.identity),
                        },
                    )
                    .map_err(|_| CryptoError::KeystorePassword {
                        path: path.to_path_buf(),
                    })?,
            );
            KeyMaterial::from_seed(&seed).map_err(|e| err(path, e.to_string()))?
        }
    };
    let derived = keys.signing_key().identity();
    if derived != file.identity {
        return Err(err(
            path,
            format!(
                "the key inside belongs to {derived}, but the file claims {}",
                file.identity
            ),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn pw(p: &str) -> Protection {
        Protection::Password {
            password: Zeroizing::new(p.to_string()),
            params: cheap(),
        }
    }

    #[test]
    fn encrypted_round_trip_mode_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let keys = KeyMaterial::generate();
        let id = write_key_file(&path, &keys, &pw("correct horse")).unwrap();
        assert_eq!(id, keys.signing_key().identity());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(peek_identity(&path).unwrap(), id);
        assert!(!is_plaintext(&path).unwrap());
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(keys.seed())));

        let back = read_key_file(&path, Some("correct horse")).unwrap();
        assert_eq!(back.seed(), keys.seed());
        assert!(matches!(
            read_key_file(&path, Some("wrong")),
            Err(CryptoError::KeystorePassword { .. })
        ));
        assert!(read_key_file(&path, None).is_err());
        assert!(
            write_key_file(&path, &keys, &pw("x")).is_err(),
            "must not overwrite"
        );
    }

    #[test]
    fn tampering_and_loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let keys = KeyMaterial::generate();
        write_key_file(&path, &keys, &pw("pw")).unwrap();

        // Swap the claimed identity for another: the AEAD's associated data no longer matches.
        let other = KeyMaterial::generate().signing_key().identity();
        let text = fs::read_to_string(&path).unwrap();
        let swapped = text.replace(
            &keys.signing_key().identity().to_string(),
            &other.to_string(),
        );
        fs::remove_file(&path).unwrap();
        write_private_file(&path, swapped.as_bytes()).unwrap();
        assert!(read_key_file(&path, Some("pw")).is_err());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&path, Some("pw")).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn plaintext_file_round_trips_and_checks_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        let keys = KeyMaterial::generate();
        write_key_file(&path, &keys, &Protection::InsecurePlaintext).unwrap();
        assert!(is_plaintext(&path).unwrap());
        assert_eq!(read_key_file(&path, None).unwrap().seed(), keys.seed());

        let text = fs::read_to_string(&path).unwrap();
        let other = KeyMaterial::generate();
        let forged = text.replace(&hex::encode(keys.seed()), &hex::encode(other.seed()));
        fs::remove_file(&path).unwrap();
        write_private_file(&path, forged.as_bytes()).unwrap();
        let e = read_key_file(&path, None).unwrap_err().to_string();
        assert!(e.contains("belongs to"), "{e}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.key");
        write_private_file(&path, b"{not json").unwrap();
        let e = read_key_file(&path, None).unwrap_err().to_string();
        assert!(e.contains("not a medchain key file"), "{e}");
    }
}
