//! Header certificates, by height: what this node serves to light clients and to clients that
//! ask for a proof. A certificate is evidence anyone can check, not state: losing one loses no
//! safety (its votes can be gathered again), so it is written without a sync.

use medchain_proto::v1;
use medchain_proto::Canonical;

use super::Store;
use crate::keys::{height_key, CF_HEADER_CERTIFICATES};
use crate::StoreError;

impl Store {
    /// Keeps the header certificate of block `certificate.height` (replacing any earlier one).
    pub fn put_header_certificate(
        &self,
        certificate: &v1::HeaderCertificate,
    ) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_HEADER_CERTIFICATES),
            height_key(certificate.height),
            certificate.canonical_bytes(),
        )?;
        Ok(())
    }

    /// The header certificate of block `height`, if this node gathered one.
    pub fn header_certificate(
        &self,
        height: u64,
    ) -> Result<Option<v1::HeaderCertificate>, StoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_HEADER_CERTIFICATES), height_key(height))?
        else {
            return Ok(None);
        };
        v1::HeaderCertificate::decode_canonical(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: format!("header certificate {height}"),
                reason: e.to_string(),
            })
    }

    /// The highest height with a header certificate, if any.
    pub fn last_certified_height(&self) -> Result<Option<u64>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HEADER_CERTIFICATES));
        it.seek_to_last();
        it.status()?;
        Ok(it
            .key()
            .and_then(|k| <[u8; 8]>::try_from(k).ok())
            .map(u64::from_be_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_kept_by_height_and_the_last_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_certified_height().unwrap(), None);
        for h in [3u64, 1, 300] {
            store
                .put_header_certificate(&v1::HeaderCertificate {
                    height: h,
                    header_hash: vec![h as u8; 32],
                    signatures: vec![],
                })
                .unwrap();
        }
        assert_eq!(store.last_certified_height().unwrap(), Some(300));
        let c = store.header_certificate(3).unwrap().unwrap();
        assert_eq!(c.header_hash, vec![3u8; 32]);
        assert!(store.header_certificate(2).unwrap().is_none());
    }
}
