//! On-disk cache of compiled policy modules, so each `amvm` process does not recompile the same
//! components with Cranelift (about half a second for a strategy's modules in a release build,
//! several seconds in a debug build).
//!
//! An entry is `<dir>/<module sha256>-<engine tag>.cwasm`: the module's identity plus a tag for
//! the engine's settings and the amvm version, so a changed configuration or upgrade simply
//! misses. The file holds a magic, the sha256 of the payload and the payload that
//! [`Component::serialize`] produced. A file that is short, altered, truncated or from another
//! engine is ignored (and recompiled over); the cache never turns a good module into an error.
//!
//! Location: `AMVM_CACHE_DIR`, else `$XDG_CACHE_HOME/amvm/modules`, else
//! `$HOME/.cache/amvm/modules`. `AMVM_CACHE_DIR=off` disables it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"AMVMCW01";
const HEADER: usize = MAGIC.len() + 32;

/// The default cache directory (see the module docs), or `None` when disabled or unknown.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AMVM_CACHE_DIR") {
        if dir.is_empty() || dir == "off" {
            return None;
        }
        return Some(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?).join(".cache"),
    };
    Some(base.join("amvm").join("modules"))
}

/// A cache directory bound to one engine configuration.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    tag: String,
}

impl DiskCache {
    pub fn new(dir: &Path, engine: &Engine) -> DiskCache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        DiskCache { dir: dir.to_path_buf(), tag: format!("{:016x}", h.finish()) }
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}-{}.cwasm", self.tag))
    }

    /// The compiled component for the module with hex sha256 `sha`, if a sound entry exists.
    pub fn load(&self, engine: &Engine, sha: &str) -> Option<Component> {
        let bytes = std::fs::read(self.path(sha)).ok()?;
        if bytes.len() <= HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return None;
        }
        let payload = &bytes[HEADER..];
        if Sha256::digest(payload).as_slice() != &bytes[MAGIC.len()..HEADER] {
            tracing::debug!(sha, "cached module fails its checksum; recompiling");
            return None;
        }
        // SAFETY: `payload` is byte for byte (checked by its sha256 above) what
        // `Component::serialize` wrote for an engine with the same compatibility hash (it is in
        // the file name), which is the contract of `Component::deserialize`; wasmtime also checks
        // the artefact's own version and settings header before using it.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(sha, error = %e, "cached module rejected by wasmtime; recompiling");
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost the next process a compile.
    pub fn store(&self, sha: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let payload = component.serialize().map_err(std::io::Error::other)?;
            std::fs::create_dir_all(&self.dir)?;
            let mut bytes = Vec::with_capacity(HEADER + payload.len());
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&Sha256::digest(&payload));
            bytes.extend_from_slice(&payload);
            // Write aside and rename: concurrent processes never see a half-written entry.
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let tmp =
                self.dir.join(format!(".{sha}.{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, self.path(sha)).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })();
        if let Err(e) = result {
            tracing::debug!(sha, dir = %self.dir.display(), error = %e, "cannot cache the compiled module");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true);
        Engine::new(&c).expect("engine")
    }

    #[test]
    fn a_stored_component_loads_and_a_damaged_entry_is_ignored() {
        let dir = std::env::temp_dir().join(format!("amvm-cache-test-{}", std::process::id()));
        let engine = engine();
        let cache = DiskCache::new(&dir, &engine);
        let component = Component::new(&engine, "(component)").expect("compile");
        assert!(cache.load(&engine, "abc").is_none(), "empty cache");
        cache.store("abc", &component);
        assert!(cache.load(&engine, "abc").is_some(), "stored entry loads");
        // Flip one payload byte: the checksum refuses it.
        let path = cache.path("abc");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert!(cache.load(&engine, "abc").is_none(), "altered entry ignored");
        // Truncated to the header: ignored too.
        std::fs::write(&path, &bytes[..HEADER]).expect("write");
        assert!(cache.load(&engine, "abc").is_none(), "truncated entry ignored");
        // Another engine configuration has another tag: a miss, not a wrong artefact.
        cache.store("abc", &component);
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true).consume_fuel(true);
        let other = Engine::new(&c).expect("engine");
        let other_cache = DiskCache::new(&dir, &other);
        assert_ne!(other_cache.tag, cache.tag);
        assert!(other_cache.load(&other, "abc").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
