//! The log's write-ahead journal: what makes an appended entry durable with fsync on.
//!
//! A redb commit writes ~9 pages at scattered places of its file (the B-tree path, the
//! allocator state, the header) before its one fsync; appending one log entry that way took
//! 219 us at p50 here, where writing the same bytes over a preallocated file and calling
//! `fdatasync` took 87 us (no block allocated, no file size changed, one place written). So
//! appends are committed to redb without a sync (readable at once, on disk at the next
//! synced commit), and their bytes are written, checksummed, to this journal, which is
//! synced before openraft hears that they are durable.
//!
//! Generations keep it correct. The database's meta table holds the generation `G` whose
//! records the database may lack. Each synced commit of the log store (a vote, a truncation,
//! a purge, an append too large for what is left of the journal) writes `G + 1` in the same
//! transaction; once that is on disk everything journaled before is in the database (or was
//! truncated or purged away on purpose), and the journal starts again at its beginning with
//! `G + 1`, overwriting. Opening a store reads, from the beginning of the journal, every
//! record of generation `G` with a good checksum, in order, and stops at the first other: a
//! write torn by the crash, the zeros of a fresh file or an older generation's leftovers.
//! Those records go back into the database, which is then committed (synced) with `G + 1`.
//! A damaged record followed by a good one of the same generation is not a torn write (each
//! record is synced before the next is written) but damage on disk: opening fails then.
//! Records also carry a random id of their database (in its meta table), so a journal left
//! beside another database (a fresh one, a restored copy of another server's) is never read
//! into it.
//!
//! Record: `[payload length u32][crc32 u32][generation u64][database id u64][payload]`,
//! little-endian, the checksum over length, generation, id and payload; payload:
//! `[index u64][length u32][entry]` repeated, each entry as the log table holds it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of the journal file, written once when it is made. Appends of the throughput
/// benchmark (256 updates each) take ~3.5 KiB: a synced database commit every ~2 400.
pub const JOURNAL_BYTES: u64 = 8 << 20;

const HEADER: usize = 24;

/// The journal of one store (see the module documentation).
pub struct Journal {
    file: File,
    path: PathBuf,
    capacity: u64,
    /// The id of the database its records belong to.
    id: u64,
    generation: u64,
    /// Where the next record goes.
    offset: u64,
    buf: Vec<u8>,
}

impl Journal {
    /// Opens the journal of database `id` at `path`, making it (`capacity` bytes of zeros,
    /// synced, its directory too) if it is missing or shorter. Appends go nowhere until
    /// [`Journal::restart`] names their generation.
    pub fn open(path: &Path, capacity: u64, id: u64) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < capacity {
            // Written, not just sized: blocks allocated but never written would make each
            // later fdatasync record their conversion in the file system's journal.
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < capacity {
                let n = zeros.len().min((capacity - at) as usize);
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Journal {
            file,
            path: path.to_owned(),
            capacity: capacity.max(len),
            id,
            generation: 0,
            offset: 0,
            buf: Vec::new(),
        })
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation appends are written with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entries of every intact record of `generation`, from the beginning, in order.
    /// An error if a damaged record of it is followed by an intact one (damage on disk, not a
    /// write torn by a crash): entries after it were acknowledged.
    pub fn records(&self, generation: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut at = 0u64;
        loop {
            match self.record_at(at, generation)? {
                Record::Intact(entries, next) => {
                    out.extend(entries);
                    at = next;
                }
                Record::Damaged(next) => {
                    if let Record::Intact(..) = self.record_at(next, generation)? {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the record at offset {at} of generation {generation} is \
                                 damaged, and intact records follow it: entries after it were \
                                 acknowledged and cannot be read"
                            ),
                        ));
                    }
                    return Ok(out);
                }
                Record::None => return Ok(out),
            }
        }
    }

    /// What starts at `at`: a record of this database and `generation`, whole or damaged
    /// (with where the next would start), or none.
    fn record_at(&self, at: u64, generation: u64) -> io::Result<Record> {
        let mut header = [0u8; HEADER];
        if at + HEADER as u64 > self.capacity {
            return Ok(Record::None);
        }
        self.file.read_exact_at(&mut header, at)?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let record_gen = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let record_id = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let next = at + HEADER as u64 + len;
        if len == 0 || record_gen != generation || record_id != self.id || next > self.capacity {
            return Ok(Record::None);
        }
        let mut payload = vec![0u8; len as usize];
        self.file.read_exact_at(&mut payload, at + HEADER as u64)?;
        if checksum(&header[0..4], &header[8..24], &payload) != crc {
            return Ok(Record::Damaged(next));
        }
        Ok(match parse(&payload) {
            Some(entries) => Record::Intact(entries, next),
            None => Record::Damaged(next),
        })
    }

    /// Appends from the beginning from now on, as `generation` (after a synced database
    /// commit recorded it).
    pub fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.offset = 0;
    }

    /// Writes one record of `entries` and syncs it. `Ok(false)`: it does not fit in what is
    /// left (nothing written; the caller commits them to the database with a sync instead).
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> io::Result<bool> {
        self.buf.clear();
        self.buf.resize(HEADER, 0);
        for (index, bytes) in entries {
            self.buf.extend_from_slice(&index.to_le_bytes());
            self.buf
                .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(bytes);
        }
        let len = self.buf.len() - HEADER;
        if len == 0 {
            return Ok(true);
        }
        if len > u32::MAX as usize || self.offset + self.buf.len() as u64 > self.capacity {
            return Ok(false);
        }
        self.buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[8..16].copy_from_slice(&self.generation.to_le_bytes());
        self.buf[16..24].copy_from_slice(&self.id.to_le_bytes());
        let crc = checksum(&self.buf[0..4], &self.buf[8..24], &self.buf[HEADER..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buf.len() as u64;
        Ok(true)
    }
}

/// What a read found at an offset (see [`Journal::record_at`]).
enum Record {
    /// The entries, and where the next record starts.
    Intact(Vec<(u64, Vec<u8>)>, u64),
    /// A record of the generation whose checksum or contents are wrong; where the next
    /// would start if its length is right.
    Damaged(u64),
    None,
}

/// CRC-32 of the length, the generation and database id, and the payload.
fn checksum(len: &[u8], generation_and_id: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(generation_and_id);
    h.update(payload);
    h.finalize()
}

/// A record's entries; `None` if the payload does not parse (never written by us whole).
fn parse(mut payload: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let index = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
        let bytes = payload.get(12..12 + len)?;
        out.push((index, bytes.to_vec()));
        payload = &payload[12 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        (from..from + n)
            .map(|i| (i, format!("entry {i}").into_bytes()))
            .collect()
    }

    fn append(j: &mut Journal, es: &[(u64, Vec<u8>)]) -> bool {
        j.append(es.iter().map(|(i, b)| (*i, b.as_slice())))
            .expect("append")
    }

    #[test]
    fn records_of_the_generation_come_back_in_order_and_stop_at_the_first_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 4096, 42).expect("open");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 4096);
        assert!(
            j.records(0).expect("read").is_empty(),
            "zeros are no record"
        );
        j.restart(7);
        assert!(append(&mut j, &entries(1, 3)));
        assert!(append(&mut j, &entries(4, 2)));
        let j = Journal::open(&path, 4096, 42).expect("reopen");
        assert_eq!(j.records(7).expect("read"), entries(1, 5));
        assert!(j.records(6).expect("read").is_empty(), "another generation");
        let other = Journal::open(&path, 4096, 43).expect("reopen");
        assert!(
            other.records(7).expect("read").is_empty(),
            "another database's records"
        );

        // A new generation overwrites from the beginning: the older records after it are
        // not read back.
        let mut j = j;
        j.restart(8);
        assert!(append(&mut j, &entries(10, 1)));
        assert_eq!(j.records(8).expect("read"), entries(10, 1));
    }

    /// Three records of generation 1; the one at `tear` (0, 1 or 2) loses a payload byte.
    fn with_one_damaged(tear: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j");
        let mut j = Journal::open(&path, 4096, 42).expect("open");
        j.restart(1);
        let mut starts = Vec::new();
        for from in [1, 3, 5] {
            starts.push(j.offset);
            assert!(append(&mut j, &entries(from, 2)));
        }
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        file.write_all_at(&[0xff], starts[tear] + HEADER as u64 + 3)
            .expect("tear");
        (dir, path)
    }

    #[test]
    fn a_torn_last_record_ends_what_is_read() {
        let (_dir, path) = with_one_damaged(2);
        let j = Journal::open(&path, 4096, 42).expect("reopen");
        assert_eq!(j.records(1).expect("read"), entries(1, 4));
    }

    #[test]
    fn a_damaged_record_with_intact_ones_after_it_is_an_error() {
        let (_dir, path) = with_one_damaged(1);
        let j = Journal::open(&path, 4096, 42).expect("reopen");
        let err = j.records(1).expect_err("damage, not a torn write");
        let text = err.to_string();
        assert!(
            text.contains("damaged") && text.contains("offset 62"),
            "{text}"
        );
    }

    #[test]
    fn a_record_that_does_not_fit_is_not_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = Journal::open(&dir.path().join("j"), 64, 42).expect("open");
        j.restart(1);
        assert!(append(&mut j, &[(1, vec![1u8; 20])]));
        assert!(
            !append(&mut j, &[(2, vec![2u8; 20])]),
            "24 + 12 + 20 more is over 64"
        );
        assert_eq!(j.records(1).expect("read"), vec![(1, vec![1u8; 20])]);
        assert!(append(&mut j, &[]), "nothing to write");
    }
}
