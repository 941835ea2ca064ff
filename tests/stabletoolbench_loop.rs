//! `scripts/stabletoolbench.sh` end to end on the bundled model over one solvable group:
//! tools answered from a StableToolBench response cache, misses simulated by a scripted
//! OpenAI-compatible endpoint (a test double, not a model) and saved into the cache. Then
//! every observation in the answer files is checked by Python against the cache as the
//! reference renders it (`json.dumps` of the stored response: objects, lists and `null`
//! as their JSON, not as string literals), by scripts/check_observations.py.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The replies the scripted simulator gives, in turn: the shapes StableToolBench's
/// simulator returns (an object, a list, null, a long object, an error).
fn simulated(n: usize) -> Value {
    match n % 5 {
        0 => {
            json!({"error": "", "response": {"results": [{"title": "caf\u{e9} \"news\"", "n": n}]}})
        }
        1 => json!({"error": "", "response": [1, "two", null]}),
        2 => json!({"error": "", "response": null}),
        3 => {
            json!({"error": "", "response": {"items": (0..60).map(|i| json!({"id": i, "text": "line\nbreak"})).collect::<Vec<_>>()}})
        }
        _ => json!({"error": "Rate limit error...", "response": ""}),
    }
}

/// A scripted OpenAI-compatible chat endpoint on loopback answering every simulation
/// request with the next of [`simulated`]'s replies as JSON content.
fn scripted_simulator() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            if support::read_request_body(&mut sock).is_none() {
                continue;
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            let reply = json!({"choices": [{"index": 0, "message": {"role": "assistant",
                "content": simulated(n).to_string()}}]})
            .to_string();
            support::write_json_response(&mut sock, &reply);
        }
    });
    (base, served)
}

fn api(category: &str, tool: &str, api: &str, params: &[&str]) -> Value {
    let required: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "type": "STRING", "description": format!("The {p}."), "default": ""}))
        .collect();
    json!({"category_name": category, "tool_name": tool, "api_name": api,
        "api_description": format!("{api} of {tool}."), "required_parameters": required,
        "optional_parameters": [], "method": "GET"})
}

/// A StableToolBench layout in `dir` with one group of three queries over the cache
/// fixture: (the StableToolBench folder, its cache, the group's query file).
fn stabletoolbench_in(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cache = dir.join("tool_response_cache");
    copy_dir(&root("tests/fixtures/stb-cache"), &cache);
    let stb = dir.join("StableToolBench");
    let groups = stb.join("solvable_queries/test_instruction");
    std::fs::create_dir_all(&groups).unwrap();
    // The bundled 135M model writes no `Action:` line, which the reference parses as the
    // action `none`; its suffix rule then takes the first function whose name ends with
    // `none`. So the tool is named "Cache None": every such call reaches the cache with
    // the input `{}`. Query 100's API has a cached null response, 102's a long object
    // (cut at 1024 characters), 101's nothing: simulated, saved, then a cache hit.
    let seeded = |api: &str, reply: Value| {
        let folder = cache.join("Data/cache_none_for_Data");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!("{api}.json")),
            json!({"{}": reply}).to_string(),
        )
        .unwrap();
    };
    seeded("headlines", json!({"error": null, "response": null}));
    let long: Vec<Value> = (0..80)
        .map(|i| json!({"id": i, "name": "Zoë \"x\""}))
        .collect();
    seeded("lookup", json!({"error": "", "response": {"items": long}}));
    let queries: Vec<Value> = [
        ("What are today's top headlines in France?", "Headlines"),
        ("Give me the info of 3D model number 2.", "Model Info"),
        ("Find the 3D model called teapot.", "Lookup"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, a))| json!({"query": q, "query_id": 100 + i, "api_list": [api("Data", "Cache None", a, &[])]}))
    .collect();
    let query_file = groups.join("G1_instruction.json");
    std::fs::write(&query_file, serde_json::to_vec_pretty(&queries).unwrap()).unwrap();

    (stb, cache, query_file)
}

/// `scripts/stabletoolbench.sh` over the G1_instruction group of `stb`, with `cache`,
/// answers into `out`, the bundled model (quantized) and `flags` for `umi run`.
fn script(stb: &Path, cache: &Path, out: &Path, flags: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root("scripts/stabletoolbench.sh"))
        .arg(stb)
        .arg(cache)
        .args(["--", "--dtype", "quantized"])
        .args(flags)
        .env("UMI", env!("CARGO_BIN_EXE_umi"))
        .env("OUT", out)
        .env("STB_GROUPS", "G1_instruction")
        .current_dir(root(""));
    cmd
}

#[test]
fn observations_in_the_answer_files_are_the_references_json_dumps_of_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (stb, cache, query_file) = stabletoolbench_in(dir.path());
    let (simulator, served) = scripted_simulator();
    let out = dir.path().join("runs");
    let output = script(
        &stb,
        &cache,
        &out,
        &["--max-new-tokens", "32", "--max-steps", "4"],
    )
    .args(["--simulate-with", &simulator, "--save-cache"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("tool calls:"), "{stderr}");

    let check = std::process::Command::new("python3")
        .arg(root("scripts/check_observations.py"))
        .arg(out.join("G1_instruction"))
        .arg(&cache)
        .arg(&query_file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}\n(run: {stderr})");
    let checked: usize = said
        .trim()
        .strip_prefix("checked ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    // Each seeded case was checked: the cached null (100), the simulated reply saved and
    // then hit (101), the long object cut at 1024 characters (102).
    assert!(
        checked >= 3 && said.contains("in queries 100 101 102"),
        "{said}\n(run: {stderr}; simulated {})",
        served.load(Ordering::SeqCst)
    );
    assert!(
        served.load(Ordering::SeqCst) >= 1,
        "nothing was simulated: {said}"
    );
    eprintln!("{said} (simulated {})", served.load(Ordering::SeqCst));
}

/// The loop with nothing outside (`OFFLINE=1`): a umi worker on loopback serving the
/// bundled model simulates the cache's misses (JSON-constrained, saved into the cache)
/// and judges the answers (forced function calls), with no network and no key given.
#[test]
fn the_loop_runs_offline_with_a_umi_worker_as_simulator_and_judge() {
    let dir = tempfile::tempdir().unwrap();
    let (stb, cache, _) = stabletoolbench_in(dir.path());
    let missed = cache.join("Data/cache_none_for_Data/model_info.json");
    assert!(!missed.exists());
    let out = dir.path().join("runs");
    // The bundled model's own searches end without a final answer, which the evaluator
    // rates without asking the judge; four answers with final answers (the pass-rate
    // fixture's, as if from an earlier run into the same folder) are judged.
    let group = out.join("G1_instruction");
    std::fs::create_dir_all(&group).unwrap();
    for id in [7, 8, 10, 11] {
        let name = format!("{id}_DFS_woFilter_w2.json");
        std::fs::copy(
            root("tests/fixtures/pass-rate/answers").join(&name),
            group.join(&name),
        )
        .unwrap();
    }
    let port = support::procs::free_port().to_string();
    let offline = || {
        let flags = ["--max-new-tokens", "32", "--max-steps", "4"];
        let mut cmd = script(&stb, &cache, &out, &flags);
        cmd.env("OFFLINE", "1")
            .env("OFFLINE_MAX_TOKENS", "64")
            .env("OFFLINE_PORT", &port)
            .env("OFFLINE_SAVE_CACHE", "1")
            .env_remove("UMI_SIMULATE_API_KEY")
            .env_remove("UMI_JUDGE_API_KEY");
        cmd
    };
    let output = offline().output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("offline: simulator and judge on http://127.0.0.1:"),
        "{stderr}"
    );
    for id in 100..103 {
        assert!(
            group.join(format!("{id}_DFS_woFilter_w2.json")).exists(),
            "{stderr}"
        );
    }
    // The miss was simulated by the worker and saved into the cache.
    let saved: Value = serde_json::from_slice(&std::fs::read(&missed).unwrap()).unwrap();
    assert_eq!(saved.as_object().unwrap().len(), 1, "{saved}");
    // The four final answers went to the worker's judge (as forced calls, whose verdicts
    // parse), and the group's pass rate covers all seven queries.
    let asked: usize = stderr
        .split(" judgments asked of the judge")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no judgments counted: {stderr}"));
    assert!(asked >= 4, "{stderr}");
    let rates = std::fs::read_to_string(out.join("pass_rate.txt")).unwrap();
    assert!(rates.starts_with("G1_instruction: Solve rate: "), "{rates}");
    assert!(rates.contains("(7 queries"), "{rates}");
    // The script ends with the run's page.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("<td>G1_instruction</td>") && page.contains("id=\"card-pass-rate\""));
    // A rerun finds the same simulator (its address is one of the run's inputs) and
    // resumes: nothing left to solve, the verdicts reused.
    let again = offline().output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("(3 already done)"), "{stderr}");
    assert!(
        stderr.contains(" 0 judgments asked of the judge"),
        "{stderr}"
    );
    eprintln!("{stderr}\n{rates}");
}
