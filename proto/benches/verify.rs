//! What a node pays per transaction: one signature verification, the full check of a
//! record-write transaction (envelope signature + the doctor's slip signature + structure), and
//! per read recorded: one access record in its own transaction (rules 1 to 3) against a batch of
//! 64 in one (rules 4), each record carrying its reader's signed request.
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

/// A node-signed transaction recording `n` reads (one `AccessRecord` alone if `n` is 0).
fn access_tx(n: usize) -> v1::Transaction {
    let node = SigningKey::from_bytes(&[5; 32]).unwrap();
    let reader = SigningKey::from_bytes(&[6; 32]).unwrap();
    let record = |i: usize| {
        let signed = medchain_proto::records::sign_read_request(
            &reader,
            v1::ReadRequest {
                chain_id: "hospital-dev".into(),
                reader: vec![],
                slip_id: vec![7; 32],
                timestamp_ms: 1,
                nonce: (i as u128).to_le_bytes().to_vec(),
                node: node.identity().as_bytes().to_vec(),
            },
        );
        v1::AccessRecord {
            reader: reader.identity().as_bytes().to_vec(),
            slip_id: vec![7; 32],
            request: signed
                .request
                .as_ref()
                .unwrap()
                .digest()
                .as_bytes()
                .to_vec(),
            granted: true,
            reason: "patient's own record".into(),
            grant: vec![],
            at_ms: 1,
            signed_request: Some(signed),
        }
    };
    let payload = if n == 0 {
        v1::transaction_body::Payload::AccessRecord(record(0))
    } else {
        v1::transaction_body::Payload::AccessBatch(v1::AccessBatch {
            records: (0..n).map(record).collect(),
        })
    };
    sign_transaction(
        &node,
        v1::TransactionBody {
            chain_id: "hospital-dev".into(),
            signer: vec![],
            nonce: 1,
            timestamp_ms: 1,
            payload: Some(payload),
        },
    )
}

/// The check of the transactions that record reads, per read.
fn access(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_per_read");
    for (name, n, reads) in [("access_record", 0, 1), ("access_batch_64", 64, 64)] {
        let bytes = access_tx(n).canonical_bytes();
        g.throughput(Throughput::Elements(reads));
        g.bench_function(name, |b| {
            b.iter(|| {
                let t = v1::Transaction::decode_canonical(&bytes).unwrap();
                verify_transaction(t).unwrap()
            })
        });
    }
    g.finish();
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

criterion_group!(benches, verify, access);
criterion_main!(benches);
