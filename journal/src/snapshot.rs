//! State snapshots tagged with the journal sequence they cover.
//!
//! Each snapshot is one file `snapshots/{seq:020}.snap` in the journal
//! directory, written to a temporary name, synced, renamed into place and
//! the directory synced, so a crash leaves either the old set or the new
//! one. The newest `keep` are kept. Layout: `journal/FORMAT.md`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::format::{get_u32, get_u64, put_u32, put_u64};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"OTDMSNAP";
pub const SNAPSHOT_VERSION: u32 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A snapshot read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub data: Vec<u8>,
}

/// What is on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub bytes: u64,
    pub valid: bool,
    pub path: PathBuf,
}

/// The snapshot store of one journal directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    keep: usize,
}

fn name(seq: u64) -> String {
    format!("{seq:020}.snap")
}

fn parse(name: &str) -> Option<u64> {
    let d = name.strip_suffix(".snap")?;
    (d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit())).then(|| d.parse().ok()).flatten()
}

fn crc(header: &[u8], data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[16..32]), data)
}

impl Snapshots {
    /// The store under `journal_dir/snapshots`, keeping the newest `keep` (at least 1).
    pub fn open(journal_dir: impl AsRef<Path>, keep: usize) -> io::Result<Snapshots> {
        let dir = journal_dir.as_ref().join(SNAPSHOT_DIR);
        fs::create_dir_all(&dir)?;
        Ok(Snapshots { dir, keep: keep.max(1) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably writes a snapshot of the state after record `seq`, then
    /// removes the oldest beyond `keep`.
    pub fn write(&self, seq: u64, data: &[u8]) -> io::Result<PathBuf> {
        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        put_u32(&mut header, 8, SNAPSHOT_VERSION);
        put_u64(&mut header, 16, seq);
        put_u64(&mut header, 24, data.len() as u64);
        let c = crc(&header, data);
        put_u32(&mut header, 12, c);
        let tmp = self.dir.join(format!(".{}.tmp", name(seq)));
        let path = self.dir.join(name(seq));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.prune()?;
        Ok(path)
    }

    fn read_file(path: &Path) -> io::Result<Result<Snapshot, &'static str>> {
        let mut f = File::open(path)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if buf.len() < SNAPSHOT_HEADER_BYTES || buf[..8] != SNAPSHOT_MAGIC {
            return Ok(Err("not a snapshot"));
        }
        if get_u32(&buf, 8) != SNAPSHOT_VERSION {
            return Ok(Err("unsupported snapshot version"));
        }
        let seq = get_u64(&buf, 16);
        // Compared as u64 against what is there: a hostile length near
        // 2^64 must not overflow an addition.
        let len = get_u64(&buf, 24);
        if (buf.len() - SNAPSHOT_HEADER_BYTES) as u64 != len {
            return Ok(Err("snapshot length mismatch"));
        }
        let data = buf.split_off(SNAPSHOT_HEADER_BYTES);
        if get_u32(&buf, 12) != crc(&buf, &data) {
            return Ok(Err("snapshot checksum mismatch"));
        }
        if path.file_name().and_then(|n| n.to_str()).and_then(parse) != Some(seq) {
            return Ok(Err("snapshot name disagrees with its header"));
        }
        Ok(Ok(Snapshot { seq, data }))
    }

    /// The snapshot at `seq`, checked (`Ok(Err(why))` when it does not check out).
    pub fn read(&self, seq: u64) -> io::Result<Result<Snapshot, &'static str>> {
        Self::read_file(&self.dir.join(name(seq)))
    }

    /// Every snapshot file, oldest first, with whether it checks out.
    pub fn list(&self) -> io::Result<Vec<SnapshotInfo>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(seq) = e.file_name().to_str().and_then(parse) else { continue };
            let path = e.path();
            let valid = matches!(Self::read_file(&path), Ok(Ok(_)));
            v.push(SnapshotInfo { seq, bytes: e.metadata()?.len(), valid, path });
        }
        v.sort_by_key(|s| s.seq);
        Ok(v)
    }

    /// The newest snapshot that checks out; damaged ones are skipped (and
    /// logged), so a torn newest snapshot falls back to the previous one.
    pub fn latest(&self) -> io::Result<Option<Snapshot>> {
        for info in self.list()?.into_iter().rev() {
            match Self::read_file(&info.path)? {
                Ok(s) => return Ok(Some(s)),
                Err(reason) => tracing::warn!(path = %info.path.display(), reason, "skipping damaged snapshot"),
            }
        }
        Ok(None)
    }

    fn prune(&self) -> io::Result<()> {
        let all = self.list()?;
        let valid: Vec<&SnapshotInfo> = all.iter().filter(|s| s.valid).collect();
        if valid.len() <= self.keep {
            return Ok(());
        }
        let oldest_kept = valid[valid.len() - self.keep].seq;
        for s in all.iter().filter(|s| s.seq < oldest_kept) {
            fs::remove_file(&s.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_latest_prune_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(dir.path(), 2).unwrap();
        assert_eq!(s.latest().unwrap(), None);
        s.write(10, b"ten").unwrap();
        s.write(20, b"twenty").unwrap();
        s.write(30, b"thirty").unwrap();
        let seqs: Vec<u64> = s.list().unwrap().iter().map(|i| i.seq).collect();
        assert_eq!(seqs, vec![20, 30], "keeps the newest two");
        assert_eq!(s.latest().unwrap(), Some(Snapshot { seq: 30, data: b"thirty".to_vec() }));
        // Damage the newest: opening falls back to the previous one.
        let p = s.dir().join(name(30));
        let mut b = fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&p, b).unwrap();
        assert_eq!(s.latest().unwrap(), Some(Snapshot { seq: 20, data: b"twenty".to_vec() }));
        // A header claiming a length near 2^64 (found by fuzzing) is damage,
        // not an overflow.
        let mut b = fs::read(s.dir().join(name(20))).unwrap();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(s.dir().join(name(40)), b).unwrap();
        assert_eq!(s.latest().unwrap(), Some(Snapshot { seq: 20, data: b"twenty".to_vec() }));
    }
}
