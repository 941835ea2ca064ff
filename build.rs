//! Records the commit umi is built from (`UMI_GIT_COMMIT`, shown in each run's
//! manifest.json); a build outside a git checkout has none.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=UMI_GIT_COMMIT={commit}");
    }
    // Rebuilt when HEAD moves: a checkout (HEAD) or a commit (the branch's ref).
    // (A path that does not exist would rerun this script at every build: skipped.)
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // Without any watched file (no checkout), only this script's own changes rebuild.
    println!("cargo:rerun-if-changed=build.rs");
}
