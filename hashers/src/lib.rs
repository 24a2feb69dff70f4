//! Proof-of-work functions (sha256d, scrypt, RandomX) and integer target and
//! difficulty math.
//!
//! Not built yet: the hashers issue fills this crate. It exists now so the
//! workspace has its final shape and dependency direction.
