//! Bearer tokens with two roles: `read` (every GET) and `admin` (everything; every mutating
//! route needs it). Tokens come from a TOML tokens file and/or `AMVM_ADMIN_TOKEN` /
//! `AMVM_READ_TOKEN`. Only their sha256 is kept, compared in constant time; a token is never
//! logged.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

/// Who called: the token's name (for the audit log) and its role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The accepted tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<FileToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    role: String,
    token: String,
}

/// Shortest token accepted (characters).
pub const MIN_TOKEN_LEN: usize = 16;

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Tokens {
    /// Adds a token; refuses short ones.
    pub fn add(&mut self, name: &str, role: Role, token: &str) -> Result<(), String> {
        if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "token {name:?} must be at least {MIN_TOKEN_LEN} characters without spaces or control characters"
            ));
        }
        self.entries.push(Entry { name: name.to_string(), role, hash: hash(token) });
        Ok(())
    }

    /// Tokens from `AMVM_ADMIN_TOKEN` / `AMVM_READ_TOKEN` and an optional tokens file:
    ///
    /// ```toml
    /// [[token]]
    /// name = "alice"
    /// role = "admin"   # or "read"
    /// token = "…at least 16 characters…"
    /// ```
    pub fn load(file: Option<&Path>) -> Result<Tokens, String> {
        let mut t = Tokens::default();
        if let Ok(tok) = std::env::var("AMVM_ADMIN_TOKEN") {
            t.add("admin", Role::Admin, tok.trim()).map_err(|e| format!("AMVM_ADMIN_TOKEN: {e}"))?;
        }
        if let Ok(tok) = std::env::var("AMVM_READ_TOKEN") {
            t.add("reader", Role::Read, tok.trim()).map_err(|e| format!("AMVM_READ_TOKEN: {e}"))?;
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let f: File = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
            for tok in f.token {
                let role = match tok.role.as_str() {
                    "admin" => Role::Admin,
                    "read" => Role::Read,
                    other => {
                        return Err(format!("{}: token {:?}: role {other:?} (admin or read)", path.display(), tok.name))
                    }
                };
                t.add(&tok.name, role, &tok.token).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a bearer token belongs to. Every entry is compared, so the time taken does
    /// not say which one matched.
    pub fn check(&self, token: &str) -> Option<Caller> {
        let h = hash(token);
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.hash, &h) && found.is_none() {
                found = Some(Caller { name: e.name.clone(), role: e.role });
            }
        }
        found
    }
}

/// A random token (32 hex digits from the OS).
pub fn generate() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_refusals() {
        let mut t = Tokens::default();
        t.add("a", Role::Admin, "0123456789abcdef0").unwrap();
        t.add("r", Role::Read, "fedcba98765432100").unwrap();
        assert!(t.add("short", Role::Admin, "abc").is_err());
        assert!(t.add("space", Role::Admin, "0123456789 abcdef").is_err());
        assert_eq!(t.check("0123456789abcdef0").unwrap().role, Role::Admin);
        assert_eq!(t.check("fedcba98765432100").unwrap().name, "r");
        assert!(t.check("0123456789abcdef").is_none());
        assert!(t.check("").is_none());
    }

    #[test]
    fn tokens_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.toml");
        std::fs::write(&p, "[[token]]\nname = \"ops\"\nrole = \"read\"\ntoken = \"aaaaaaaaaaaaaaaaaaaa\"\n").unwrap();
        let t = Tokens::load(Some(&p)).unwrap();
        assert_eq!(t.check("aaaaaaaaaaaaaaaaaaaa").unwrap().role, Role::Read);
        std::fs::write(&p, "[[token]]\nname = \"ops\"\nrole = \"root\"\ntoken = \"aaaaaaaaaaaaaaaaaaaa\"\n").unwrap();
        assert!(Tokens::load(Some(&p)).unwrap_err().contains("role"));
    }
}
