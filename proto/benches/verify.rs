//! What a node pays per transaction: one signature verification, and the full check of a
//! record-write transaction (envelope signature + the doctor's slip signature + structure).
//!
//!     cargo bench -p medchain-proto --bench verify
//!
//! Every node verifies every transaction once, so a 4-node network on one machine with C cores
//! is bounded by C / (4 x the per-transaction cost).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medchain_crypto::SigningKey;
use medchain_proto::canonical::{Canonical, Hashed};
use medchain_proto::ledger::{make_private_slip, sign_transaction, verify_transaction};
use medchain_proto::v1;

fn tx() -> v1::Transaction {
    let doctor = SigningKey::from_bytes(&[3; 32]).unwrap();
    let patient = SigningKey::from_bytes(&[4; 32]).unwrap().identity();
    let slip = make_private_slip(
        &doctor,
        medchain_proto::records::sample_slip_content(&doctor.identity(), &patient, b"m"),
    );
    sign_transaction(
        &doctor,
        v1::TransactionBody {
            chain_id: "hospital-dev".into(),
            signer: vec![],
            nonce: 1,
            timestamp_ms: 1,
            payload: Some(v1::transaction_body::Payload::PrivateSlip(slip)),
        },
    )
}

fn verify(c: &mut Criterion) {
    let t = tx();
    let body = t.body.clone().unwrap();
    let digest = body.digest();
    let signer = medchain_crypto::Identity::from_bytes(&body.signer).unwrap();
    let sig = medchain_crypto::Signature::from_slice(&t.signature).unwrap();
    let bytes = t.canonical_bytes();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("signature", |b| {
        b.iter(|| signer.verify_digest(&digest, &sig).unwrap())
    });
    g.bench_function("private_slip_transaction", |b| {
        b.iter(|| {
            let t = v1::Transaction::decode_canonical(&bytes).unwrap();
            verify_transaction(t).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
