//! Read admission on a proxy node: freshness and replay of signed read requests, and
//! abnormal-access detection (DESIGN.md flow 7) by sliding-window counts per identity and per
//! source address. Pure bookkeeping on a clock the caller passes in, so it is tested exactly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use medchain_crypto::{Hash32, Identity};

use crate::config::AccessConfig;

/// How far a read request's timestamp may be from the node's clock.
pub const FRESHNESS_MS: u64 = 120_000;

/// How long a seen request is remembered: past this it is stale whatever its timestamp said
/// (a request up to `FRESHNESS_MS` ahead, admitted at t, is fresh until t + 2 x FRESHNESS_MS
/// inclusive).
pub const REMEMBER_MS: u64 = 2 * FRESHNESS_MS + 1;

/// Why a read is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Timestamp outside the freshness window.
    Stale { skew_ms: i64 },
    /// This exact signed request was seen before.
    Replay,
    /// The source address is over its limit for this window.
    SourceOverLimit { count: u32 },
    /// The identity went over its limit: `newly` is true the first time, when the node
    /// submits a suspension.
    IdentityOverLimit { count: u32, newly: bool },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Stale { skew_ms } => write!(
                f,
                "the read request's timestamp is {skew_ms} ms away from this node's clock (limit {FRESHNESS_MS} ms); sign a fresh request and check your clock"
            ),
            Refusal::Replay => write!(f, "this signed read request was already used; sign a new one"),
            Refusal::SourceOverLimit { count } => write!(
                f,
                "too many reads from this address ({count} in the window); wait and retry"
            ),
            Refusal::IdentityOverLimit { count, .. } => write!(
                f,
                "abnormal access: {count} reads in the window; refused, and reported to the chain, which suspends the identity once enough validators report it (an authority reinstates it)"
            ),
        }
    }
}

#[derive(Debug)]
pub struct AccessGuard {
    cfg: AccessConfig,
    by_identity: HashMap<Identity, VecDeque<u64>>,
    by_source: HashMap<IpAddr, VecDeque<u64>>,
    seen: HashMap<Hash32, u64>,
    flagged: HashSet<Identity>,
}

fn count_in_window(q: &mut VecDeque<u64>, now: u64, window: u64) -> u32 {
    while q.front().is_some_and(|t| *t + window <= now) {
        q.pop_front();
    }
    q.len() as u32
}

impl AccessGuard {
    pub fn new(cfg: AccessConfig) -> Self {
        AccessGuard {
            cfg,
            by_identity: HashMap::new(),
            by_source: HashMap::new(),
            seen: HashMap::new(),
            flagged: HashSet::new(),
        }
    }

    /// Admits one read at `now_ms` or says why not. A fresh, new request counts against its
    /// identity and source even when it is refused later (no grant, say), so hammering with
    /// refused reads trips the limit too; a stale or replayed one counts against nobody.
    pub fn admit(
        &mut self,
        now_ms: u64,
        reader: &Identity,
        source: IpAddr,
        request: &Hash32,
        request_ms: u64,
    ) -> Result<(), Refusal> {
        let window = self.cfg.window_secs.max(1) * 1_000;
        // A stale or replayed request is no read attempt: it is refused before it counts
        // against anyone's limit (else replaying a captured request would suspend its victim).
        let skew = request_ms as i64 - now_ms as i64;
        if skew.unsigned_abs() > FRESHNESS_MS {
            return Err(Refusal::Stale { skew_ms: skew });
        }
        self.seen.retain(|_, at| *at + REMEMBER_MS > now_ms);
        if self.seen.insert(*request, now_ms).is_some() {
            return Err(Refusal::Replay);
        }
        let source_q = self.by_source.entry(source).or_default();
        let source_count = count_in_window(source_q, now_ms, window);
        source_q.push_back(now_ms);
        let id_q = self.by_identity.entry(*reader).or_default();
        let id_count = count_in_window(id_q, now_ms, window);
        id_q.push_back(now_ms);
        if id_count >= self.cfg.max_reads_per_identity {
            let newly = self.flagged.insert(*reader);
            return Err(Refusal::IdentityOverLimit {
                count: id_count + 1,
                newly,
            });
        }
        if source_count >= self.cfg.max_reads_per_source {
            return Err(Refusal::SourceOverLimit {
                count: source_count + 1,
            });
        }
        Ok(())
    }

    /// Takes back the requests an earlier run of this node admitted (from the store, with the
    /// time each is remembered until), so that a restart does not reopen them to replay.
    pub fn restore(&mut self, seen: impl IntoIterator<Item = (Hash32, u64)>) {
        for (request, until) in seen {
            self.seen.insert(request, until.saturating_sub(REMEMBER_MS));
        }
    }

    /// An authority reinstated the identity: it may be flagged again later.
    pub fn reinstated(&mut self, id: &Identity) {
        self.flagged.remove(id);
        self.by_identity.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medchain_crypto::SigningKey;

    #[test]
    fn restored_requests_are_replays_until_they_would_be_stale() {
        let mut g = guard(10, 10);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Admitted at t = 1000 by the node's previous run.
        g.restore([(h(1), 1_000 + REMEMBER_MS)]);
        assert_eq!(
            g.admit(2_000, &id(1), ip, &h(1), 1_500),
            Err(Refusal::Replay)
        );
        assert_eq!(g.admit(2_000, &id(1), ip, &h(2), 1_500), Ok(()));
    }

    fn id(n: u8) -> Identity {
        SigningKey::from_bytes(&[n; 32]).unwrap().identity()
    }

    fn h(n: u64) -> Hash32 {
        medchain_crypto::digest(
            medchain_crypto::hash::domains::READ_REQUEST,
            &n.to_be_bytes(),
        )
    }

    fn guard(per_id: u32, per_source: u32) -> AccessGuard {
        AccessGuard::new(AccessConfig {
            window_secs: 10,
            max_reads_per_identity: per_id,
            max_reads_per_source: per_source,
        })
    }

    #[test]
    fn replays_and_stale_requests_are_refused() {
        let mut g = guard(100, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        g.admit(1_000_000, &id(1), ip, &h(1), 1_000_000).unwrap();
        assert_eq!(
            g.admit(1_000_001, &id(1), ip, &h(1), 1_000_000),
            Err(Refusal::Replay)
        );
        assert!(matches!(
            g.admit(1_000_000, &id(1), ip, &h(2), 1_000_000 - FRESHNESS_MS - 1),
            Err(Refusal::Stale { .. })
        ));
    }

    /// Replaying a captured request (or sending stale ones) in someone's name does not use up
    /// that identity's reads, so it cannot get her suspended.
    #[test]
    fn replays_and_stale_requests_count_against_nobody() {
        let mut g = guard(2, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        g.admit(1_000, &id(1), ip, &h(1), 1_000).unwrap();
        for n in 0..10 {
            assert_eq!(
                g.admit(1_001 + n, &id(1), ip, &h(1), 1_000),
                Err(Refusal::Replay)
            );
            assert!(matches!(
                g.admit(
                    1_001 + n,
                    &id(1),
                    ip,
                    &h(100 + n),
                    1_000 + 10 * FRESHNESS_MS
                ),
                Err(Refusal::Stale { .. })
            ));
        }
        g.admit(1_020, &id(1), ip, &h(2), 1_020).unwrap();
    }

    #[test]
    fn identity_over_its_limit_is_flagged_once_and_window_slides() {
        let mut g = guard(3, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for n in 0..3 {
            g.admit(1_000 + n, &id(1), ip, &h(n), 1_000).unwrap();
        }
        assert_eq!(
            g.admit(1_004, &id(1), ip, &h(10), 1_004),
            Err(Refusal::IdentityOverLimit {
                count: 4,
                newly: true
            })
        );
        assert!(matches!(
            g.admit(1_005, &id(1), ip, &h(11), 1_005),
            Err(Refusal::IdentityOverLimit { newly: false, .. })
        ));
        // Another identity is unaffected.
        g.admit(1_006, &id(2), ip, &h(12), 1_006).unwrap();
        // After reinstatement and a full window the identity reads again.
        g.reinstated(&id(1));
        g.admit(20_000, &id(1), ip, &h(13), 20_000).unwrap();
    }

    #[test]
    fn a_busy_source_is_refused_without_suspending_anyone() {
        let mut g = guard(100, 2);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        g.admit(1, &id(1), ip, &h(1), 1).unwrap();
        g.admit(2, &id(2), ip, &h(2), 2).unwrap();
        assert_eq!(
            g.admit(3, &id(3), ip, &h(3), 3),
            Err(Refusal::SourceOverLimit { count: 3 })
        );
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        g.admit(4, &id(3), other, &h(4), 4).unwrap();
    }
}
