//! Settings as TGI and vLLM users give them: every flag of a subcommand may also come from
//! the environment, `UMI_<FLAG>` (upper case, `-` as `_`, e.g. `UMI_MAX_STEPS`), or from a
//! TOML file (`--config FILE` or `$UMI_CONFIG`), keyed by the flag's own name: at the top
//! level for every subcommand that has the flag, or in a table named after the subcommand
//! (`[run]`, `[worker]`, `[eval.static]`) for that one only. Precedence: flag > environment
//! > file > default.
//!
//! The rule is applied once, before clap parses: the command line is completed with the
//! flags the environment and the file give for the subcommand being run, each only where
//! the command line (or, for a flag with its own variable such as `UMI_MODEL`, that
//! variable) does not already set it. `umi config show` prints the outcome.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Arg, ArgAction, Command};

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A variable: `UMI_<FLAG>` or the flag's own.
    Env(String),
    /// The config file.
    File(PathBuf),
}

/// The command line completed from the environment and the file, and what was added.
pub struct Completed {
    pub args: Vec<OsString>,
    pub added: BTreeMap<String, Source>,
}

/// `--config FILE` (or `--config=FILE`) on the command line, else `$UMI_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| PathBuf::from(p.as_ref()));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("UMI_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn read_file(path: &Path) -> anyhow::Result<toml::Table> {
    const MAX_BYTES: u64 = 1 << 20;
    let size = std::fs::metadata(path)
        .with_context(|| format!("config file {}", path.display()))?
        .len();
    if size > MAX_BYTES {
        bail!(
            "config file {}: {size} bytes, more than a config file holds ({MAX_BYTES})",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}: not TOML", path.display()))
}

/// The subcommands named on the command line, from the root (e.g. `["eval", "static"]`),
/// with the index in `argv` after the last one.
fn subcommand_path(root: &Command, argv: &[OsString]) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    let mut cmd = root;
    let mut at = 1;
    let mut i = 1;
    while i < argv.len() {
        let token = argv[i].to_string_lossy();
        if token == "--" {
            break;
        }
        if token == "--config" {
            i += 2;
            continue;
        }
        if token.starts_with('-') {
            i += 1;
            continue;
        }
        match cmd.find_subcommand(token.as_ref()) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                cmd = sub;
                at = i + 1;
                i += 1;
            }
            None => break,
        }
    }
    (path, at)
}

/// The leaf command of `path`.
pub fn leaf<'c>(root: &'c Command, path: &[String]) -> &'c Command {
    path.iter()
        .fold(root, |cmd, name| cmd.find_subcommand(name).unwrap_or(cmd))
}

/// The flags whose settings come from outside: long, not positional, not clap's own.
fn settable(cmd: &Command) -> impl Iterator<Item = (&Arg, &str)> {
    cmd.get_arguments().filter_map(|a| {
        let long = a.get_long()?;
        (!a.is_positional() && !["help", "version", "config"].contains(&long)).then_some((a, long))
    })
}

/// The variable `UMI_<FLAG>` of a flag.
pub fn env_name(long: &str) -> String {
    format!("UMI_{}", long.to_uppercase().replace('-', "_"))
}

fn given_on_command_line(arg: &Arg, long: &str, argv: &[OsString]) -> bool {
    let short = arg.get_short().map(|c| format!("-{c}"));
    argv.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| {
            a == format!("--{long}")
                || a.starts_with(&format!("--{long}="))
                || short
                    .as_deref()
                    .is_some_and(|s| a == s || (a.starts_with(s) && a.len() > 2))
        })
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// A file value as the flag's words: a string as is, numbers and booleans as written,
/// an array as one value per element.
fn file_values(key: &str, value: &toml::Value) -> anyhow::Result<Vec<String>> {
    Ok(match value {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Integer(i) => vec![i.to_string()],
        toml::Value::Float(f) => vec![f.to_string()],
        toml::Value::Boolean(b) => vec![b.to_string()],
        toml::Value::Array(items) => items
            .iter()
            .map(|v| file_values(key, v).map(|mut v| v.remove(0)))
            .collect::<anyhow::Result<_>>()?,
        other => bail!("{key}: a {} is not a flag's value", other.type_str()),
    })
}

fn truthy(word: &str) -> anyhow::Result<bool> {
    match word.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => bail!("{other:?} is not true or false"),
    }
}

/// The file's table for `path` (`[eval.static]`), if any.
fn table_of<'t>(file: &'t toml::Table, path: &[String]) -> Option<&'t toml::Table> {
    let mut table = file;
    for name in path {
        table = table.get(name)?.as_table()?;
    }
    Some(table)
}

/// Every flag name of every subcommand, and every subcommand name (a file's top-level
/// keys must be one of them).
fn all_names(cmd: &Command, out: &mut Vec<String>) {
    out.extend(settable(cmd).map(|(_, l)| l.to_string()));
    for sub in cmd.get_subcommands() {
        out.push(sub.get_name().to_string());
        all_names(sub, out);
    }
}

/// Completes `argv` for `root` from the environment and the config file.
pub fn complete(root: &Command, argv: Vec<OsString>) -> anyhow::Result<Completed> {
    let (path, at) = subcommand_path(root, &argv);
    let cmd = leaf(root, &path);
    let file_path = config_path(&argv);
    let file = file_path.as_deref().map(read_file).transpose()?;
    if let (Some(file), Some(fp)) = (&file, &file_path) {
        let mut known = Vec::new();
        all_names(root, &mut known);
        for key in file.keys() {
            let key = key.replace('_', "-");
            if !known.contains(&key) {
                bail!(
                    "config file {}: {key:?} is no flag or subcommand of umi",
                    fp.display()
                );
            }
        }
        if let Some(table) = table_of(file, &path).filter(|_| !path.is_empty()) {
            for key in table.keys() {
                let key_flag = key.replace('_', "-");
                let is_flag = settable(cmd).any(|(_, l)| l == key_flag);
                let is_sub = cmd.find_subcommand(key).is_some();
                if !is_flag && !is_sub {
                    bail!(
                        "config file {}: [{}] has no setting {key:?} (`umi {} --help` lists them)",
                        fp.display(),
                        path.join("."),
                        path.join(" ")
                    );
                }
            }
        }
    }
    let mut extra: Vec<OsString> = Vec::new();
    let mut added = BTreeMap::new();
    for (arg, long) in settable(cmd) {
        if given_on_command_line(arg, long, &argv) {
            continue;
        }
        // A flag with its own variable (`UMI_MODEL`) reads it through clap: that is the
        // environment's word, and the file's must not override it.
        let own = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        if own
            .as_deref()
            .is_some_and(|e| std::env::var_os(e).is_some())
        {
            continue;
        }
        let name = env_name(long);
        let (words, source) = if let Some(v) =
            std::env::var_os(&name).filter(|_| own.as_deref() != Some(name.as_str()))
        {
            let word = v
                .into_string()
                .map_err(|_| anyhow::anyhow!("${name}: not UTF-8"))?;
            (vec![word], Source::Env(name.clone()))
        } else {
            let value = file.as_ref().and_then(|f| {
                let keys = [long.to_string(), long.replace('-', "_")];
                let in_table = table_of(f, &path).filter(|_| !path.is_empty());
                keys.iter()
                    .find_map(|k| in_table.and_then(|t| t.get(k)))
                    .or_else(|| keys.iter().find_map(|k| f.get(k).filter(|v| !v.is_table())))
            });
            let Some(value) = value else { continue };
            let fp = file_path.clone().unwrap_or_default();
            let words = file_values(long, value)
                .with_context(|| format!("config file {}", fp.display()))?;
            (words, Source::File(fp))
        };
        if is_switch(arg) {
            let on = truthy(words.first().map_or("", String::as_str)).with_context(|| {
                format!(
                    "{}: --{long}",
                    match &source {
                        Source::Env(n) => format!("${n}"),
                        Source::File(p) => p.display().to_string(),
                    }
                )
            })?;
            if on {
                extra.push(format!("--{long}").into());
            }
        } else {
            for word in words {
                extra.push(format!("--{long}={word}").into());
            }
        }
        added.insert(long.to_string(), source);
    }
    let mut args = argv;
    args.splice(at..at, extra);
    Ok(Completed { args, added })
}

/// Whether a flag holds a secret (an API key, a token, a password; not a file naming one).
pub fn is_secret(long: &str) -> bool {
    ["api-key", "toolbench-key", "token", "password", "secret"]
        .iter()
        .any(|w| long.contains(w))
        && !long.ends_with("-file")
}

/// `umi config show SUBCOMMAND…`: the effective settings of that subcommand, one per
/// line with where each came from, secrets masked.
pub fn show(
    root: &Command,
    subcommand: &[String],
    argv_config: Option<&Path>,
) -> anyhow::Result<String> {
    let mut argv: Vec<OsString> = vec!["umi".into()];
    if let Some(p) = argv_config {
        argv.push("--config".into());
        argv.push(p.into());
    }
    argv.extend(subcommand.iter().map(OsString::from));
    let (path, _) = subcommand_path(root, &argv);
    if path.join(" ") != subcommand.join(" ") {
        bail!("umi has no subcommand `{}`", subcommand.join(" "));
    }
    let completed = complete(root, argv)?;
    // Settings are shown even where a required flag is missing.
    let relaxed = root.clone().mut_subcommands(relax);
    let matches = relaxed
        .try_get_matches_from(&completed.args)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or_default()))?;
    let mut m = &matches;
    for name in &path {
        m = m
            .subcommand_matches(name)
            .ok_or_else(|| anyhow::anyhow!("umi has no subcommand `{name}`"))?;
    }
    let cmd = leaf(root, &path);
    let mut out = String::new();
    for (arg, long) in settable(cmd) {
        let id = arg.get_id().as_str();
        let values: Vec<String> = m
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match completed.added.get(long) {
            Some(Source::Env(n)) => format!("${n}"),
            Some(Source::File(p)) => p.display().to_string(),
            None => match m.value_source(id) {
                Some(clap::parser::ValueSource::CommandLine) => "flag".into(),
                Some(clap::parser::ValueSource::EnvVariable) => arg
                    .get_env()
                    .map_or("env".into(), |e| format!("${}", e.to_string_lossy())),
                Some(clap::parser::ValueSource::DefaultValue) => "default".into(),
                _ => "unset".into(),
            },
        };
        let shown = if values.is_empty() {
            "-".to_string()
        } else if is_secret(long) {
            "****".to_string()
        } else {
            values.join(", ")
        };
        out.push_str(&format!("{long} = {shown}  ({source})\n"));
    }
    Ok(out)
}

fn relax(cmd: Command) -> Command {
    cmd.mut_args(|a| a.required(false)).mut_subcommands(relax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Run {
            #[arg(long, default_value_t = 2)]
            width: usize,
            #[arg(long)]
            max_steps: Option<usize>,
            #[arg(long)]
            force: bool,
            #[arg(long)]
            record: Vec<String>,
            #[arg(long)]
            judge_api_key: Option<String>,
        },
    }

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn strings(c: &Completed) -> Vec<String> {
        c.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn flag_beats_file_and_file_fills_the_rest() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("umi.toml");
        std::fs::write(
            &file,
            "width = 1\nforce = true\n[run]\nmax_steps = 7\nrecord = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let cmd = Cli::command();
        let argv = args(&[
            "umi",
            "--config",
            file.to_str().unwrap(),
            "run",
            "--width",
            "3",
        ]);
        let c = complete(&cmd, argv).unwrap();
        let words = strings(&c);
        assert!(words.contains(&"--max-steps=7".to_string()), "{words:?}");
        assert!(words.contains(&"--force".to_string()));
        assert!(
            words.contains(&"--record=a".to_string()) && words.contains(&"--record=b".to_string())
        );
        assert!(!words.iter().any(|w| w == "--width=1"), "{words:?}");
        let shown = show(&cmd, &["run".into()], Some(&file)).unwrap();
        assert!(
            shown.contains(&format!("width = 1  ({})", file.display())),
            "{shown}"
        );
        assert!(shown.contains("judge-api-key = -  (unset)"), "{shown}");
        // An unknown key is named.
        std::fs::write(&file, "[run]\nwidht = 1\n").unwrap();
        let err = complete(
            &cmd,
            args(&["umi", "--config", file.to_str().unwrap(), "run"]),
        )
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("\"widht\""), "{err:#}");
    }

    #[test]
    fn secrets_are_masked_but_not_the_files_naming_them() {
        assert!(is_secret("judge-api-key"));
        assert!(is_secret("toolbench-key"));
        assert!(!is_secret("auth-token-file"));
        assert!(!is_secret("max-steps"));
        assert!(!is_secret("tls-client-key"));
    }
}
