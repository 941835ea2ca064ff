//! StableToolBench's response cache read unchanged: every entry of a cache written by
//! Python as StableToolBench's server writes one (scripts/make_cache_fixture.py) is found
//! from the call as a query's `api_list` names it, through the same request fields the
//! environment sends; a folder of another shape is an error naming it.

use std::path::{Path, PathBuf};

use serde_json::Value;
use umi_core::env::{ApiCall, ToolBackend, ToolEnv};
use umi_core::tool::ApiSpec;
use umi_tools::cache::{Lookup, ResponseCache};
use umi_tools::simulator::Simulator;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn api_of(case: &Value) -> ApiSpec {
    ApiSpec {
        category_name: case["category"].as_str().unwrap().into(),
        tool_name: case["tool"].as_str().unwrap().into(),
        api_name: case["api"].as_str().unwrap().into(),
        api_description: None,
        required_parameters: vec![],
        optional_parameters: vec![],
        method: None,
        shown_description: None,
    }
}

fn call_of(case: &Value) -> ApiCall {
    let api = api_of(case);
    ApiCall {
        category: api.category_name.clone(),
        tool_name: api.standard_tool_name(),
        api_name: api.pure_api_name(),
        tool_input: case["input"].as_str().unwrap().into(),
        function: api.function_name(),
        documented_name: api.api_name.clone(),
        description: String::new(),
    }
}

#[test]
fn every_entry_is_found_by_its_tool_input() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let cache = ResponseCache::open(&fixtures().join("stb-cache")).unwrap();
    assert_eq!(cache.files(), 4);
    for case in cases.as_array().unwrap() {
        let call = call_of(case);
        assert_eq!(
            cache.lookup(&call),
            Lookup::Hit(case["reply"].clone()),
            "{case}: looked in {}",
            cache.file_of(&call).unwrap().display()
        );
    }
    // Another input of a cached API, and an input that is not JSON.
    let mut call = call_of(&cases[0]);
    call.tool_input = r#"{"country": "de"}"#.into();
    assert_eq!(cache.lookup(&call), Lookup::Miss);
    call.tool_input = "country=de".into();
    assert_eq!(cache.lookup(&call), Lookup::BadInput);
}

#[test]
fn the_simulator_answers_from_the_cache_and_counts_hits_and_misses() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let mut sim = Simulator::new();
    sim.add_cache(ResponseCache::open(&fixtures().join("stb-cache")).unwrap());
    let reply = sim.answer(&call_of(&cases[0]));
    assert_eq!(reply.response, cases[0]["reply"]["response"]);
    // An object response with a null error (as many real entries are): kept as stored.
    assert!(cases[1]["reply"]["response"].is_object());
    let reply = sim.answer(&call_of(&cases[1]));
    assert_eq!(reply.response, cases[1]["reply"]["response"]);
    assert_eq!(reply.error, Value::Null);
    let mut miss = call_of(&cases[1]);
    miss.tool_input = r#"{"page": 9}"#.into();
    assert!(sim
        .answer(&miss)
        .error_text()
        .starts_with("No recorded response"));
    assert_eq!(
        sim.report().unwrap(),
        "tool calls: 2 from the response cache, 0 from recorded answers, 1 without a recorded response"
    );
}

/// The observation of every cached reply is what the reference's `json.dumps` gives for
/// the value as stored (objects, lists and `null` as their JSON, not as a string literal of
/// it; an empty response shows the error), cut at 1024 characters, and the status compares
/// the error text exactly: both written by Python (scripts/make_cache_fixture.py).
#[tokio::test]
async fn observations_are_json_dumps_of_the_cached_value() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let mut sim = Simulator::new();
    sim.add_cache(ResponseCache::open(&fixtures().join("stb-cache")).unwrap());
    for case in cases.as_array().unwrap() {
        let env = ToolEnv::new(vec![api_of(case)], &sim);
        let name = api_of(case).function_name();
        let (observation, status) = env.step(&name, case["input"].as_str().unwrap()).await;
        assert_eq!(observation, case["observation"].as_str().unwrap(), "{case}");
        assert_eq!(
            u64::from(status),
            case["status"].as_u64().unwrap(),
            "{case}"
        );
    }
}

#[test]
fn a_folder_of_another_shape_is_an_error_naming_it() {
    let dir = fixtures().join("tiny-llama-sharded");
    let err = ResponseCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("tiny-llama-sharded"), "{err}");
    assert!(
        err.contains("not a StableToolBench tool response cache"),
        "{err}"
    );
    assert!(!ResponseCache::looks_like_cache(
        &fixtures().join("../../data/toolbench-real")
    ));
}

/// Copies the fixture cache (the test writes into it).
fn cache_copy(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let target = to.join(p.file_name().unwrap());
            if p.is_dir() {
                copy(&p, &target);
            } else {
                std::fs::copy(&p, &target).unwrap();
            }
        }
    }
    let to = dir.join("cache");
    copy(&fixtures().join("stb-cache"), &to);
    to
}

/// A scripted chat endpoint (a test double, not a model): answers every request with
/// `content` and hands over the request bodies it got.
async fn scripted_chat(
    content: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            let body = loop {
                let n = sock.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break got[end + 4..end + 4 + len].to_vec();
                    }
                }
            };
            let _ = tx.send(serde_json::from_slice::<Value>(&body).unwrap());
            let reply = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).to_string();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (base, rx)
}

/// A miss is answered as StableToolBench's server answers it (its prompt, the API's
/// cached replies as examples), and saved into the cache where StableToolBench (and the
/// next lookup) reads it back.
#[tokio::test]
async fn misses_are_simulated_with_stabletoolbenchs_prompt_and_saved_into_the_cache() {
    use umi_tools::miss_simulator::{MissSimulator, SYSTEM_PROMPT};
    let dir = tempfile::tempdir().unwrap();
    let root = cache_copy(dir.path());
    let (base, mut requests) = scripted_chat(
        "```json\n{\"error\": \"\", \"response\": \"invented headlines \\u00e9\"}\n```",
    )
    .await;
    let mut sim = Simulator::new();
    sim.add_cache(ResponseCache::open(&root).unwrap());
    let mut simulator = MissSimulator::new(base, "judge".into());
    simulator.timeout = std::time::Duration::from_secs(10);
    sim.simulate_misses(simulator);
    sim.save_new_replies(true);
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let mut call = call_of(&cases[0]);
    call.tool_input = r#"{"country": "de"}"#.into();
    let reply = sim.call(&call).await.unwrap();
    assert_eq!(reply.response, "invented headlines é");
    let request = requests.recv().await.unwrap();
    assert_eq!(request["messages"][0]["content"], SYSTEM_PROMPT);
    let user = request["messages"][1]["content"].as_str().unwrap();
    // No tools folder: the server's empty document (tests/stb_server.rs has the rest).
    assert!(
        user.starts_with("API Documentation:{'tool_description': '', 'api_info': ''}\n"),
        "{user}"
    );
    assert!(user.contains("API Examples:[(\"{'country': 'fr'"), "{user}");
    assert!(user.ends_with("API Input:{'country': 'de'}\n"), "{user}");
    assert_eq!(request["response_format"]["type"], "json_object");

    // Saved in StableToolBench's layout: the next lookup (and a fresh reader) finds it.
    let again = ResponseCache::open(&root).unwrap();
    assert_eq!(
        again.lookup(&call),
        Lookup::Hit(serde_json::json!({"error": "", "response": "invented headlines é"}))
    );
    // Replaced in place, no temporary file left beside it.
    let folder = again
        .file_of(&call)
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for e in std::fs::read_dir(&folder).unwrap() {
        let name = e.unwrap().file_name();
        assert!(name.to_string_lossy().ends_with(".json"), "{name:?} left");
    }
    // Byte for byte what StableToolBench's save_cache writes (Python's json.dump).
    assert_eq!(
        std::fs::read_to_string(again.file_of(&call).unwrap()).unwrap(),
        std::fs::read_to_string(fixtures().join("stb-cache.saved.expected.json")).unwrap()
    );
    assert_eq!(
        sim.call(&call).await.unwrap().response,
        "invented headlines é"
    );
    assert!(
        sim.report()
            .unwrap()
            .ends_with("1 simulated, 0 failed simulations (not saved)"),
        "{}",
        sim.report().unwrap()
    );
}

/// A category that names no folder inside the cache (a tenant's `api_list` may say
/// anything) is never looked up or written outside it.
#[tokio::test]
async fn a_category_outside_the_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = cache_copy(dir.path());
    let cache = ResponseCache::open(&root).unwrap();
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    for category in ["..", ".", ""] {
        let mut call = call_of(&cases[0]);
        call.category = category.into();
        assert_eq!(cache.file_of(&call), None, "{category:?}");
        assert_eq!(cache.lookup(&call), Lookup::Miss);
        let err = cache
            .save(&call, &serde_json::json!({"error": "", "response": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside.len(), 1, "{outside:?}");
}

/// A cache file that cannot be read (here a folder where the file should be) is a miss
/// as before, but a logged one, naming the file and the error: a silent miss would hide
/// a broken cache behind simulated or failed calls.
#[test]
fn an_unreadable_cache_file_is_a_logged_miss() {
    #[derive(Clone, Default)]
    struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let root = cache_copy(dir.path());
    let cache = ResponseCache::open(&root).unwrap();
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let call = call_of(&cases[0]);
    let file = cache.file_of(&call).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();

    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let lookup = tracing::subscriber::with_default(subscriber, || cache.lookup(&call));
    assert_eq!(lookup, Lookup::Miss);
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains(&file.display().to_string()), "{logged}");
    let error = std::fs::read(&file).unwrap_err().to_string();
    assert!(logged.contains(&error), "{logged}");

    // A file that is not there is an ordinary miss, not logged.
    std::fs::remove_dir(&file).unwrap();
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    let fresh = ResponseCache::open(&root).unwrap();
    let lookup = tracing::subscriber::with_default(subscriber, || fresh.lookup(&call));
    assert_eq!(lookup, Lookup::Miss);
    assert!(log.0.lock().unwrap().is_empty());
}
