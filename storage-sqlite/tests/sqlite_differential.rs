//! Random batches applied to the reference `MemoryStorage` and to `SqliteStorage` give the
//! same outcome (committed or rejected, by variant) and the same answer from every read
//! method, including the integrity check's message.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup step is a failed test"
)]

mod support;

use support::{assert_same_reads, client_ids, random_batch, variant, Rng, TempDir, CONVS};
use tidemark_engine::{MemoryStorage, Storage};
use tidemark_storage_sqlite::SqliteStorage;

/// Seeds run; each applies `BATCHES` random batches.
const SEEDS: u64 = 24;
const BATCHES: usize = 60;

async fn run_seed(seed: u64, sqlite: SqliteStorage) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let ids = client_ids();
    let memory = MemoryStorage::new();
    let (mut committed, mut rejected) = (0, 0);
    for i in 0..BATCHES {
        let batch = random_batch(&mut rng, &ids);
        let rm = memory.apply(batch.clone()).await;
        let rs = sqlite.apply(batch.clone()).await;
        match (&rm, &rs) {
            (Ok(a), Ok(b)) if a == b => committed += 1,
            (Err(a), Err(b)) if variant(a) == variant(b) => rejected += 1,
            _ => panic!("seed {seed} batch {i}: memory {rm:?}, sqlite {rs:?}\n{batch:#?}"),
        }
        let context = format!("seed {seed} after batch {i}");
        let thorough = i % 15 == 14;
        assert_same_reads(&memory, &sqlite, &CONVS, &ids, thorough, &context).await;
    }
    (committed, rejected)
}

#[tokio::test]
async fn random_batches_match_the_memory_store() {
    let (mut committed, mut rejected) = (0, 0);
    for seed in 0..SEEDS {
        let (c, r) = run_seed(seed, SqliteStorage::open_in_memory().unwrap()).await;
        committed += c;
        rejected += r;
    }
    // Both outcomes must be exercised, or the test proves little.
    assert!(
        committed > 100 && rejected > 20,
        "{committed} committed, {rejected} rejected"
    );
    println!("{committed} batches committed, {rejected} rejected, on both stores alike");
}

/// The same on a file, and the file reopened still matches.
#[tokio::test]
async fn random_batches_match_on_a_file_and_after_reopen() {
    let dir = TempDir::new("differential");
    let path = dir.file("store.db");
    let seed = 1_000;
    run_seed(seed, SqliteStorage::open(&path).unwrap()).await;

    // Replay the same batches on a fresh memory store to compare with the reopened file.
    let mut rng = Rng::new(seed);
    let ids = client_ids();
    let memory = MemoryStorage::new();
    for _ in 0..BATCHES {
        let _ = memory.apply(random_batch(&mut rng, &ids)).await;
    }
    let reopened = SqliteStorage::open(&path).unwrap();
    assert_same_reads(&memory, &reopened, &CONVS, &ids, true, "reopened").await;
}
