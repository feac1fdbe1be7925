//! The write-ahead log of the durable storage: torn tails, segment rollover,
//! purge and truncation across segments, corruption, reopening.

use std::io::Write;
use std::path::Path;

use super::durable;
use super::wal::{Framed, Record, Wal, WalError, WalOptions, frame};
use crate::typecfg::{Entry, LogId};
use cluster_core::MemberId;
use openraft::{CommittedLeaderId, EntryPayload};

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, MemberId::from(1u64)), index)
}

fn entry(index: u64) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Blank }
}

fn framed(index: u64) -> Framed {
    Framed { index: Some(index), bytes: frame(&Record::Entry(entry(index))).expect("frames") }
}

fn small() -> WalOptions {
    // About 6 entries per segment.
    WalOptions { segment_size: 128 }
}

fn write_all(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        wal.write(&framed(i)).expect("write");
    }
    wal.sync().expect("sync");
}

fn indexes(dir: &Path, options: WalOptions, purged: Option<u64>) -> (Vec<u64>, Wal) {
    let (wal, recovered) = Wal::open(dir, options, purged).expect("reopen");
    (recovered.entries.keys().copied().collect(), wal)
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open segment");
    f.write_all(bytes).expect("append");
}

#[test]
fn a_torn_tail_is_cut_at_the_last_good_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default(), None).expect("open");
    write_all(&mut wal, 1..=10);
    drop(wal);

    // Half a record, as a crash in the middle of a write leaves it.
    let half = framed(11).bytes;
    append_bytes(&last_segment(dir.path()), &half[..half.len() / 2]);
    let (wal, recovered) = Wal::open(dir.path(), WalOptions::default(), None).expect("reopen");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(recovered.torn_bytes, (half.len() / 2) as u64);
    drop(wal);

    // A whole record with a bad checksum, then garbage.
    let mut bad = framed(11).bytes;
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    bad.extend_from_slice(&[0xAB; 37]);
    append_bytes(&last_segment(dir.path()), &bad);
    let (mut wal, recovered) = Wal::open(dir.path(), WalOptions::default(), None).expect("reopen");
    assert_eq!(recovered.entries.len(), 10);
    assert_eq!(recovered.torn_bytes, bad.len() as u64);

    // The log continues after the cut.
    write_all(&mut wal, 11..=12);
    drop(wal);
    let (got, _) = indexes(dir.path(), WalOptions::default(), None);
    assert_eq!(got, (1..=12).collect::<Vec<_>>());
}

#[test]
fn the_durable_storage_reopens_after_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal_dir = dir.path().join(durable::WAL_DIR);
    let (mut wal, _) = Wal::open(&wal_dir, WalOptions::default(), None).expect("open");
    write_all(&mut wal, 0..=5);
    wal.write_committed(Some(log_id(4))).expect("committed");
    wal.sync().expect("sync");
    drop(wal);
    append_bytes(&last_segment(&wal_dir), &[9, 0, 0, 0, 1, 2]);

    let opened = durable::open(&dir.path().join("raft.redb")).expect("open");
    assert_eq!(opened.log.log.keys().copied().collect::<Vec<_>>(), (0..=5).collect::<Vec<_>>());
    assert_eq!(opened.log.committed, Some(log_id(4)));
    assert_eq!(opened.log.last_purged, None);
    opened.writer.close();
}

#[test]
fn segments_roll_over_and_purge_deletes_whole_purged_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut wal, _) = Wal::open(dir.path(), small(), None).expect("open");
    wal.write_committed(Some(log_id(3))).expect("committed");
    write_all(&mut wal, 1..=50);
    let before = wal.segment_ids();
    assert!(before.len() >= 5, "rolled over: {before:?}");

    wal.purge(30).expect("purge");
    let after = wal.segment_ids();
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(after[0] > 1, "the oldest segments are gone: {after:?}");
    let on_disk = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(on_disk, after.len(), "files match the segments");
    drop(wal);

    // Entries at or below the purge point left in a partly purged segment are skipped.
    let (wal, recovered) = Wal::open(dir.path(), small(), Some(30)).expect("reopen");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (31..=50).collect::<Vec<_>>());
    assert_eq!(recovered.committed, Some(Some(log_id(3))), "the committed id survives the purge");
    assert_eq!(wal.segment_ids(), after);

    // Purging everything keeps the active segment.
    let mut wal = wal;
    wal.purge(50).expect("purge all");
    assert_eq!(wal.segment_ids().len(), 1);
    write_all(&mut wal, 51..=52);
    drop(wal);
    let (got, _) = indexes(dir.path(), small(), Some(50));
    assert_eq!(got, vec![51, 52]);
}

#[test]
fn truncate_across_a_segment_boundary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut wal, _) = Wal::open(dir.path(), small(), None).expect("open");
    write_all(&mut wal, 1..=40);
    wal.write_committed(Some(log_id(9))).expect("committed");
    wal.sync().expect("sync");
    let before = wal.segment_ids();

    wal.truncate(12).expect("truncate");
    let after = wal.segment_ids();
    assert!(after.len() < before.len() - 2, "{before:?} -> {after:?}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), after.len());
    drop(wal);

    let (wal, recovered) = Wal::open(dir.path(), small(), None).expect("reopen");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (1..=11).collect::<Vec<_>>());
    assert_eq!(recovered.committed, Some(Some(log_id(9))), "the committed id survives the truncation");

    // New entries follow the cut, rolling over again.
    let mut wal = wal;
    write_all(&mut wal, 12..=30);
    wal.truncate(30).expect("truncate the last entry");
    wal.truncate(100).expect("truncating past the end does nothing");
    drop(wal);
    let (got, _) = indexes(dir.path(), small(), None);
    assert_eq!(got, (1..=29).collect::<Vec<_>>());
}

#[test]
fn corruption_before_the_last_segment_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut wal, _) = Wal::open(dir.path(), small(), None).expect("open");
    write_all(&mut wal, 1..=30);
    let first = dir.path().join(format!("{:08}.wal", wal.segment_ids()[0]));
    drop(wal);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[10] ^= 0x55;
    std::fs::write(&first, bytes).expect("write");
    match Wal::open(dir.path(), small(), None) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Through the storage: an error, no panic.
    let redb = tempfile::tempdir().expect("temp dir");
    assert!(durable::open_with(&redb.path().join("raft.redb"), dir.path(), small()).is_err());
}

#[test]
fn a_redb_log_of_an_older_build_moves_to_the_write_ahead_log() {
    use redb::{Database, TableDefinition};
    const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
    const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    {
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut log = txn.open_table(LOG).expect("log");
            for i in 3..=9 {
                log.insert(i, enc(&entry(i)).as_slice()).expect("insert");
            }
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("committed", enc(&Some(log_id(8))).as_slice()).expect("insert");
            meta.insert("last_purged", enc(&log_id(4)).as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    for _ in 0..2 {
        // The second open finds the log already moved.
        let opened = durable::open(&path).expect("open");
        assert_eq!(opened.log.log.keys().copied().collect::<Vec<_>>(), (5..=9).collect::<Vec<_>>());
        assert_eq!(opened.log.committed, Some(log_id(8)));
        assert_eq!(opened.log.last_purged, Some(log_id(4)));
        opened.writer.close();
    }
    let (got, _) = indexes(&dir.path().join(durable::WAL_DIR), WalOptions::default(), None);
    assert_eq!(got, (3..=9).collect::<Vec<_>>());
}

/// bincode as the older build stored values.
fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
}

/// A log of entries 1..=n in one segment; returns the segment and the
/// offset of each entry record.
fn one_segment(dir: &Path, n: u64) -> (std::path::PathBuf, Vec<u64>) {
    let (mut wal, _) = Wal::open(dir, WalOptions::default(), None).expect("open");
    let mut offsets = Vec::new();
    let mut at = 0u64;
    for i in 1..=n {
        let f = framed(i);
        offsets.push(at);
        at += f.bytes.len() as u64;
        wal.write(&f).expect("write");
    }
    wal.sync().expect("sync");
    drop(wal);
    (last_segment(dir), offsets)
}

fn flip(path: &Path, offset: usize, len: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    for b in &mut bytes[offset..offset + len] {
        *b ^= 0xA5;
    }
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn flipped_bytes_before_valid_records_are_corruption_at_every_offset() {
    let record = framed(1).bytes.len();
    // In the length, the CRC, the payload, and across two records.
    for within in [0, 2, 5, 9, record - 4, record - 2] {
        for victim in [1usize, 10, 18] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (segment, offsets) = one_segment(dir.path(), 20);
            let at = offsets[victim - 1] as usize + within;
            flip(&segment, at, 4);
            match Wal::open(dir.path(), WalOptions::default(), None) {
                Err(WalError::Corrupt { path, offset, reason }) => {
                    assert_eq!(path, segment);
                    assert_eq!(
                        offset,
                        offsets[victim - 1],
                        "the first bad record ({within} into {victim}): {reason}"
                    );
                    let message = WalError::Corrupt { path, offset, reason }.to_string();
                    assert!(message.contains(&format!("byte offset {offset}")), "{message}");
                }
                other => {
                    panic!("flip at {at} (entry {victim} + {within}): expected corruption, got {other:?}")
                }
            }
            // Refused, not repaired: the file is untouched.
            assert_eq!(std::fs::metadata(&segment).expect("meta").len(), (record * 20) as u64);
        }
    }
}

#[test]
fn a_flipped_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (segment, offsets) = one_segment(dir.path(), 20);
    flip(&segment, offsets[19] as usize + 9, 4);
    let (wal, recovered) = Wal::open(dir.path(), WalOptions::default(), None).expect("a torn tail is cut");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (1..=19).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&segment).expect("meta").len(), offsets[19]);
    drop(wal);
}

#[test]
fn truncation_anywhere_in_the_last_record_is_a_torn_tail() {
    let record = framed(1).bytes.len() as u64;
    for cut in [1, 4, 8, 9, record - 1] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (segment, offsets) = one_segment(dir.path(), 10);
        let f = std::fs::OpenOptions::new().write(true).open(&segment).expect("open");
        f.set_len(offsets[9] + cut).expect("truncate");
        drop(f);
        let (_, recovered) = Wal::open(dir.path(), WalOptions::default(), None).expect("reopen");
        assert_eq!(recovered.entries.len(), 9, "cut {cut} bytes into the last record");
        assert_eq!(recovered.torn_bytes, cut);
    }
}

#[test]
fn zeros_after_the_tail_are_not_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (segment, offsets) = one_segment(dir.path(), 10);
    // Preallocated or zero-filled space, as after a crash that extended the file.
    append_bytes(&segment, &vec![0u8; 64 * 1024]);
    let (_, recovered) = Wal::open(dir.path(), WalOptions::default(), None).expect("zeros are a torn tail");
    assert_eq!(recovered.entries.len(), 10);
    assert_eq!(recovered.torn_bytes, 64 * 1024);
    drop(offsets);

    // Zeros over a record in the middle, with records after it: corruption.
    let dir = tempfile::tempdir().expect("temp dir");
    let (segment, offsets) = one_segment(dir.path(), 10);
    let mut bytes = std::fs::read(&segment).expect("read");
    let (from, to) = (offsets[3] as usize, offsets[5] as usize);
    bytes[from..to].fill(0);
    std::fs::write(&segment, bytes).expect("write");
    match Wal::open(dir.path(), WalOptions::default(), None) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[3]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_segment_or_a_hole_between_entries_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut wal, _) = Wal::open(dir.path(), small(), None).expect("open");
    write_all(&mut wal, 1..=40);
    let ids = wal.segment_ids();
    drop(wal);
    std::fs::remove_file(dir.path().join(format!("{:08}.wal", ids[2]))).expect("remove");
    match Wal::open(dir.path(), small(), None) {
        Err(WalError::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("expected corruption, got {other:?}"),
    }

    // A record removed from the middle of a segment: its neighbours are whole.
    let dir = tempfile::tempdir().expect("temp dir");
    let (segment, offsets) = one_segment(dir.path(), 10);
    let mut bytes = std::fs::read(&segment).expect("read");
    drop(bytes.drain(offsets[4] as usize..offsets[5] as usize));
    std::fs::write(&segment, bytes).expect("write");
    match Wal::open(dir.path(), WalOptions::default(), None) {
        Err(WalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, offsets[4]);
            assert!(reason.contains("entry 6 follows entry 4"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn the_durable_storage_refuses_a_corrupt_log_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal_dir = dir.path().join(durable::WAL_DIR);
    let (segment, offsets) = one_segment(&wal_dir, 12);
    flip(&segment, offsets[5] as usize + 10, 4);
    let err = match durable::open(&dir.path().join("raft.redb")) {
        Err(e) => e,
        Ok(_) => panic!("a corrupt log opened"),
    };
    assert_eq!(err.corruption(), Some((segment.as_path(), Some(offsets[5]))));
    let message = err.to_string();
    assert!(message.contains("--reset-raft-state"), "says what to do: {message}");
}

#[test]
fn a_snapshot_that_fails_its_checksum_is_refused() {
    use crate::state_machine::{KvState, SnapshotVault, StoredSnapshot};
    use crate::typecfg::SnapshotMeta;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let state = KvState::default();
    let snapshot = StoredSnapshot {
        meta: SnapshotMeta { last_log_id: Some(log_id(3)), snapshot_id: "s".into(), ..Default::default() },
        data: state.to_bytes().expect("encodes"),
    };
    {
        let opened = durable::open(&path).expect("open");
        opened.writer.save(&snapshot).expect("save");
        opened.writer.close();
    }
    let opened = durable::open(&path).expect("reopen");
    assert_eq!(opened.snapshot.expect("a snapshot").meta.snapshot_id, "s");
    opened.writer.close();

    // One bit of the sealed snapshot, changed in place in redb.
    {
        use redb::{Database, ReadableDatabase, TableDefinition};
        const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
        let db = Database::create(&path).expect("db");
        let mut sealed = {
            let txn = db.begin_read().expect("txn");
            let table = txn.open_table(META).expect("table");
            table.get("snapshot_crc32").expect("get").expect("sealed snapshot").value().to_vec()
        };
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let txn = db.begin_write().expect("txn");
        txn.open_table(META).expect("table").insert("snapshot_crc32", sealed.as_slice()).expect("insert");
        txn.commit().expect("commit");
    }
    match durable::open(&path) {
        Err(e) => {
            assert_eq!(e.corruption(), Some((path.as_path(), None)));
            assert!(e.to_string().contains("checksum"), "{e}");
        }
        Ok(_) => panic!("a snapshot that fails its checksum was accepted"),
    }
}

#[test]
fn a_redb_file_that_does_not_open_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    durable::open(&path).expect("create").writer.close();
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[..64].fill(0x5A);
    std::fs::write(&path, bytes).expect("write");
    match durable::open(&path) {
        Err(e) => {
            assert_eq!(e.corruption(), Some((path.as_path(), None)), "{e}");
            assert!(e.to_string().contains("raft.redb"), "{e}");
        }
        Ok(_) => panic!("a garbled redb file opened"),
    }
}

/// One thing raft asks of its log.
#[derive(Debug, Clone)]
enum WalOp {
    /// Appends this many entries after the last.
    Append(u64),
    /// Deletes from the entry this far back from the end (0: the last).
    Truncate(u64),
    /// Purges up to the entry this far back from the end.
    Purge(u64),
    /// Closes the log and opens it again.
    Reopen,
}

fn any_wal_op() -> impl proptest::strategy::Strategy<Value = WalOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1..8u64).prop_map(WalOp::Append),
        1 => (0..6u64).prop_map(WalOp::Truncate),
        1 => (0..10u64).prop_map(WalOp::Purge),
        1 => Just(WalOp::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever raft did to the log (appends across segment boundaries,
    /// truncations, purges, reopens) and however the last write was torn,
    /// reopening gives back exactly the entries raft still has.
    #[test]
    fn a_reopened_log_holds_what_raft_left_in_it(
        ops in proptest::collection::vec(any_wal_op(), 1..40),
        torn in proptest::option::of(1usize..64),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut wal, _) = Wal::open(dir.path(), small(), None).expect("open");
        // The model: what raft holds, and the last purged index.
        let mut model: Vec<u64> = Vec::new();
        let mut purged: Option<u64> = None;
        let last = |model: &Vec<u64>, purged: Option<u64>| model.last().copied().or(purged).unwrap_or(0);
        for op in ops {
            match op {
                WalOp::Append(n) => {
                    let from = last(&model, purged) + 1;
                    write_all(&mut wal, from..=from + n - 1);
                    model.extend(from..from + n);
                }
                WalOp::Truncate(back) => {
                    let Some(at) = model.len().checked_sub(1 + back as usize) else { continue };
                    let index = model[at];
                    wal.truncate(index).expect("truncate");
                    model.truncate(at);
                }
                WalOp::Purge(back) => {
                    let Some(at) = model.len().checked_sub(1 + back as usize) else { continue };
                    // Raft makes the purge point durable before it purges.
                    let index = model[at];
                    purged = Some(index);
                    wal.purge(index).expect("purge");
                    model.drain(..=at);
                }
                WalOp::Reopen => {
                    drop(wal);
                    let (keys, reopened) = indexes(dir.path(), small(), purged);
                    proptest::prop_assert_eq!(&keys, &model);
                    wal = reopened;
                }
            }
        }
        wal.sync().expect("sync");
        drop(wal);
        if let Some(cut) = torn {
            // A crash in the middle of the next record's write.
            let next = framed(last(&model, purged) + 1).bytes;
            append_bytes(&last_segment(dir.path()), &next[..cut.min(next.len() - 1)]);
        }
        let (wal, recovered) = Wal::open(dir.path(), small(), purged).expect("reopen");
        let keys: Vec<u64> = recovered.entries.keys().copied().collect();
        proptest::prop_assert_eq!(&keys, &model);
        for (index, entry) in &recovered.entries {
            proptest::prop_assert_eq!(entry.log_id.index, *index);
        }
        proptest::prop_assert_eq!(recovered.torn_bytes, torn.map_or(0, |cut| cut.min(framed(last(&model, purged) + 1).bytes.len() - 1)) as u64);
        drop(wal);
        // The cut is durable: a second open finds nothing torn.
        let (_, again) = Wal::open(dir.path(), small(), purged).expect("reopen twice");
        proptest::prop_assert_eq!(again.torn_bytes, 0);
    }
}
