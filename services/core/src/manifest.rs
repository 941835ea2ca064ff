//! A run's manifest: everything that decides what its answer files hold (umi's version,
//! each role's checkpoint and tokenizer by digest, sampling, budgets, seed, the tool
//! backend and its cache by digest, the method), written beside the answers as
//! `manifest.json`. A resumed run compares its own manifest with the one on disk and
//! refuses to mix answers made from different inputs.
//!
//! Digests are SHA-256. Hashing a 13 GB checkpoint takes a while, so a file whose path,
//! size and modification time equal the earlier manifest's entry keeps that entry's
//! digest (what `make` and `rsync` trust too).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The manifest's file name in a run's output folder.
pub const FILE_NAME: &str = "manifest.json";

/// Fields that describe the run but not its inputs: never a reason to refuse a resume.
const NOT_INPUTS: &[&str] = &["/created_by", "/superseded"];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of a text (content built into the binary).
pub fn text_digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// One file: `{"path", "bytes", "modified", "sha256"}`. `earlier` is an entry of an older
/// manifest; its digest is reused when the path, size and modification time are the same.
pub fn file_entry(path: &Path, earlier: Option<&Value>) -> std::io::Result<Value> {
    let meta = std::fs::metadata(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(String::new, |d| {
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        });
    let shown = path.display().to_string();
    let reusable = earlier.filter(|e| {
        e["path"] == json!(shown)
            && e["bytes"] == json!(meta.len())
            && e["modified"] == json!(modified)
    });
    let sha256 = match reusable.and_then(|e| e["sha256"].as_str()) {
        Some(known) => known.to_string(),
        None => sha256_of(path)?,
    };
    Ok(json!({"path": shown, "bytes": meta.len(), "modified": modified, "sha256": sha256}))
}

/// An earlier manifest's file entries by path, for digest reuse.
#[derive(Default)]
pub struct Earlier(HashMap<String, Value>);

impl Earlier {
    /// Every object with a `"path"` and a `"sha256"` anywhere in `manifest`.
    pub fn index(manifest: Option<&Value>) -> Self {
        fn walk(v: &Value, out: &mut HashMap<String, Value>) {
            match v {
                Value::Object(m) => {
                    if let (Some(Value::String(p)), Some(_)) = (m.get("path"), m.get("sha256")) {
                        out.insert(p.clone(), v.clone());
                    }
                    m.values().for_each(|c| walk(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        let mut out = HashMap::new();
        if let Some(m) = manifest {
            walk(m, &mut out);
        }
        Earlier(out)
    }

    fn get(&self, path: &Path) -> Option<&Value> {
        self.0.get(&path.display().to_string())
    }
}

/// A file (as [`file_entry`]), or a folder (a sharded checkpoint, a response cache):
/// `{"path", "sha256", "files": [file entries]}`, the folder's digest taken over each
/// file's path and digest in path order, so renaming or editing any file changes it.
/// Unchanged files keep their digests from `earlier`.
pub fn entry(path: &Path, earlier: &Earlier) -> std::io::Result<Value> {
    if !path.is_dir() {
        return file_entry(path, earlier.get(path));
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    let mut entries = Vec::with_capacity(files.len());
    for file in &files {
        let e = file_entry(file, earlier.get(file))?;
        hasher.update(
            file.strip_prefix(path)
                .unwrap_or(file)
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update([0]);
        hasher.update(e["sha256"].as_str().unwrap_or_default().as_bytes());
        hasher.update([b'\n']);
        entries.push(e);
    }
    Ok(json!({
        "path": path.display().to_string(),
        "sha256": hex(&hasher.finalize()),
        "files": entries,
    }))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Where two manifests differ, as JSON pointers with both values (`/roles/planner/sha256:
/// was "ab…", now "cd…"`), fields that are not inputs left out. Empty: the same run.
pub fn differences(earlier: &Value, now: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", earlier, now, &mut out);
    out.retain(|d| {
        !NOT_INPUTS
            .iter()
            .any(|p| d.starts_with(&format!("{p}:")) || d.starts_with(&format!("{p}/")))
    });
    out
}

fn diff(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    // A file or folder is its content: compared by digest only (a path given relative
    // once and absolute the next, a file touched or copied, is the same input).
    if let (Some(x), Some(y)) = (a.get("sha256"), b.get("sha256")) {
        if x != y {
            let path = b.get("path").or(a.get("path")).and_then(Value::as_str);
            let path = path.map(|p| format!(" ({p})")).unwrap_or_default();
            out.push(format!("{at}/sha256{path}: was {x}, now {y}"));
        }
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for k in keys {
                let path = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&path, p, q, out),
                    (Some(p), None) => out.push(format!("{path}: was {p}, now absent")),
                    (None, Some(q)) => out.push(format!("{path}: was absent, now {q}")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{at}: was {a}, now {b}")),
        _ => {}
    }
}

/// An object from `(key, value)` pairs, in order (a manifest section).
pub fn section<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_input_and_ignore_the_rest() {
        let a = json!({"created_by": {"version": "1"}, "roles": {"planner": {"sha256": "ab", "dtype": "bf16"}}, "seed": 0});
        let b = json!({"created_by": {"version": "2"}, "roles": {"planner": {"sha256": "cd", "dtype": "bf16"}}, "seed": 0, "method": "CoT@1"});
        assert_eq!(
            differences(&a, &b),
            vec![
                "/roles/planner/sha256: was \"ab\", now \"cd\"".to_string(),
                "/method: was absent, now \"CoT@1\"".to_string()
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn digests_change_with_content_and_are_reused_when_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.bin");
        std::fs::write(&f, b"abc").unwrap();
        let e = file_entry(&f, None).unwrap();
        assert_eq!(
            e["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Same path, size and time: the earlier digest is kept (here a fake one, to see it).
        let mut earlier = e.clone();
        earlier["sha256"] = json!("kept");
        assert_eq!(file_entry(&f, Some(&earlier)).unwrap()["sha256"], "kept");
        std::fs::write(dir.path().join("x.json"), b"{}").unwrap();
        let folder = entry(dir.path(), &Earlier::default()).unwrap();
        assert_eq!(folder["files"].as_array().unwrap().len(), 2);
        std::fs::write(dir.path().join("x.json"), b"{ }").unwrap();
        let again = entry(dir.path(), &Earlier::index(Some(&folder))).unwrap();
        assert_ne!(again["sha256"], folder["sha256"]);
        // Same content under another spelling of its path: no difference.
        let mut moved = again.clone();
        moved["path"] = json!("./elsewhere");
        assert!(differences(&json!({"data": again}), &json!({"data": moved})).is_empty());
    }
}
