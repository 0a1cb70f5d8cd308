//! Consent on the client side: a patient's grants (with proxy re-encryption key fragments sealed
//! to each proxy), requests, approvals, denials and revocations.

use anyhow::{anyhow, bail, Result};
use medchain_crypto::delegation::{delegate, DelegationVerifyingKey};
use medchain_crypto::keys::{EncryptionPublicKey, KeyMaterial};
use medchain_crypto::record::encrypt_record;
use medchain_crypto::Hash32;
use medchain_proto::records::ALL_ACTIONS;
use medchain_proto::v1::{self, consent_scope::Scope};

use super::ChainInfo;

/// Parses `record:<slip id>`, `type:<record type>` or `all`.
pub fn parse_scope(text: &str) -> Result<v1::ConsentScope> {
    let scope = if text == "all" {
        Scope::All(true)
    } else if let Some(slip) = text.strip_prefix("record:") {
        Scope::Record(
            Hash32::from_hex(slip)
                .map_err(|_| {
                    anyhow!("--scope record:<slip>: the slip ID must be 64 hex characters")
                })?
                .as_bytes()
                .to_vec(),
        )
    } else if let Some(t) = text.strip_prefix("type:") {
        if t.trim().is_empty() {
            bail!("--scope type:<record type>: the type must not be empty");
        }
        Scope::RecordType(t.trim().to_string())
    } else {
        bail!("--scope {text:?}: use record:<slip id>, type:<record type> or all");
    };
    Ok(v1::ConsentScope { scope: Some(scope) })
}

/// Parses `read[,write,copy]` into action bits.
pub fn parse_actions(text: &str) -> Result<u32> {
    let mut bits = 0;
    for a in text.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        bits |= match a {
            "read" => v1::ConsentAction::Read as u32,
            "write" => v1::ConsentAction::Write as u32,
            "copy" => v1::ConsentAction::Copy as u32,
            other => bail!("--actions: unknown action {other:?}; use read, write, copy"),
        };
    }
    if bits == 0 || bits & !ALL_ACTIONS != 0 {
        bail!("--actions: give at least one of read, write, copy");
    }
    Ok(bits)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a time: `+30s`, `+10m`, `+2h`, `+7d` from `now_ms`; Unix milliseconds; or
/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn parse_time(text: &str, now_ms: u64) -> Result<u64> {
    let bad = || {
        anyhow!(
            "time {text:?}: use +30s, +10m, +2h, +7d, Unix milliseconds, or 2026-12-31T23:59:59Z"
        )
    };
    if let Some(rel) = text.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        return Ok(now_ms + n * ms);
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let t = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let h: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    if d.len() != 3 || h.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        return Err(bad());
    }
    let secs = days_from_civil(d[0], d[1], d[2]) * 86_400 + h[0] * 3_600 + h[1] * 60 + h[2];
    u64::try_from(secs * 1_000).map_err(|_| bad())
}

/// A grant from `patient` to `grantee`, with one re-encryption key fragment per proxy (every
/// validator that published an encryption key), each sealed to that proxy, `threshold` of which
/// re-encrypt.
#[allow(clippy::too_many_arguments)]
pub fn build_grant(
    chain: &ChainInfo,
    patient: &KeyMaterial,
    grantee: &medchain_crypto::Identity,
    grantee_key: &EncryptionPublicKey,
    scope: v1::ConsentScope,
    actions: u32,
    expires_ms: u64,
    request: Option<Hash32>,
    threshold: usize,
) -> Result<v1::ConsentGrant> {
    let proxies: Vec<(u32, EncryptionPublicKey)> = chain
        .validators
        .iter()
        .filter_map(|v| {
            let k = v.encryption_key.as_ref()?;
            let key = EncryptionPublicKey::from_bytes(&hex::decode(k).ok()?).ok()?;
            Some((v.index, key))
        })
        .collect();
    if proxies.len() < threshold {
        bail!(
            "chain {} has {} proxies (validators with an encryption key in genesis), fewer than the threshold {threshold}",
            chain.chain_id,
            proxies.len()
        );
    }
    let fragments = delegate(patient, grantee_key, threshold, proxies.len())?;
    let sealed = proxies
        .iter()
        .zip(fragments)
        .map(|((index, key), fragment)| {
            Ok(v1::SealedFragment {
                proxy: *index,
                sealed: encrypt_record(key, &fragment)?.to_bytes(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(v1::ConsentGrant {
        grantee: grantee.as_bytes().to_vec(),
        scope: Some(scope),
        actions,
        expires_ms,
        request: request.map(|r| r.as_bytes().to_vec()).unwrap_or_default(),
        delegation_key: DelegationVerifyingKey::of(patient).to_bytes(),
        threshold: threshold as u32,
        fragments: sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_actions_and_times_parse() {
        assert!(matches!(
            parse_scope("all").unwrap().scope,
            Some(Scope::All(true))
        ));
        assert!(matches!(
            parse_scope("type:Observation").unwrap().scope,
            Some(Scope::RecordType(t)) if t == "Observation"
        ));
        assert!(parse_scope(&format!("record:{}", "ab".repeat(32))).is_ok());
        assert!(parse_scope("record:xyz").is_err());
        assert!(parse_scope("everything").is_err());
        assert_eq!(parse_actions("read,copy").unwrap(), 5);
        assert!(parse_actions("delete").is_err());
        assert!(parse_actions("").is_err());
        assert_eq!(parse_time("+2m", 1_000).unwrap(), 121_000);
        assert_eq!(parse_time("1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-02T00:00:01Z", 0).unwrap(), 86_401_000);
        assert_eq!(
            parse_time("2026-11-22T00:00:00Z", 0).unwrap(),
            1_795_305_600_000
        );
        assert!(parse_time("tomorrow", 0).is_err());
        assert!(parse_time("+5y", 0).is_err());
    }
}
