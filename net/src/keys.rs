//! The API key store: `keys` in the data directory, one key per line,
//! secrets kept only as argon2id hashes (format in `net/PROTOCOL.md`).
//!
//! A key is a public 64-bit id and a 32-byte random secret. The secret is
//! shown once, when the key is made. Checking one costs an argon2id hash
//! (about 13 ms), so the engine does it on a worker thread, never on an I/O
//! shard ([`crate::auth`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngCore;

/// File name inside the data directory.
pub const FILE: &str = "keys";
const MAGIC: &str = "# otedama keys v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: u64,
    /// Ledger account the key trades for.
    pub account: u32,
    /// May send admin commands and act for any account.
    pub admin: bool,
    /// A drop-copy key: a read-only session that receives every execution
    /// of these accounts (`account` is 0 and unused).
    pub drop_copy: Option<Follow>,
    pub revoked: bool,
    /// Unix seconds.
    pub created: u64,
    /// argon2id PHC string of the secret.
    pub hash: String,
    pub label: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} line {line}: {why}")]
    Parse { path: PathBuf, line: usize, why: String },
    #[error("no key {0:016x}")]
    Unknown(u64),
    #[error("hashing the secret: {0}")]
    Hash(String),
}

/// The keys, as loaded from (and saved to) one file.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    pub keys: Vec<KeyEntry>,
}

/// Which accounts a drop-copy session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    All,
    /// Sorted, without duplicates, at most [`FOLLOW_MAX`].
    Accounts(Vec<u32>),
}

/// Most accounts one drop-copy key may list (`*` follows all).
pub const FOLLOW_MAX: usize = 1024;

impl Follow {
    /// `*`, or account numbers separated by commas.
    pub fn parse(s: &str) -> Option<Follow> {
        if s == "*" {
            return Some(Follow::All);
        }
        let mut v: Vec<u32> = s.split(',').map(|a| a.parse().ok()).collect::<Option<_>>()?;
        v.sort_unstable();
        v.dedup();
        (!v.is_empty() && v.len() <= FOLLOW_MAX).then_some(Follow::Accounts(v))
    }

    pub fn covers(&self, account: u32) -> bool {
        match self {
            Follow::All => true,
            Follow::Accounts(v) => v.binary_search(&account).is_ok(),
        }
    }
}

impl std::fmt::Display for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Follow::All => f.write_str("*"),
            Follow::Accounts(v) => {
                for (i, a) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                Ok(())
            }
        }
    }
}

/// A new key's credentials, shown to the operator once.
#[derive(Debug, Clone, Copy)]
pub struct NewKey {
    pub id: u64,
    pub secret: [u8; 32],
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

impl KeyEntry {
    pub fn role_name(&self) -> &'static str {
        match (self.admin, &self.drop_copy) {
            (_, Some(_)) => "dropcopy",
            (true, None) => "admin",
            (false, None) => "trader",
        }
    }
}

impl KeyStore {
    /// Loads `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<KeyStore, KeyError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyStore::default()),
            Err(err) => return Err(KeyError::Io { path: path.into(), err }),
        };
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| KeyError::Parse { path: path.into(), line: i + 1, why: why.into() };
            let f: Vec<&str> = line.splitn(7, ' ').collect();
            if f.len() < 6 {
                return Err(bad("expected: id account role state created hash [label]"));
            }
            let id = u64::from_str_radix(f[0], 16).map_err(|_| bad("id is not 16 hex digits"))?;
            let (admin, drop_copy) = match f[2] {
                "admin" => (true, None),
                "trader" => (false, None),
                "dropcopy" => (false, Some(Follow::parse(f[1]).ok_or_else(|| bad("a drop-copy key follows `*` or accounts like 1,2,3"))?)),
                _ => return Err(bad("role must be admin, trader or dropcopy")),
            };
            let account = if drop_copy.is_some() { 0 } else { f[1].parse().map_err(|_| bad("account is not a u32"))? };
            let revoked = match f[3] {
                "revoked" => true,
                "active" => false,
                _ => return Err(bad("state must be active or revoked")),
            };
            let created = f[4].parse().map_err(|_| bad("created is not unix seconds"))?;
            if !f[5].starts_with("$argon2id$") {
                return Err(bad("hash is not an argon2id PHC string"));
            }
            if keys.iter().any(|k: &KeyEntry| k.id == id) {
                return Err(bad("duplicate id"));
            }
            keys.push(KeyEntry {
                id,
                account,
                admin,
                drop_copy,
                revoked,
                created,
                hash: f[5].into(),
                label: f.get(6).unwrap_or(&"").to_string(),
            });
        }
        Ok(KeyStore { keys })
    }

    /// Writes the store atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |err| KeyError::Io { path: path.into(), err };
        let tmp = path.with_extension("tmp");
        let mut text = String::from(MAGIC);
        text.push_str("\n# id account role state created argon2id(secret) label\n");
        for k in &self.keys {
            text.push_str(&format!(
                "{:016x} {} {} {} {} {} {}\n",
                k.id,
                k.drop_copy.as_ref().map_or(k.account.to_string(), |f| f.to_string()),
                k.role_name(),
                if k.revoked { "revoked" } else { "active" },
                k.created,
                k.hash,
                k.label.replace('\n', " ")
            ));
        }
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Makes a key for `account`. The secret is returned once and stored
    /// only as its hash.
    pub fn add(&mut self, account: u32, admin: bool, label: &str) -> Result<NewKey, KeyError> {
        self.add_key(account, admin, None, label)
    }

    /// Makes a drop-copy key following `follow`.
    pub fn add_drop_copy(&mut self, follow: Follow, label: &str) -> Result<NewKey, KeyError> {
        self.add_key(0, false, Some(follow), label)
    }

    fn add_key(&mut self, account: u32, admin: bool, drop_copy: Option<Follow>, label: &str) -> Result<NewKey, KeyError> {
        let mut rng = rand::rng();
        let mut id = rng.next_u64();
        while id == 0 || self.keys.iter().any(|k| k.id == id) {
            id = rng.next_u64();
        }
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let hash = Argon2::default().hash_password(&secret).map_err(|e| KeyError::Hash(e.to_string()))?.to_string();
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.keys.push(KeyEntry { id, account, admin, drop_copy, revoked: false, created, hash, label: label.into() });
        Ok(NewKey { id, secret })
    }

    pub fn revoke(&mut self, id: u64) -> Result<(), KeyError> {
        let k = self.keys.iter_mut().find(|k| k.id == id).ok_or(KeyError::Unknown(id))?;
        k.revoked = true;
        Ok(())
    }

    /// The key if `secret` is its secret and it is not revoked. Costs an
    /// argon2id hash whether or not the id exists, so timing does not
    /// reveal which ids exist.
    pub fn verify(&self, id: u64, secret: &[u8; 32]) -> Option<&KeyEntry> {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let key = self.keys.iter().find(|k| k.id == id);
        let hash = match key {
            Some(k) => k.hash.as_str(),
            None => DUMMY.get_or_init(|| Argon2::default().hash_password(&[0u8; 32]).map(|h| h.to_string()).unwrap_or_default()),
        };
        let ok = Argon2::default().verify_password(secret, hash).is_ok();
        key.filter(|k| ok && !k.revoked)
    }
}

/// Parses a secret as 64 hex digits.
pub fn parse_secret(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s.trim()).ok()?;
    v.try_into().ok()
}

/// Parses a key id as up to 16 hex digits.
pub fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut s = KeyStore::load(&path).unwrap();
        assert!(s.keys.is_empty());
        let k = s.add(42, false, "desk one").unwrap();
        let a = s.add(0, true, "").unwrap();
        s.save(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut s = KeyStore::load(&path).unwrap();
        assert_eq!(s.keys.len(), 2);
        assert_eq!(s.keys[0].label, "desk one");
        assert_eq!(s.verify(k.id, &k.secret).unwrap().account, 42);
        assert!(s.verify(a.id, &a.secret).unwrap().admin);
        let mut wrong = k.secret;
        wrong[0] ^= 1;
        assert!(s.verify(k.id, &wrong).is_none());
        assert!(s.verify(k.id ^ 1, &k.secret).is_none());
        let d = s.add_drop_copy(Follow::parse("9,3,3").unwrap(), "risk").unwrap();
        s.revoke(k.id).unwrap();
        s.save(&path).unwrap();
        let t = KeyStore::load(&path).unwrap();
        assert_eq!(t.verify(d.id, &d.secret).unwrap().drop_copy, Some(Follow::Accounts(vec![3, 9])));
        assert!(fs::read_to_string(&path).unwrap().contains(" 3,9 dropcopy active "));
        let s = KeyStore::load(&path).unwrap();
        assert!(s.verify(k.id, &k.secret).is_none());
        assert!(!fs::read_to_string(&path).unwrap().contains(&hex::encode(k.secret)));
    }

    #[test]
    fn corrupt_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        fs::write(&path, "# x\nzz 1 admin active 0 $argon2id$x\n").unwrap();
        let e = KeyStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        fs::write(&path, "00000000000000aa 1 boss active 0 $argon2id$x\n").unwrap();
        assert!(KeyStore::load(&path).unwrap_err().to_string().contains("role"));
    }
}
