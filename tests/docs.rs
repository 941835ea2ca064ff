//! docs/ARCHITECTURE.md stays true: every file, module and Rust symbol it names in backticks
//! exists in the tree. A renamed file or function fails this test until the document follows.
//!
//! What counts as a name (everything else in backticks, such as flags, JSON and Python names,
//! is prose):
//! - a path in the tree: `services/core`, `src/cli/args/`, `worker/src/roles.rs`,
//!   `core/agent.rs` (a crate's `src/` may be left out), `args/tools.rs` (under `src/cli/`),
//!   or a bare file name `queue.rs`;
//! - a symbol in a file: `engine/src/load.rs::resolve_dtype`;
//! - a crate path: `umi_core::pyjson::repr` (module `pyjson` of `services/core`, item `repr`);
//! - a module's item: `static_eval::score` (a file `static_eval.rs` defining `score`);
//! - a type's member: `ApiReply::observation` (a type defined in the tree, and a function,
//!   field, constant or variant of that name in the file that defines it);
//! - a type: `EngineRoles` (a struct, enum, trait or type alias defined in the tree).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Names in backticks that are not umi's: the reference's Python classes and the like.
const NOT_UMI: &[&str] = &["LlamaRMSNorm", "File::create"];

struct Tree {
    root: PathBuf,
    /// Every Rust file under services/ and src/, with its text.
    sources: BTreeMap<PathBuf, String>,
}

impl Tree {
    fn load() -> Tree {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut sources = BTreeMap::new();
        for top in ["services", "src"] {
            collect_rust(&root.join(top), &mut sources);
        }
        Tree { root, sources }
    }

    /// The places a path written in the document may mean.
    fn resolve(&self, written: &str) -> Option<PathBuf> {
        let written = written.trim_end_matches('/');
        let mut candidates = vec![
            self.root.join(written),
            self.root.join("services").join(written),
            self.root.join("src/cli").join(written),
        ];
        if let Some((krate, rest)) = written.split_once('/') {
            candidates.push(
                self.root
                    .join("services")
                    .join(krate)
                    .join("src")
                    .join(rest),
            );
        }
        if written.contains('/') && written.ends_with(".rs") {
            // A path inside a crate's folders, `model/rope.rs`: a source file ending so.
            let tail = format!("/{written}");
            if let Some(found) = self
                .sources
                .keys()
                .find(|path| path.to_string_lossy().ends_with(&tail))
            {
                return Some(found.clone());
            }
        }
        if !written.contains('/') {
            // A bare file name: anywhere among the sources.
            if let Some(found) = self
                .sources
                .keys()
                .find(|path| path.file_name().is_some_and(|name| name == written))
            {
                return Some(found.clone());
            }
        }
        candidates.into_iter().find(|path| path.exists())
    }

    /// Files named `<module>.rs` or `<module>/mod.rs`.
    fn module_files(&self, module: &str) -> Vec<&PathBuf> {
        self.sources
            .keys()
            .filter(|path| {
                path.file_stem().is_some_and(|stem| stem == module)
                    || (path.file_name().is_some_and(|name| name == "mod.rs")
                        && path
                            .parent()
                            .and_then(Path::file_name)
                            .is_some_and(|dir| dir == module))
            })
            .collect()
    }

    fn text(&self, path: &Path) -> String {
        if let Some(text) = self.sources.get(path) {
            return text.clone();
        }
        // A file under a directory (a module folder): its files together.
        if path.is_dir() {
            return self
                .sources
                .iter()
                .filter(|(file, _)| file.starts_with(path))
                .map(|(_, text)| text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
        }
        fs::read_to_string(path).unwrap_or_default()
    }

    /// Files that define a type of this name or implement something for it (its methods
    /// may live beside the code they serve).
    fn type_and_impl_files(&self, name: &str) -> Vec<&PathBuf> {
        let defined = self.type_files(name);
        if defined.is_empty() {
            return defined;
        }
        self.sources
            .iter()
            .filter(|(path, text)| {
                defined.contains(path)
                    || text.lines().any(|line| {
                        let line = line.trim_start();
                        line.starts_with("impl") && find_word(line, name).is_some()
                    })
            })
            .map(|(path, _)| path)
            .collect()
    }

    /// Files that define a type (struct, enum, trait or type alias) of this name.
    fn type_files(&self, name: &str) -> Vec<&PathBuf> {
        self.sources
            .iter()
            .filter(|(_, text)| defines_type(text, name))
            .map(|(path, _)| path)
            .collect()
    }
}

fn collect_rust(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = fs::read_to_string(&path).expect("a source file is readable");
            out.insert(path, text);
        }
    }
}

fn words_before(line: &str, name: &str) -> Option<String> {
    let at = find_word(line, name)?;
    Some(line[..at].trim().to_string())
}

/// The byte offset of `name` as a whole word in `line`.
fn find_word(line: &str, name: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(offset) = line[from..].find(name) {
        let at = from + offset;
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

fn defines_type(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        words_before(line, name).is_some_and(|before| {
            ["struct", "enum", "trait", "type"]
                .iter()
                .any(|keyword| before.ends_with(keyword))
        })
    })
}

/// A function, constant, static, module, type, field or enum variant of this name.
fn defines_item(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let Some(at) = find_word(line, name) else {
            return false;
        };
        let before = line[..at].trim();
        let after = line[at + name.len()..].trim_start();
        let keyword = [
            "fn", "const", "static", "mod", "struct", "enum", "trait", "type",
        ]
        .iter()
        .any(|keyword| before.ends_with(keyword));
        // `pub name: T,` (a field) or `Name,` / `Name(..)` / `Name {` (a variant), alone on
        // the line apart from visibility.
        let lone = before.is_empty() || before == "pub" || before.starts_with("pub(");
        let field_or_variant = lone
            && (after.starts_with(':') && !after.starts_with("::")
                || after.starts_with(',')
                || after.starts_with('(')
                || after.starts_with('{')
                || after.starts_with('=')
                || after.is_empty());
        keyword || field_or_variant
    })
}

/// `pub use module::{…, name, …};` in a crate's root.
fn reexports(text: &str, name: &str) -> bool {
    text.lines()
        .any(|line| line.trim_start().starts_with("pub use") && find_word(line, name).is_some())
}

fn is_ident(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !text.starts_with(|c: char| c.is_ascii_digit())
}

fn is_type_name(text: &str) -> bool {
    is_ident(text)
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.chars().any(|c| c.is_ascii_lowercase())
}

/// Checks one backticked name; `Err` says what is missing. Prose passes.
fn check(tree: &Tree, name: &str) -> Result<(), String> {
    if NOT_UMI.contains(&name) || name.contains('*') || name.contains(' ') {
        return Ok(());
    }
    // `path.rs::symbol`
    if let Some((path, symbol)) = name.split_once(".rs::") {
        let file = tree
            .resolve(&format!("{path}.rs"))
            .ok_or_else(|| format!("no file {path}.rs"))?;
        let symbol = symbol.rsplit("::").next().unwrap_or(symbol);
        return if defines_item(&tree.text(&file), symbol) {
            Ok(())
        } else {
            Err(format!("{} does not define {symbol}", file.display()))
        };
    }
    // A path in the tree.
    let looks_like_path = name.ends_with(".rs")
        || [
            "services/",
            "src/",
            "proto/",
            "scripts/",
            "deploy/",
            "docs/",
            "tests/",
        ]
        .iter()
        .any(|top| name.starts_with(top))
        || (name.contains('/')
            && name.split('/').next().is_some_and(|top| {
                !top.is_empty()
                    && (tree.root.join("services").join(top).is_dir()
                        || tree.root.join("src/cli").join(top).is_dir())
            }));
    if looks_like_path {
        return tree
            .resolve(name)
            .map(|_| ())
            .ok_or_else(|| format!("no path {name}"));
    }
    let segments: Vec<&str> = name.split("::").collect();
    if segments.len() >= 2 && segments.iter().all(|segment| is_ident(segment)) {
        // `umi_<crate>::module[::item]`
        if let Some(krate) = segments[0].strip_prefix("umi_") {
            let src = tree.root.join("services").join(krate).join("src");
            if !src.is_dir() {
                return Err(format!("no crate {}", segments[0]));
            }
            let module = segments[1];
            let file = [
                src.join(format!("{module}.rs")),
                src.join(module).join("mod.rs"),
            ]
            .into_iter()
            .find(|path| path.exists());
            let file = match file {
                Some(file) => file,
                // An item of the crate's root.
                None if defines_item(&tree.text(&src.join("lib.rs")), module)
                    || reexports(&tree.text(&src.join("lib.rs")), module) =>
                {
                    return Ok(())
                }
                None => return Err(format!("no module {module} in {}", segments[0])),
            };
            return match segments.get(2) {
                Some(item) if !defines_item(&tree.text(&file), item) => {
                    Err(format!("{} does not define {item}", file.display()))
                }
                _ => Ok(()),
            };
        }
        let (owner, member) = (segments[0], segments[segments.len() - 1]);
        let files: Vec<&PathBuf> = if is_type_name(owner) {
            tree.type_and_impl_files(owner)
        } else {
            tree.module_files(owner)
        };
        if files.is_empty() {
            return Err(format!("no type or module {owner}"));
        }
        return if files
            .iter()
            .any(|file| defines_item(&tree.text(file), member))
        {
            Ok(())
        } else {
            Err(format!("{owner} has no {member}"))
        };
    }
    if is_type_name(name) {
        return if tree.type_files(name).is_empty() {
            Err(format!("no type {name}"))
        } else {
            Ok(())
        };
    }
    Ok(())
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn architecture_names_only_what_exists() {
    let tree = Tree::load();
    let doc =
        fs::read_to_string(tree.root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let mut missing = Vec::new();
    for (number, line) in doc.lines().enumerate() {
        for name in backticked(line) {
            if let Err(why) = check(&tree, name) {
                missing.push(format!("line {}: `{name}`: {why}", number + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names what the tree lacks:\n{}",
        missing.join("\n")
    );
}

/// The checker itself: it finds what exists and refuses what does not, in each form.
#[test]
fn the_checker_tells_names_that_exist_from_names_that_do_not() {
    let tree = Tree::load();
    for exists in [
        "services/core",
        "core/agent.rs",
        "worker/src/roles.rs",
        "src/cli/args/",
        "args/tools.rs",
        "queue.rs",
        "engine/src/load.rs::resolve_dtype",
        "umi_core::pyjson::repr",
        "static_eval::score_predictions",
        "ApiReply::observation",
        "RoleModels",
        "--max-queue",
        "/v1/completions",
        "umi_durable::write",
        "model/rope.rs",
        "Llama::attend_cpu",
        "args/remote.rs::RemoteArgs::apply",
    ] {
        assert_eq!(check(&tree, exists), Ok(()), "{exists}");
    }
    for absent in [
        "services/nowhere",
        "core/nowhere.rs",
        "nowhere.rs",
        "engine/src/load.rs::no_such_function",
        "umi_core::no_module",
        "umi_core::pyjson::no_item",
        "static_eval::no_item",
        "ApiReply::no_member",
        "NoSuchType",
        "umi_durable::no_such_export",
        "model/nowhere.rs",
        "Llama::no_such_method",
    ] {
        assert!(check(&tree, absent).is_err(), "{absent} passed");
    }
}
