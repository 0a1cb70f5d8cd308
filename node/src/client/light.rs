//! The light client's own state: a folder that holds the chain's genesis file (its trust root)
//! and every header it has verified, from block 1 on, without a single block body.
//!
//! Header-only sync (`medchain light sync`) fetches headers in pages and accepts a page only
//! when it links hash by hash onto the headers already kept and its newest certified header
//! carries 2f + 1 genesis validators' signatures: one certificate vouches for every header
//! before it, so catching up over thousands of blocks costs one certificate check a page.
//! Client commands given the folder (`--light DIR`) refuse a proof against a header older than
//! the newest one kept (a stale state) or different from the one kept at its height (a fork),
//! and extend the kept headers up to each header they verify.
//!
//! Headers are appended to `headers.bin` (a `u32` length, big-endian, then the canonical
//! header) and synced before the client uses them; a torn last record, from a crash in the
//! middle of an append, is cut off when the folder is opened again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use medchain_api::ApiClient;
use medchain_crypto::Hash32;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::v1;

use super::verify::{Anchor, VerifiedHeader, VerifyError};

/// The genesis file kept in the folder.
pub const GENESIS_FILE: &str = "genesis.toml";

pub mod folders;
/// The verified headers.
pub const HEADERS_FILE: &str = "headers.bin";
/// Headers asked for in one request (the node's most).
pub const PAGE: u64 = 1_000;

/// Why the light client's folder or a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum LightError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} holds no genesis file: make it with `medchain light sync --genesis FILE --light {0}`"
    )]
    NoGenesis(PathBuf),
    #[error("{path}: {reason}")]
    Genesis { path: PathBuf, reason: String },
    #[error("--genesis {given} is of another chain (genesis hash {given_hash}) than the light client's folder {dir} (genesis hash {kept_hash}): use another --light folder for another chain")]
    OtherGenesis {
        given: PathBuf,
        given_hash: String,
        dir: PathBuf,
        kept_hash: String,
    },
    #[error("{path} is damaged at header {height}: {reason}; delete the folder and sync again")]
    Damaged {
        path: PathBuf,
        height: u64,
        reason: String,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("the node's header list: {0}")]
    Api(#[from] medchain_api::ClientError),
}

/// The folder: its anchor and its headers, block 1 first.
#[derive(Debug)]
pub struct LightStore {
    dir: PathBuf,
    pub anchor: Anchor,
    /// The hash of the genesis file's fields, the chain's name for operators.
    pub genesis_hash: Hash32,
    headers: Vec<(v1::BlockHeader, Hash32)>,
}

impl LightStore {
    /// Opens (or, given a genesis file, makes) the folder `dir`. A genesis file given for a
    /// folder that has one must be of the same chain.
    pub fn open(dir: &Path, genesis: Option<&Path>) -> Result<LightStore, LightError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LightError::Io { path, source }
        };
        let kept = dir.join(GENESIS_FILE);
        if !kept.exists() {
            let Some(given) = genesis else {
                return Err(LightError::NoGenesis(dir.to_path_buf()));
            };
            load_anchor(given)?;
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let tmp = dir.join(format!("{GENESIS_FILE}.tmp"));
            std::fs::copy(given, &tmp).map_err(io(&tmp))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &kept).map_err(io(&kept))?;
        }
        let (anchor, genesis_hash) = load_anchor(&kept)?;
        if let Some(given) = genesis {
            let (_, given_hash) = load_anchor(given)?;
            if given_hash != genesis_hash {
                return Err(LightError::OtherGenesis {
                    given: given.to_path_buf(),
                    given_hash: given_hash.to_hex(),
                    dir: dir.to_path_buf(),
                    kept_hash: genesis_hash.to_hex(),
                });
            }
        }
        let mut store = LightStore {
            dir: dir.to_path_buf(),
            anchor,
            genesis_hash,
            headers: Vec::new(),
        };
        store.load_headers()?;
        Ok(store)
    }

    /// The newest header kept: its height and hash.
    pub fn tip(&self) -> Option<(u64, Hash32)> {
        self.headers.last().map(|(h, hash)| (h.height, *hash))
    }

    /// The kept header of block `height`.
    pub fn header(&self, height: u64) -> Option<&v1::BlockHeader> {
        let i = usize::try_from(height.checked_sub(1)?).ok()?;
        self.headers.get(i).map(|(h, _)| h)
    }

    fn hash_at(&self, height: u64) -> Option<Hash32> {
        let i = usize::try_from(height.checked_sub(1)?).ok()?;
        self.headers.get(i).map(|(_, hash)| *hash)
    }

    /// Keeps `run`, the headers after the tip in order, if they link onto it and the last of
    /// them is `certified` (which vouches for the ones before it through their links).
    pub fn accept(
        &mut self,
        run: Vec<v1::BlockHeader>,
        certified: &VerifiedHeader,
    ) -> Result<(), LightError> {
        let first = self.tip().map_or(1, |(h, _)| h + 1);
        let mut previous = self.tip().map_or(Hash32([0; 32]), |(_, hash)| hash);
        let mut linked = Vec::with_capacity(run.len());
        for (expected, header) in (first..).zip(run) {
            if header.height != expected {
                return Err(VerifyError::WrongHeight {
                    expected,
                    found: header.height,
                }
                .into());
            }
            if header.chain_id != self.anchor.chain_id {
                return Err(VerifyError::OtherChain {
                    height: expected,
                    expected: self.anchor.chain_id.clone(),
                    found: header.chain_id,
                }
                .into());
            }
            if header.previous_hash != previous.as_bytes() {
                return Err(VerifyError::BrokenLink { height: expected }.into());
            }
            previous = header.digest();
            linked.push((header, previous));
        }
        match linked.last() {
            Some((h, hash)) if h.height == certified.header.height && *hash == certified.hash => {}
            Some((h, _)) => {
                return Err(VerifyError::BrokenLink {
                    height: h.height.min(certified.header.height),
                }
                .into())
            }
            None => return Ok(()),
        }
        self.append(&linked)?;
        self.headers.extend(linked);
        Ok(())
    }

    /// Checks a header verified for an answer against the kept ones: older than the tip is
    /// stale, another hash at a kept height is a fork. A newer one is fine (the caller then
    /// syncs up to it).
    pub fn check(&self, header: &VerifiedHeader) -> Result<(), VerifyError> {
        let height = header.header.height;
        if let Some(kept) = self.hash_at(height) {
            if kept != header.hash {
                return Err(VerifyError::Fork {
                    height,
                    kept: kept.to_hex(),
                    shown: header.hash.to_hex(),
                });
            }
        }
        match self.tip() {
            Some((known, _)) if height < known => Err(VerifyError::Stale { height, known }),
            _ => Ok(()),
        }
    }

    /// Header-only sync from the tip up to block `until` (the node's newest certified block if
    /// `None`); returns the new tip's height. Pages whose newest header has no certificate yet
    /// are kept up to their newest certified header.
    pub async fn sync(&mut self, api: &ApiClient, until: Option<u64>) -> Result<u64, LightError> {
        loop {
            let from = self.tip().map_or(1, |(h, _)| h + 1);
            if until.is_some_and(|u| from > u) {
                break;
            }
            let count = until.map_or(PAGE, |u| (u + 1 - from).min(PAGE));
            let page = api.headers(from, count).await?;
            let mut run = Vec::with_capacity(page.headers.len());
            let mut certified = None;
            for (i, h) in page.headers.iter().enumerate() {
                let expected = from + i as u64;
                let bytes = hex::decode(&h.header).map_err(|e| VerifyError::MalformedHeader {
                    height: expected,
                    reason: format!("not hex: {e}"),
                })?;
                let header = v1::BlockHeader::decode_canonical(&bytes).map_err(|e| {
                    VerifyError::MalformedHeader {
                        height: expected,
                        reason: e.to_string(),
                    }
                })?;
                run.push(header);
                if h.certificate.is_some() {
                    certified = Some(i);
                }
            }
            // The newest certified header of the page vouches for those before it; the ones
            // after it wait for their certificate.
            let Some(last) = certified else { break };
            run.truncate(last + 1);
            let verified = self
                .anchor
                .verify_header(from + last as u64, &page.headers[last])?;
            self.accept(run, &verified)?;
            if page.headers.len() as u64 != count || last + 1 != page.headers.len() {
                break;
            }
        }
        Ok(self.tip().map_or(0, |(h, _)| h))
    }

    fn headers_path(&self) -> PathBuf {
        self.dir.join(HEADERS_FILE)
    }

    fn append(&self, run: &[(v1::BlockHeader, Hash32)]) -> Result<(), LightError> {
        let path = self.headers_path();
        let io = |source| LightError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        for (h, _) in run {
            let c = h.canonical_bytes();
            bytes.extend_from_slice(&(c.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&c);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads the kept headers, checking their links; cuts off a torn last record.
    fn load_headers(&mut self) -> Result<(), LightError> {
        let path = self.headers_path();
        let io = |source| LightError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let mut at = 0;
        let mut previous = Hash32([0; 32]);
        while at < bytes.len() {
            let height = self.headers.len() as u64 + 1;
            let len = bytes
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
            let Some(record) = len.and_then(|n| bytes.get(at + 4..at + 4 + n)) else {
                tracing::warn!(height, path = %path.display(), "cut off a torn last header");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(at as u64).and_then(|()| f.sync_all()))
                    .map_err(io)?;
                break;
            };
            let damaged = |reason: String| LightError::Damaged {
                path: path.clone(),
                height,
                reason,
            };
            let header =
                v1::BlockHeader::decode_canonical(record).map_err(|e| damaged(e.to_string()))?;
            if header.height != height || header.previous_hash != previous.as_bytes() {
                return Err(damaged("it does not link onto the header before it".into()));
            }
            previous = header.digest();
            self.headers.push((header, previous));
            at += 4 + record.len();
        }
        Ok(())
    }
}

/// The anchor of the genesis file `path`, and the file's hash.
fn load_anchor(path: &Path) -> Result<(Anchor, Hash32), LightError> {
    let (anchor, genesis) = Anchor::from_genesis_file(path).map_err(|e| LightError::Genesis {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    })?;
    Ok((anchor, genesis.hash()))
}

#[cfg(test)]
mod tests;
