//! The PBFT engine alone: 4 replicas in one process, real k256 signatures, instant delivery.
//!
//!     cargo bench -p medchain-pbft --bench pbft
//!
//! `pbft::commit/replicas=4,batch=128` drives one full batch of 128 items from submission to
//! execution at all four replicas (pre-prepare, prepares, commits; every message signed once and
//! verified by each receiver); its throughput is committed items per second for the whole cluster
//! on one core. `pbft::message/kind=prepare` is the cost of one replica handling one prepare.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use medchain_crypto::validators::EcdsaVerifier;
use medchain_pbft::local_cluster::LocalCluster;
use medchain_pbft::{Event, Timer};
use medchain_proto::pbft::sign;
use medchain_proto::v1::{self, pbft_message::Kind};
use medchain_proto::Hashed;

const BATCH: usize = 128;

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("pbft::commit");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let mut round = 0u64;
    group.bench_function("replicas=4,batch=128", |b| {
        b.iter_batched(
            || {
                // A fresh cluster per batch keeps each measurement one full round.
                round += 1;
                let cluster = LocalCluster::new(4, BATCH, 1_000, EcdsaVerifier);
                let items: Vec<Vec<u8>> = (0..BATCH)
                    .map(|i| format!("round {round} item {i:04} {}", "x".repeat(200)).into_bytes())
                    .collect();
                (cluster, items)
            },
            |(mut cluster, items)| {
                for item in &items {
                    for r in 0..4 {
                        cluster.event(r, Event::Submit(item.clone()));
                    }
                }
                cluster.run();
                assert!(cluster.ledgers.iter().all(|l| l.committed.len() == 1));
                cluster
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn one_prepare(c: &mut Criterion) {
    let mut group = c.benchmark_group("pbft::message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("kind=prepare", |b| {
        b.iter_batched(
            || {
                // Replica 1 has accepted a pre-prepare; replica 2's prepare is the measured input.
                let mut cluster = LocalCluster::new(4, BATCH, 1_000, EcdsaVerifier);
                cluster.event(0, Event::Submit(b"one".to_vec()));
                cluster.now = 1_000;
                cluster.event(0, Event::Timer(Timer::Batch));
                let (_, pp) = cluster.queue.pop_front().expect("pre-prepare to replica 1");
                cluster.queue.clear();
                cluster.event(1, Event::Message(pp.clone()));
                cluster.queue.clear();
                let Some(Kind::PrePrepare(k)) = pp.kind else {
                    unreachable!("the first message is the pre-prepare")
                };
                let prepare = sign(
                    &cluster.keys[2],
                    "hospital-test",
                    2,
                    Kind::Prepare(v1::Prepare {
                        view: k.view,
                        seq: k.seq,
                        digest: k.digest,
                    }),
                    None,
                );
                let _ = pp.batch.map(|b| b.digest());
                (cluster, prepare)
            },
            |(mut cluster, prepare)| {
                cluster.event(1, Event::Message(prepare));
                cluster
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, commit, one_prepare);
criterion_main!(benches);
