//! What the authenticated chain state costs a hospital node (contract rules 5 against rules 4,
//! and the counted lists of rules 6): the commit of one block of record writes (execution, the
//! state tree's update and the block's synced atomic write), at 128 and at 1,024 transactions a
//! block; and, per proved answer, the proof of an identity's two entries (registration and
//! suspension) from one snapshot, of a patient's whole audit trail (rules 6), and their
//! verification by a client.
//!
//!     cargo bench --workspace --locked --profile dev --bench commit
//!
//! (`--workspace` keeps the workspace's feature set, so RocksDB is not built a second time.)
//!
//! The transactions are checked (signatures verified, as admission does) before the timed
//! commit, as in a running node, so the commit times exclude signature checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use medchain_crypto::keys::KeyMaterial;
use medchain_crypto::validators::ValidatorSet;
use medchain_crypto::{Hash32, SigningKey};
use medchain_ledger::contracts::rules::{V4, V5, V6};
use medchain_ledger::contracts::state::keys;
use medchain_ledger::{ListRange, PrivateLedger};
use medchain_proto::canonical::Canonical;
use medchain_proto::ledger::{make_private_slip, sign_committed_batch, sign_transaction};
use medchain_proto::records::{registration, sample_slip_content};
use medchain_proto::v1::{self, transaction_body::Payload};
use medchain_storage::Store;

const CHAIN: &str = "h";

struct Chain {
    _dir: tempfile::TempDir,
    ledger: PrivateLedger,
    validators: Vec<SigningKey>,
    doctor: KeyMaterial,
    patient: KeyMaterial,
    seq: u64,
    nonce: u64,
}

fn tx(signer: &SigningKey, nonce: u64, payload: Payload) -> Vec<u8> {
    sign_transaction(
        signer,
        v1::TransactionBody {
            chain_id: CHAIN.into(),
            signer: vec![],
            nonce,
            timestamp_ms: 5,
            payload: Some(payload),
        },
    )
    .canonical_bytes()
}

impl Chain {
    /// A chain under `rules` with one doctor and one patient registered in block 1.
    fn new(rules: u32) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let validators: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]).unwrap())
            .collect();
        let authority = KeyMaterial::from_seed(&[50; 32]).unwrap();
        let set = ValidatorSet::new(validators.iter().map(|k| k.identity()).collect()).unwrap();
        let ledger = PrivateLedger::new(
            Arc::new(Store::open(dir.path()).unwrap()),
            CHAIN.into(),
            set,
            vec![authority.signing_key().identity()],
            rules,
        );
        let (doctor, patient) = (
            KeyMaterial::from_seed(&[60; 32]).unwrap(),
            KeyMaterial::from_seed(&[61; 32]).unwrap(),
        );
        let mut chain = Chain {
            _dir: dir,
            ledger,
            validators,
            doctor,
            patient,
            seq: 0,
            nonce: 0,
        };
        let items = vec![
            tx(
                &authority.signing_key(),
                1,
                Payload::IdentityRegistration(registration(
                    &chain.doctor.key_binding(),
                    v1::Role::Doctor,
                    "Dr",
                )),
            ),
            tx(
                &authority.signing_key(),
                2,
                Payload::IdentityRegistration(registration(
                    &chain.patient.key_binding(),
                    v1::Role::Patient,
                    "",
                )),
            ),
        ];
        chain.commit(items);
        chain
    }

    /// `n` record writes by the doctor for the patient, checked as admission would.
    fn writes(&mut self, n: usize) -> Vec<Vec<u8>> {
        let doctor = self.doctor.signing_key();
        let patient = self.patient.key_binding().identity;
        (0..n)
            .map(|_| {
                self.nonce += 1;
                let mut content =
                    sample_slip_content(&doctor.identity(), &patient, &self.nonce.to_be_bytes());
                // No summary in clear (rules 3 on).
                content.summary.clear();
                let bytes = tx(
                    &doctor,
                    self.nonce,
                    Payload::PrivateSlip(make_private_slip(&doctor, content)),
                );
                self.ledger.check(&bytes).expect("an admissible write");
                bytes
            })
            .collect()
    }

    /// Commits `items` as the next block; returns how long the commit took.
    #[allow(clippy::disallowed_methods)] // a benchmark measures real time
    fn commit(&mut self, items: Vec<Vec<u8>>) -> Duration {
        self.seq += 1;
        let n = items.len();
        let batch = v1::PbftBatch {
            timestamp_ms: 7 + self.seq,
            items,
            proposer: 0,
        };
        let committed = sign_committed_batch(&self.validators, CHAIN, self.seq, 0, batch);
        let started = Instant::now();
        let done = self
            .ledger
            .commit(&committed, &[], Hash32::ZERO)
            .expect("the block commits");
        let took = started.elapsed();
        assert_eq!(done.effective.len(), n, "refused: {:?}", done.failed);
        took
    }
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger::commit");
    g.sample_size(10);
    for n in [128usize, 1_024] {
        g.throughput(Throughput::Elements(n as u64));
        for rules in [V4, V5, V6] {
            let mut chain = Chain::new(rules);
            g.bench_function(BenchmarkId::new(format!("rules={rules}"), n), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let items = chain.writes(n);
                            chain.commit(items)
                        })
                        .sum()
                })
            });
        }
    }
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let mut chain = Chain::new(V5);
    for _ in 0..8 {
        let items = chain.writes(128);
        chain.commit(items);
    }
    let id = chain.patient.key_binding().identity;
    let wanted = [keys::identity(&id), keys::suspension(&id)];
    let proved = chain.ledger.prove_all(&wanted).unwrap();
    let bytes: usize = proved.iter().map(|p| p.proof.to_bytes().len()).sum();
    eprintln!(
        "ledger::proof: an identity's two entries in a state of {} record writes: {bytes} bytes of proof",
        chain.nonce
    );
    let mut g = c.benchmark_group("ledger::proof");
    g.bench_function("prove/identity+suspension", |b| {
        b.iter(|| chain.ledger.prove_all(&wanted).unwrap())
    });
    g.bench_function("verify/identity+suspension", |b| {
        b.iter(|| {
            for (key, p) in wanted.iter().zip(&proved) {
                p.proof.verify(&p.root, key, p.value.as_deref()).unwrap();
            }
        })
    });
    g.finish();
}

/// A patient's whole audit trail under rules 6: its length and every event, from one snapshot.
fn list_proofs(c: &mut Criterion) {
    let mut chain = Chain::new(V6);
    for _ in 0..4 {
        let items = chain.writes(125);
        chain.commit(items);
    }
    let id = chain.patient.key_binding().identity;
    let lists = [ListRange::first(
        keys::audit_prefix(b'p', id.as_bytes()),
        false,
    )];
    let proved = chain.ledger.prove_lists(&lists).unwrap();
    let bytes: usize = proved.iter().map(|(_, p)| p.proof.to_bytes().len()).sum();
    let values: usize = proved
        .iter()
        .map(|(_, p)| p.value.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "ledger::proof: a patient's audit trail of {} events: {bytes} bytes of proof ({} per entry) and {values} bytes of entries",
        proved.len() - 1,
        bytes / proved.len()
    );
    let mut g = c.benchmark_group("ledger::proof");
    g.sample_size(10);
    g.throughput(Throughput::Elements(proved.len() as u64 - 1));
    g.bench_function("prove/audit-trail-500", |b| {
        b.iter(|| chain.ledger.prove_lists(&lists).unwrap())
    });
    g.bench_function("verify/audit-trail-500", |b| {
        b.iter(|| {
            for (key, p) in &proved {
                p.proof.verify(&p.root, key, p.value.as_deref()).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, commit, proofs, list_proofs);
criterion_main!(benches);
