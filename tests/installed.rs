//! umi as an installed program: installed under a prefix (scripts/install.sh) and run
//! from another directory; settings from a file and the environment with their
//! precedence; errors a person can act on; JSON logs; version, completions, man pages.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A command for `bin`, run in `cwd`, with none of the caller's UMI_* settings.
fn clean(bin: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("UMI_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn the_installed_binary_runs_its_default_from_another_directory() {
    let prefix = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(root("scripts/install.sh"))
        .arg(prefix.path())
        .env("UMI_BIN", env!("CARGO_BIN_EXE_umi"))
        .status()
        .unwrap();
    assert!(status.success());
    let elsewhere = tempfile::tempdir().unwrap();
    let out = clean(&prefix.path().join("bin/umi"), elsewhere.path())
        .args(["run", "--max-steps", "1", "--max-new-tokens", "8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = std::fs::read_dir(elsewhere.path().join("runs/demo"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("_DFS_woFilter_w2.json")
        })
        .count();
    assert_eq!(answers, 4);
    let m = manifest(&elsewhere.path().join("runs/demo"));
    assert_eq!(m["queries"]["built_in"], "data/queries/demo.json");
    assert!(m["roles"]["planner"]["checkpoint"]["path"]
        .as_str()
        .unwrap()
        .contains("share/umi/models"));

    // The binary alone: one line saying where the model was looked for, one what to do.
    let lone = tempfile::tempdir().unwrap();
    std::fs::create_dir(lone.path().join("bin")).unwrap();
    let bin = lone.path().join("bin/umi");
    std::fs::copy(env!("CARGO_BIN_EXE_umi"), &bin).unwrap();
    let out = clean(&bin, elsewhere.path())
        .args(["run", "--max-steps", "1", "--out", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains("UMI_HOME")
            && lines[0].contains("share/umi/models"),
        "{stderr}"
    );
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    // ...and with $UMI_HOME pointing at the install, it runs.
    let out = clean(&bin, elsewhere.path())
        .env("UMI_HOME", prefix.path().join("share/umi"))
        .args([
            "run",
            "--max-steps",
            "1",
            "--max-new-tokens",
            "8",
            "--out",
            "y",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// flag > environment > file > default, seen in what the run used (its manifest) and in
/// `umi config show`; secrets masked; a misspelt key named.
#[test]
fn settings_come_from_flags_then_the_environment_then_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("umi.toml");
    std::fs::write(
        &file,
        "max-new-tokens = 8\n[run]\nmax_steps = 3\nwidth = 1\ntoolbench-key = \"from-file\"\n",
    )
    .unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_umi"));
    let run = |extra: &[&str], env: &[(&str, &str)], out: &str| {
        let mut cmd = clean(&bin, &root(""));
        cmd.arg("--config")
            .arg(&file)
            .args(["run", "--dtype", "quantized", "--out"]);
        cmd.arg(dir.path().join(out)).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        manifest(&dir.path().join(out))
    };
    let file_only = run(&[], &[], "a");
    assert_eq!(file_only["search"]["max_steps"], 3);
    assert_eq!(file_only["search"]["width"], 1);
    assert_eq!(file_only["sampling"]["max_new_tokens"], 8);
    let env_over_file = run(&[], &[("UMI_MAX_STEPS", "2")], "b");
    assert_eq!(env_over_file["search"]["max_steps"], 2);
    let flag_over_env = run(&["--max-steps", "1"], &[("UMI_MAX_STEPS", "2")], "c");
    assert_eq!(flag_over_env["search"]["max_steps"], 1);

    let show = clean(&bin, &root(""))
        .arg("--config")
        .arg(&file)
        .args(["config", "show", "run"])
        .env("UMI_MAX_STEPS", "2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(text.contains("max-steps = 2  ($UMI_MAX_STEPS)"), "{text}");
    assert!(
        text.contains(&format!("width = 1  ({})", file.display())),
        "{text}"
    );
    assert!(text.contains("toolbench-key = ****"), "{text}");
    assert!(!text.contains("from-file"), "{text}");
    assert!(text.contains("concurrency = -  (unset)"), "{text}");

    std::fs::write(&file, "[run]\nmax-stepz = 3\n").unwrap();
    let bad = clean(&bin, &root(""))
        .arg("--config")
        .arg(&file)
        .args(["run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.starts_with("error: ") && stderr.contains("\"max-stepz\""),
        "{stderr}"
    );
}

/// An unreachable etcd: one line naming the address and what failed, one line of remedy,
/// no transport internals.
#[test]
fn an_unreachable_service_is_one_line_of_cause_and_one_of_remedy() {
    let dead = format!("http://127.0.0.1:{}", support::procs::free_port());
    let out = clean(&PathBuf::from(env!("CARGO_BIN_EXE_umi")), &root(""))
        .args([
            "worker",
            "--role",
            "planner",
            "--listen",
            "127.0.0.1:0",
            "--dtype",
            "quantized",
            "--etcd",
            &dead,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(
        lines[0],
        format!("error: registering in etcd: etcd at {dead}: connection refused")
    );
    assert!(lines[1].starts_with("hint: start etcd"), "{stderr}");
    assert!(
        !stderr.contains("tonic") && !stderr.contains("Caused by"),
        "{stderr}"
    );
}

/// Refusals that keep secrets and tasks private name what to do instead.
#[test]
fn unsafe_secret_settings_are_refused_with_the_fix() {
    let umi = |args: &[&str]| {
        let out = clean(&PathBuf::from(env!("CARGO_BIN_EXE_umi")), &root(""))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No tokens beyond loopback: every client would share every task.
    let shared = umi(&["coordinator", "--listen", "0.0.0.0:0", "--insecure-network"]);
    assert!(
        shared.contains("--auth-token-file") && shared.contains("--anonymous"),
        "{shared}"
    );
    // Said explicitly, it starts (and stops at the next missing setting: workers).
    let anonymous = umi(&[
        "coordinator",
        "--listen",
        "0.0.0.0:0",
        "--insecure-network",
        "--anonymous",
    ]);
    assert!(
        anonymous.contains("shares one task namespace") && anonymous.contains("role workers"),
        "{anonymous}"
    );

    // A token file others can read.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "alice:0123456789abcdef0123\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = umi(&["coordinator", "--auth-token-file", tokens.to_str().unwrap()]);
        assert!(
            open.contains("mode 0644") && open.contains(&format!("chmod 600 {}", tokens.display())),
            "{open}"
        );
    }

    // ToolBench's key in clear to its public server, unless said explicitly.
    let clear = umi(&["run", "--tools", "rapidapi", "--toolbench-key", "k3y"]);
    assert!(
        clear.contains("http://8.130.32.149:8080/rapidapi")
            && clear.contains("--send-key-over-http"),
        "{clear}"
    );
}

#[test]
fn json_logs_carry_the_span_fields() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = clean(&PathBuf::from(env!("CARGO_BIN_EXE_umi")), &root(""))
        .args([
            "--log-format",
            "json",
            "run",
            "--dtype",
            "quantized",
            "--max-steps",
            "1",
            "--max-new-tokens",
            "4",
        ])
        .arg("--queries")
        .arg(root("tests/fixtures/one-query.json"))
        .arg("--out")
        .arg(out_dir.path())
        .env("RUST_LOG", "debug,h2=off,hyper=off,tower=off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!events.is_empty(), "{stderr}");
    let in_a_role_call = events.iter().find(|e| {
        e["spans"].as_array().is_some_and(|s| {
            s.iter()
                .any(|sp| sp["name"] == "task" && sp["task_id"] == "9001")
                && s.iter()
                    .any(|sp| sp["name"] == "role_call" && sp["role"] == "planner")
        })
    });
    assert!(in_a_role_call.is_some(), "{stderr}");
}

#[test]
fn version_completions_and_man_pages() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_umi"));
    let version = clean(&bin, &root("")).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    let cpu_kernels = ["avx512", "avx2", "candle's", "portable"];
    assert!(
        text.contains("commit ")
            && cpu_kernels.iter().any(|k| text.contains(k))
            && text.contains("cuda"),
        "{text}"
    );

    let bash = clean(&bin, &root(""))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("_umi()") && script.contains("--max-steps"),
        "{script}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("umi.bash"), script.as_bytes()).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("umi.bash"))
        .status()
        .unwrap();
    assert!(check.success(), "the bash completion script does not parse");
    for shell in ["zsh", "fish"] {
        let o = clean(&bin, &root(""))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success() && !o.stdout.is_empty());
    }

    let pages = dir.path().join("man");
    let man = clean(&bin, &root(""))
        .args(["man"])
        .arg(&pages)
        .output()
        .unwrap();
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    for page in [
        "umi.1",
        "umi-run.1",
        "umi-eval-static.1",
        "umi-config-show.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}
