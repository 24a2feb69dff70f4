//! Retention: which segments may go, and where they go.
//!
//! A segment may be removed when every record in it is
//! - older than the newest valid snapshot by at least `margin_records`, and
//! - consumed by every registered reader (each reader keeps a cursor file
//!   `readers/NAME.cursor` holding the next sequence it needs).
//!
//! The newest segment is never removed. With an archive directory, removed
//! segments are moved there, where [`crate::Reader`] still finds them: the
//! archive plus the snapshots are the point-in-time-recovery story.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::format::{get_u32, get_u64, parse_segment_name, put_u32, put_u64};
use crate::snapshot::Snapshots;

pub const READERS_DIR: &str = "readers";

/// What to keep.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// Records kept before the newest snapshot.
    pub margin_records: u64,
    /// Move removed segments here instead of deleting them.
    pub archive: Option<PathBuf>,
}

/// What a retention pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RetentionReport {
    /// Segments holding only records below this were eligible.
    pub limit_seq: u64,
    pub snapshot_seq: Option<u64>,
    pub slowest_reader: Option<(String, u64)>,
    pub removed: Vec<String>,
    pub archived: Vec<String>,
}

/// A registered reader's durable cursor.
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    /// Registers (or reopens) reader `name` of the journal in `dir`.
    pub fn register(dir: impl AsRef<Path>, name: &str) -> io::Result<Cursor> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad reader name {name:?}")));
        }
        let d = dir.as_ref().join(READERS_DIR);
        fs::create_dir_all(&d)?;
        let c = Cursor { path: d.join(format!("{name}.cursor")) };
        if !c.path.exists() {
            c.commit(1)?;
        }
        Ok(c)
    }

    /// Records that everything below `next_seq` has been consumed.
    pub fn commit(&self, next_seq: u64) -> io::Result<()> {
        let mut b = [0u8; 16];
        put_u64(&mut b, 0, next_seq);
        let c = crc32c::crc32c(&b[..8]);
        put_u32(&mut b, 8, c);
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)
    }

    /// The stored position.
    pub fn load(&self) -> io::Result<u64> {
        read_cursor(&self.path)
    }
}

fn read_cursor(path: &Path) -> io::Result<u64> {
    let b = fs::read(path)?;
    if b.len() != 16 || get_u32(&b, 8) != crc32c::crc32c(&b[..8]) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("damaged cursor {}", path.display())));
    }
    Ok(get_u64(&b, 0))
}

/// Every registered reader and its position.
pub fn readers(dir: impl AsRef<Path>) -> io::Result<Vec<(String, u64)>> {
    let d = dir.as_ref().join(READERS_DIR);
    let mut v = Vec::new();
    if !d.is_dir() {
        return Ok(v);
    }
    for e in fs::read_dir(d)? {
        let e = e?;
        let n = e.file_name();
        let Some(name) = n.to_str().and_then(|n| n.strip_suffix(".cursor")) else { continue };
        // A damaged cursor holds everything back rather than releasing it.
        let seq = read_cursor(&e.path()).unwrap_or(0);
        v.push((name.to_owned(), seq));
    }
    v.sort();
    Ok(v)
}

/// Applies `policy` to the journal in `dir`. Safe beside a live writer: it
/// never touches the newest segment, and the writer maps only that one.
pub fn apply(dir: impl AsRef<Path>, snapshots_keep: usize, policy: &RetentionPolicy) -> io::Result<RetentionReport> {
    let dir = dir.as_ref();
    let mut report = RetentionReport::default();
    let snap = Snapshots::open(dir, snapshots_keep)?.latest()?.map(|s| s.seq);
    report.snapshot_seq = snap;
    let Some(snap) = snap else { return Ok(report) };
    let mut limit = (snap + 1).saturating_sub(policy.margin_records);
    let rs = readers(dir)?;
    if let Some((name, seq)) = rs.iter().min_by_key(|r| r.1) {
        limit = limit.min(*seq);
        report.slowest_reader = Some((name.clone(), *seq));
    }
    report.limit_seq = limit;

    let mut segs: Vec<u64> =
        fs::read_dir(dir)?.filter_map(|e| e.ok().and_then(|e| e.file_name().to_str().and_then(parse_segment_name))).collect();
    segs.sort_unstable();
    if let Some(a) = &policy.archive {
        fs::create_dir_all(a)?;
    }
    for w in segs.windows(2) {
        let (seg, next_first) = (w[0], w[1]);
        // The segment holds seg..next_first-1; all must lie below the limit.
        if next_first > limit {
            break;
        }
        let name = crate::format::segment_name(seg);
        let from = dir.join(&name);
        match &policy.archive {
            Some(a) => {
                let to = a.join(&name);
                if fs::rename(&from, &to).is_err() {
                    fs::copy(&from, &to)?;
                    File::open(&to)?.sync_all()?;
                    fs::remove_file(&from)?;
                }
                report.archived.push(name);
            }
            None => {
                fs::remove_file(&from)?;
                report.removed.push(name);
            }
        }
    }
    File::open(dir)?.sync_all()?;
    if let Some(a) = &policy.archive {
        File::open(a)?.sync_all()?;
    }
    Ok(report)
}
