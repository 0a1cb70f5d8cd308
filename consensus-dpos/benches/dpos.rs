//! The DPoS engine alone: the full 121-institution consortium (101 RPN + 20 ATN) in one process,
//! real k256 signatures, every engine verifying everything it receives, instant delivery.
//!
//!     cargo bench -p medchain-dpos --bench dpos
//!
//! `dpos::finalize/rpn=101,atn=20,block=128` drives one 128-item block from submission to
//! finality at all 121 engines (proposal, auditor relays, 20 prevotes, 20 precommits, each
//! verified by every receiver); its throughput is final items per second for the whole in-memory
//! consortium on one core, and its time divided by 121 is one node's cost per block.
//! `dpos::check_block/items=128` is one node's validation of a proposed block at height 2 (Merkle
//! root, items, the parent's 14-signature finality certificate).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use medchain_crypto::validators::EcdsaVerifier;
use medchain_dpos::local_cluster::{test_genesis, test_params, LocalCluster};
use medchain_dpos::{ChainState, Params};

const BLOCK: usize = 128;

fn params() -> Params {
    Params {
        max_block_items: BLOCK,
        ..test_params()
    }
}

fn items(tag: &str) -> Vec<Vec<u8>> {
    (0..BLOCK)
        .map(|i| format!("{tag} slip {i:04} {}", "x".repeat(200)).into_bytes())
        .collect()
}

fn finalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("dpos::finalize");
    group.throughput(Throughput::Elements(BLOCK as u64));
    group.sample_size(10);
    group.bench_function("rpn=101,atn=20,block=128", |b| {
        b.iter_batched(
            || {
                let mut cluster = LocalCluster::new(101, 20, 0, params(), EcdsaVerifier);
                cluster.start();
                (cluster, items("bench"))
            },
            |(mut cluster, items)| {
                for item in &items {
                    for i in 0..cluster.engines.len() as u32 {
                        cluster.event(i, medchain_dpos::Event::Submit(item.clone()));
                    }
                }
                cluster.run();
                assert!(cluster.ledgers.iter().all(|l| l.blocks.len() == 1));
                cluster
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn check_block(c: &mut Criterion) {
    // Two real blocks from a 121-institution run; the measured input is block 2 on top of the
    // state after block 1.
    let mut cluster = LocalCluster::new(101, 20, 0, params(), EcdsaVerifier);
    cluster.start();
    for tag in ["one", "two"] {
        for item in items(tag) {
            cluster.submit_all(&item);
        }
    }
    assert!(cluster.run_until_height(2, 1_000_000));
    let ledger = &cluster.ledgers[0];
    let genesis = ChainState::genesis(&test_genesis(&cluster.keys, 101, 20, params())).unwrap();
    let b1 = ledger.blocks[0].block.clone().unwrap();
    let cert1 = ledger.blocks[0].certificate.clone().unwrap();
    let checked = genesis
        .check_block(&b1, &params(), ledger, &EcdsaVerifier)
        .unwrap();
    let state1 = genesis.apply_block(&b1, &checked, &cert1, &params(), ledger);
    let b2 = ledger.blocks[1].block.clone().unwrap();
    let mut group = c.benchmark_group("dpos::check_block");
    group.throughput(Throughput::Elements(BLOCK as u64));
    group.bench_function("items=128", |b| {
        b.iter(|| {
            state1
                .check_block(&b2, &params(), ledger, &EcdsaVerifier)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, finalize, check_block);
criterion_main!(benches);
