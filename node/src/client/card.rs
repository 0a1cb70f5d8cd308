//! A participant's public key card: identity, record-encryption key, keyword-search key and the
//! signature binding them. `medchain keygen` writes it beside the key file; the participant hands
//! it to the authority, which registers exactly these keys (and the chain checks the binding).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use medchain_crypto::keys::{EncryptionPublicKey, KeyBinding};
use medchain_crypto::search::SearchPublicKey;
use medchain_crypto::{Identity, Signature};
use medchain_proto::v1;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCard {
    pub identity: String,
    pub encryption_key: String,
    pub search_key: String,
    pub binding_signature: String,
}

/// `alice.key` -> `alice.card.json`.
pub fn card_path(key_file: &Path) -> PathBuf {
    key_file.with_extension("card.json")
}

impl KeyCard {
    pub fn from_binding(b: &KeyBinding) -> Self {
        KeyCard {
            identity: b.identity.to_string(),
            encryption_key: hex::encode(b.encryption_key.to_bytes()),
            search_key: hex::encode(b.search_key.to_bytes()),
            binding_signature: hex::encode(b.signature.as_bytes()),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing key card {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading key card {} (made by `medchain keygen` beside the key file)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("key card {} is malformed", path.display()))
    }

    /// The binding, checked: every key parses and the participant's signature covers them.
    pub fn binding(&self) -> Result<KeyBinding> {
        let b = KeyBinding {
            identity: self.identity.parse::<Identity>()?,
            encryption_key: EncryptionPublicKey::from_bytes(&hex::decode(&self.encryption_key)?)?,
            search_key: SearchPublicKey::from_bytes(&hex::decode(&self.search_key)?)?,
            signature: Signature::from_slice(&hex::decode(&self.binding_signature)?)?,
        };
        b.verify()
            .context("the key card's binding signature does not verify: the card was altered")?;
        Ok(b)
    }

    /// The registration an authority signs for this card.
    pub fn registration(&self, role: v1::Role, name: &str) -> Result<v1::IdentityRegistration> {
        Ok(medchain_proto::records::registration(
            &self.binding()?,
            role,
            name,
        ))
    }

    /// The registration for this card on a chain running `rules`, checked here against the
    /// rules' naming requirement (from rules 3 a patient has no name on chain) so the authority
    /// hears what to change before anything is signed or sent.
    pub fn registration_under(
        &self,
        rules: u32,
        role: v1::Role,
        name: Option<&str>,
    ) -> Result<v1::IdentityRegistration> {
        let reg = self.registration(role, name.unwrap_or_default())?;
        medchain_ledger::contracts::rules::registration_form(rules, &reg).map_err(|why| {
            anyhow::anyhow!(
                "{why} ({})",
                if name.is_some() {
                    "omit --name"
                } else {
                    "pass --name"
                }
            )
        })?;
        Ok(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::keys::KeyMaterial;

    #[test]
    fn card_round_trips_and_alteration_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let m = KeyMaterial::from_seed(&[4; 32]).unwrap();
        let card = KeyCard::from_binding(&m.key_binding());
        let path = card_path(&dir.path().join("alice.key"));
        assert!(path.ends_with("alice.card.json"));
        card.write(&path).unwrap();
        let back = KeyCard::read(&path).unwrap();
        assert_eq!(back, card);
        let reg = back.registration(v1::Role::Patient, "Alice").unwrap();
        medchain_proto::records::check_registration(&reg).unwrap();
        let mut altered = card;
        altered.encryption_key = hex::encode(
            KeyMaterial::from_seed(&[5; 32])
                .unwrap()
                .encryption_key()
                .public_key()
                .to_bytes(),
        );
        assert!(altered.binding().is_err());
    }
}
