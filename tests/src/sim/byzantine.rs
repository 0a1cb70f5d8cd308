//! Byzantine replicas as swappable behaviours. Each wraps one honest engine (two for Twins) so the
//! node takes part in the protocol, and distorts what it sends in one specific way.

use std::collections::{BTreeMap, BTreeSet};

use medchain_crypto::validators::CachingVerifier;
use medchain_crypto::SigningKey;
use medchain_pbft::{null_batch, Action, Application, Config, Event, Replica, Timer};
use medchain_proto::pbft::sign;
use medchain_proto::v1::{self, pbft_message::Kind};
use medchain_proto::Hashed;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The misbehaviours the simulator can give a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing, ever.
    Silent,
    /// As primary, sends different batches to the two halves of the other replicas (one fixed
    /// split per node) and backs each half's batch with its own prepares and commits: double
    /// votes for real batches. As backup, sends prepares and commits for conflicting digests to
    /// one half.
    Equivocator,
    /// As primary, proposes batches holding an invalid item.
    InvalidProposer,
    /// Corrupts signatures, impersonates other replicas, and speaks for another chain.
    Forger,
    /// Replays old messages (its own and others', from old views) to random replicas.
    Replayer,
    /// Sends conflicting view changes to different replicas, and view changes for random future
    /// views.
    ViewChangeLiar,
    /// Two instances with one key, each talking to half of the other replicas.
    Twins,
    /// As a new view's primary, sends a new view whose pre-prepares differ from the plan its view
    /// changes imply (a prepared batch replaced, a re-proposal dropped) or that carries too few
    /// view changes; in its own view changes, sends partial prepared certificates (a prepare
    /// short) and forged ones (a pre-prepare it signed itself for another batch). As primary it
    /// hides its proposals from half the replicas, and it shows its commits to one replica only.
    BadNewView,
}

pub const ALL: [Behaviour; 8] = [
    Behaviour::Silent,
    Behaviour::Equivocator,
    Behaviour::InvalidProposer,
    Behaviour::Forger,
    Behaviour::Replayer,
    Behaviour::ViewChangeLiar,
    Behaviour::Twins,
    Behaviour::BadNewView,
];

/// A Byzantine node's ledger: accepts anything.
struct Anything;

impl Application for Anything {
    fn validate(&self, _: u64, _: &v1::PbftBatch) -> Result<(), String> {
        Ok(())
    }
    fn already_executed(&self, _: &[u8]) -> bool {
        false
    }
}

/// What a Byzantine node asks the simulator to do.
#[derive(Debug)]
pub enum Out {
    Send(u32, v1::PbftMessage),
    SetTimer(usize, Timer, u64),
    CancelTimer(usize, Timer),
}

pub struct ByzantineNode {
    pub behaviour: Behaviour,
    me: u32,
    n: u32,
    key: SigningKey,
    chain_id: String,
    engines: Vec<Replica<SigningKey, CachingVerifier>>,
    /// For Twins: which twin talks to each replica.
    twin_of: Vec<usize>,
    seen: Vec<v1::PbftMessage>,
    /// For the Equivocator: the half of the other replicas that sees its second batches.
    second_half: BTreeSet<u32>,
    /// For the Equivocator: the second batch's digest per (view, seq) it proposed.
    second_digest: BTreeMap<(u64, u64), Vec<u8>>,
}

impl std::fmt::Debug for ByzantineNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByzantineNode({:?}, r{})", self.behaviour, self.me)
    }
}

impl ByzantineNode {
    pub fn new(
        behaviour: Behaviour,
        cfg: Config,
        key: SigningKey,
        verifier: CachingVerifier,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let me = cfg.me;
        let n = cfg.n() as u32;
        let copies = if behaviour == Behaviour::Twins { 2 } else { 1 };
        let engines = (0..copies)
            .map(|_| Replica::new(cfg.clone(), key.clone(), verifier.clone()))
            .collect();
        let twin_of = (0..n).map(|_| rng.gen_range(0..copies)).collect();
        let mut others: Vec<u32> = (0..n).filter(|r| *r != me).collect();
        others.shuffle(rng);
        let second_half = others[others.len() / 2..].iter().copied().collect();
        ByzantineNode {
            behaviour,
            me,
            n,
            key,
            chain_id: cfg.chain_id.clone(),
            engines,
            twin_of,
            seen: Vec::new(),
            second_half,
            second_digest: BTreeMap::new(),
        }
    }

    /// Handles an event for engine `engine` (`None`: a message or submission from outside, routed
    /// by the behaviour).
    pub fn handle(
        &mut self,
        now: u64,
        event: Event,
        from: Option<u32>,
        timer_engine: Option<usize>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Out> {
        if self.behaviour == Behaviour::Silent {
            return Vec::new();
        }
        if let Event::Message(m) = &event {
            if self.seen.len() < 400 {
                self.seen.push(m.clone());
            } else {
                let i = rng.gen_range(0..self.seen.len());
                self.seen[i] = m.clone();
            }
        }
        let targets: Vec<usize> = match (&event, timer_engine, from) {
            (_, Some(e), _) => vec![e],
            (Event::Message(_), None, Some(f)) => vec![self.twin_of[f as usize]],
            _ => (0..self.engines.len()).collect(),
        };
        let mut out = Vec::new();
        for e in targets {
            let actions = self.engines[e].handle(now, event.clone(), &Anything);
            for a in actions {
                self.distort(now, e, a, rng, &mut out);
            }
        }
        if self.behaviour == Behaviour::Replayer && !self.seen.is_empty() && rng.gen_bool(0.3) {
            let m = self.seen[rng.gen_range(0..self.seen.len())].clone();
            let to = rng.gen_range(0..self.n);
            if to != self.me {
                out.push(Out::Send(to, m));
            }
        }
        if self.behaviour == Behaviour::ViewChangeLiar && rng.gen_bool(0.05) {
            let view = self.engines[0].view() + rng.gen_range(1..4);
            let vc = sign(
                &self.key,
                &self.chain_id,
                self.me,
                Kind::ViewChange(v1::ViewChange {
                    new_view: view,
                    stable_seq: 0,
                    stable_digest: vec![0; 32],
                    checkpoint_proof: vec![],
                    prepared: vec![],
                }),
                None,
            );
            self.broadcast(0, vc, &mut out);
        }
        out
    }

    fn others(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.n).filter(move |r| *r != self.me)
    }

    fn broadcast(&self, engine: usize, m: v1::PbftMessage, out: &mut Vec<Out>) {
        let twins = self.behaviour == Behaviour::Twins;
        for to in self.others() {
            if !twins || self.twin_of[to as usize] == engine {
                out.push(Out::Send(to, m.clone()));
            }
        }
    }

    fn resign(&self, kind: Kind, batch: Option<v1::PbftBatch>) -> v1::PbftMessage {
        sign(&self.key, &self.chain_id, self.me, kind, batch)
    }

    fn distort(
        &mut self,
        _now: u64,
        e: usize,
        a: Action,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Out>,
    ) {
        let msg = match a {
            Action::SetTimer { timer, at_ms } => return out.push(Out::SetTimer(e, timer, at_ms)),
            Action::CancelTimer(t) => return out.push(Out::CancelTimer(e, t)),
            // The new view it hands to a laggard is as bad as the one it broadcast.
            Action::Send { to, msg } if self.behaviour == Behaviour::BadNewView => {
                let m = self.bad_new_view(msg, rng);
                return out.push(Out::Send(to, m));
            }
            Action::Send { to, msg } => return out.push(Out::Send(to, msg)),
            Action::Broadcast(m) => m,
            _ => return,
        };
        match self.behaviour {
            Behaviour::Equivocator => self.equivocate(msg, out),
            Behaviour::InvalidProposer => match (&msg.kind, &msg.batch) {
                (Some(Kind::PrePrepare(pp)), Some(batch)) => {
                    let mut bad = batch.clone();
                    bad.items
                        .push(format!("bad:{}:{}", self.me, pp.seq).into_bytes());
                    let kind = Kind::PrePrepare(v1::PrePrepare {
                        view: pp.view,
                        seq: pp.seq,
                        digest: bad.digest().as_bytes().to_vec(),
                    });
                    let m = self.resign(kind, Some(bad));
                    self.broadcast(e, m, out);
                }
                _ => self.broadcast(e, msg, out),
            },
            Behaviour::Forger => {
                for to in self.others().collect::<Vec<_>>() {
                    let mut m = msg.clone();
                    match rng.gen_range(0..4) {
                        0 => {
                            let i = rng.gen_range(0..m.signature.len().max(1));
                            if let Some(b) = m.signature.get_mut(i) {
                                *b ^= 0x40;
                            }
                        }
                        1 => m.replica = (m.replica + 1 + rng.gen_range(0..self.n - 1)) % self.n,
                        2 => m.chain_id = "some-other-chain".into(),
                        _ => {}
                    }
                    out.push(Out::Send(to, m));
                }
            }
            Behaviour::BadNewView => match &msg.kind {
                // As primary it leaves the second half out of its proposals, and it shows its
                // commits to one replica only: a batch then commits at a few replicas while the
                // others time out, which is when a bad new view can do harm.
                Some(Kind::PrePrepare(_)) => {
                    for to in self.others().filter(|r| !self.second_half.contains(r)) {
                        out.push(Out::Send(to, msg.clone()));
                    }
                }
                Some(Kind::Commit(_)) => {
                    let others: Vec<u32> = self.others().collect();
                    if let Some(to) = others.choose(rng) {
                        out.push(Out::Send(*to, msg));
                    }
                }
                _ => {
                    let m = self.bad_new_view(msg, rng);
                    self.broadcast(e, m, out);
                }
            },
            Behaviour::ViewChangeLiar => match &msg.kind {
                Some(Kind::ViewChange(vc)) => {
                    let others: Vec<u32> = self.others().collect();
                    let (half_a, half_b) = others.split_at(others.len() / 2);
                    let mut empty = vc.clone();
                    empty.prepared.clear();
                    let lie = self.resign(Kind::ViewChange(empty), None);
                    for to in half_a {
                        out.push(Out::Send(*to, lie.clone()));
                    }
                    for to in half_b {
                        out.push(Out::Send(*to, msg.clone()));
                    }
                }
                _ => self.broadcast(e, msg, out),
            },
            _ => self.broadcast(e, msg, out),
        }
    }

    fn equivocate(&mut self, msg: v1::PbftMessage, out: &mut Vec<Out>) {
        let alt = match (&msg.kind, &msg.batch) {
            (Some(Kind::PrePrepare(pp)), Some(batch)) => {
                let mut other = batch.clone();
                other.items.reverse();
                other.timestamp_ms += 1;
                let digest = other.digest().as_bytes().to_vec();
                self.second_digest.insert((pp.view, pp.seq), digest.clone());
                Some(self.resign(
                    Kind::PrePrepare(v1::PrePrepare {
                        view: pp.view,
                        seq: pp.seq,
                        digest,
                    }),
                    Some(other),
                ))
            }
            (Some(Kind::Prepare(p)), _) => Some(self.resign(
                Kind::Prepare(v1::Prepare {
                    digest: self.second_vote(p.view, p.seq, &p.digest),
                    ..p.clone()
                }),
                None,
            )),
            (Some(Kind::Commit(c)), _) => Some(self.resign(
                Kind::Commit(v1::Commit {
                    digest: self.second_vote(c.view, c.seq, &c.digest),
                    ..c.clone()
                }),
                None,
            )),
            _ => None,
        };
        for to in self.others() {
            let m = match &alt {
                Some(a) if self.second_half.contains(&to) => a.clone(),
                _ => msg.clone(),
            };
            out.push(Out::Send(to, m));
        }
    }

    /// The digest the second half is told: that of the second batch this node proposed for the
    /// slot (a real batch, so its votes can complete a certificate), else a meaningless one.
    fn second_vote(&self, view: u64, seq: u64, digest: &[u8]) -> Vec<u8> {
        self.second_digest
            .get(&(view, seq))
            .cloned()
            .unwrap_or_else(|| flip(digest))
    }

    /// A new view or view change made invalid in one of the ways a Byzantine primary could try;
    /// other messages pass unchanged.
    fn bad_new_view(&self, msg: v1::PbftMessage, rng: &mut ChaCha8Rng) -> v1::PbftMessage {
        match &msg.kind {
            Some(Kind::NewView(nv)) => {
                let mut bad = nv.clone();
                match rng.gen_range(0..5) {
                    // A prepared batch replaced by the null batch, or a null one by another.
                    0..=2 if !bad.pre_prepares.is_empty() => {
                        // A prepared batch if there is one: it may have committed somewhere.
                        let prepared: Vec<usize> = (0..bad.pre_prepares.len())
                            .filter(|i| {
                                bad.pre_prepares[*i]
                                    .batch
                                    .as_ref()
                                    .is_some_and(|b| !b.items.is_empty())
                            })
                            .collect();
                        let i = match prepared.choose(rng) {
                            Some(i) => *i,
                            None => rng.gen_range(0..bad.pre_prepares.len()),
                        };
                        let old = &bad.pre_prepares[i];
                        let mut batch = old.batch.clone().unwrap_or_else(null_batch);
                        if batch.items.is_empty() {
                            batch.timestamp_ms += 1;
                        } else {
                            batch = null_batch();
                        }
                        if let Some(Kind::PrePrepare(pp)) = &old.kind {
                            let kind = Kind::PrePrepare(v1::PrePrepare {
                                digest: batch.digest().as_bytes().to_vec(),
                                ..pp.clone()
                            });
                            bad.pre_prepares[i] = self.resign(kind, Some(batch));
                        }
                    }
                    // A re-proposal dropped.
                    3 if !bad.pre_prepares.is_empty() => {
                        bad.pre_prepares.pop();
                    }
                    // One view change short of a quorum.
                    _ => {
                        bad.view_changes.pop();
                    }
                }
                self.resign(Kind::NewView(bad), None)
            }
            Some(Kind::ViewChange(vc)) if !vc.prepared.is_empty() => {
                let mut bad = vc.clone();
                let i = rng.gen_range(0..bad.prepared.len());
                let proof = &mut bad.prepared[i];
                if rng.gen_bool(0.5) {
                    // Partial: one prepare short.
                    proof.prepares.pop();
                } else if let Some(pp) = proof.pre_prepare.as_ref() {
                    // Forged: the same slot, another batch, signed by this node.
                    if let Some(Kind::PrePrepare(k)) = &pp.kind {
                        let mut batch = pp.batch.clone().unwrap_or_else(null_batch);
                        batch.timestamp_ms += 1;
                        let kind = Kind::PrePrepare(v1::PrePrepare {
                            digest: batch.digest().as_bytes().to_vec(),
                            ..k.clone()
                        });
                        proof.pre_prepare = Some(self.resign(kind, Some(batch)));
                    }
                }
                self.resign(Kind::ViewChange(bad), None)
            }
            _ => msg,
        }
    }
}

fn flip(digest: &[u8]) -> Vec<u8> {
    let mut d = digest.to_vec();
    if let Some(b) = d.first_mut() {
        *b ^= 1;
    }
    d
}
