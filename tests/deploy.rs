//! deploy/ checked without a cluster: every Kubernetes manifest parses strictly into the
//! API's types and every pod runs hardened (non-root, read-only root filesystem, no
//! privilege escalation or capabilities, seccomp, probes, requests and limits, pinned
//! images, no service account token, secret volumes readable by owner and group only);
//! NetworkPolicies deny ingress by default and let
//! through only the paths umi uses; the image runs as the manifests' user and its build
//! context leaves out builds, runs and secrets; the systemd units run sandboxed as their
//! own user.

#[path = "deploy/dockerignore.rs"]
mod dockerignore;
#[path = "deploy/manifests.rs"]
mod manifests;
#[path = "deploy/network.rs"]
mod network;
#[path = "deploy/quantity.rs"]
mod quantity;
#[path = "deploy/units.rs"]
mod units;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use dockerignore::DockerIgnore;
use manifests::{deploy_dir, Manifest, Object, Pod};
use network::{allows, isolates, Source};
use units::Unit;

/// Fails with every problem found, one a line.
fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn pods(manifests: &[Manifest]) -> Vec<Pod<'_>> {
    manifests.iter().filter_map(Manifest::pod).collect()
}

fn network_policies(manifests: &[Manifest]) -> Vec<&NetworkPolicy> {
    let policies = manifests.iter().filter_map(|m| match &m.object {
        Object::NetworkPolicy(p) => Some(p),
        _ => None,
    });
    policies.collect()
}

#[test]
fn every_manifest_parses_strictly_into_kubernetes_types() {
    let manifests = manifests::load();
    let kinds = |f: fn(&Object) -> bool| manifests.iter().filter(|m| f(&m.object)).count();
    assert!(
        kinds(|o| matches!(o, Object::Deployment(_))) >= 4,
        "3 role workers, the coordinator"
    );
    assert_eq!(kinds(|o| matches!(o, Object::StatefulSet(_))), 1, "etcd");
    assert_eq!(kinds(|o| matches!(o, Object::Job(_))), 1, "etcd's auth Job");
    assert!(kinds(|o| matches!(o, Object::NetworkPolicy(_))) >= 1);
}

#[test]
fn a_field_the_type_does_not_know_fails_the_parse() {
    let value: serde_json::Value = serde_norway::from_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 1, tragetPort: 2}]\n",
    )
    .unwrap();
    let parsed = std::panic::catch_unwind(|| {
        manifests::strict::<k8s_openapi::api::core::v1::Service>("test", &value)
    });
    assert!(parsed.is_err(), "tragetPort (misspelt) was accepted");
}

#[test]
fn every_pod_is_hardened() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    for pod in pods(&manifests) {
        let spec = pod.spec;
        let mut problem = |what: &str| problems.push(format!("{}: {what}", pod.origin));
        if spec.automount_service_account_token != Some(false) {
            problem("automountServiceAccountToken is not false");
        }
        if [spec.host_network, spec.host_pid, spec.host_ipc].contains(&Some(true)) {
            problem("shares a host namespace");
        }
        let context = spec.security_context.clone().unwrap_or_default();
        if context.run_as_non_root != Some(true) {
            problem("pod securityContext.runAsNonRoot is not true");
        }
        // Writable volumes (emptyDir, claims) must be writable by the non-root user.
        let volumes = spec.volumes.iter().flatten();
        let writable = volumes
            .filter(|v| v.empty_dir.is_some() || v.persistent_volume_claim.is_some())
            .count()
            + pod.claim_templates.len();
        if writable > 0 && context.fs_group.is_none_or(|g| g <= 0) {
            problem("writable volumes but no non-root securityContext.fsGroup");
        }
        if pod.deadline == Some(None) {
            problem("a Job without activeDeadlineSeconds (which stands in for probes)");
        }
    }
    assert_none(problems);
}

/// umi refuses secret files others can read or its group can change (mode & 0o027,
/// umi_rpc::secret_file); a secret volume's files are 0644 unless `defaultMode` says
/// otherwise (kubelet adds group read for the pod's fsGroup, so 0440 is what they get).
#[test]
fn every_secret_volume_is_readable_by_its_owner_and_group_only() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    for pod in pods(&manifests) {
        let has_fs_group = pod
            .spec
            .security_context
            .as_ref()
            .and_then(|c| c.fs_group)
            .is_some_and(|g| g > 0);
        for volume in pod.spec.volumes.iter().flatten() {
            let Some(secret) = &volume.secret else {
                continue;
            };
            let mut problem = |what: String| {
                problems.push(format!("{} volume {}: {what}", pod.origin, volume.name))
            };
            match secret.default_mode {
                Some(mode) if mode & 0o027 == 0 => {}
                mode => problem(format!(
                    "defaultMode {mode:?} is not owner/group-read only (0440)"
                )),
            }
            for item in secret.items.iter().flatten() {
                if item.mode.is_some_and(|m| m & 0o027 != 0) {
                    problem(format!("item {} has mode {:?}", item.path, item.mode));
                }
            }
            if !has_fs_group {
                problem("no non-root fsGroup to read its root-owned files through".into());
            }
        }
    }
    assert_none(problems);
}

#[test]
fn every_container_runs_hardened() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    for pod in pods(&manifests) {
        let pod_seccomp = pod
            .spec
            .security_context
            .as_ref()
            .and_then(|c| c.seccomp_profile.as_ref());
        for c in pod.containers() {
            let mut problem =
                |what: &str| problems.push(format!("{} {}: {what}", pod.origin, c.name));
            let context = c.security_context.clone().unwrap_or_default();
            if context.run_as_non_root != Some(true) {
                problem("securityContext.runAsNonRoot is not true");
            }
            if context.run_as_user.is_none_or(|u| u <= 0) {
                problem("securityContext.runAsUser is not a non-root uid");
            }
            if context.run_as_group.is_none_or(|g| g <= 0) {
                problem("securityContext.runAsGroup is not a non-root gid");
            }
            if context.read_only_root_filesystem != Some(true) {
                problem("securityContext.readOnlyRootFilesystem is not true");
            }
            if context.allow_privilege_escalation != Some(false) {
                problem("securityContext.allowPrivilegeEscalation is not false");
            }
            if context.privileged == Some(true) {
                problem("privileged");
            }
            let capabilities = context.capabilities.clone().unwrap_or_default();
            if capabilities.drop != Some(vec!["ALL".to_string()]) {
                problem("securityContext.capabilities.drop is not [ALL]");
            }
            if capabilities.add.is_some_and(|a| !a.is_empty()) {
                problem("adds capabilities");
            }
            let seccomp = context.seccomp_profile.as_ref().or(pod_seccomp);
            if seccomp.is_none_or(|s| s.type_ != "RuntimeDefault") {
                problem("no RuntimeDefault seccompProfile (container or pod)");
            }
            // A read-only root filesystem leaves /tmp to a volume of the pod's own.
            let tmp = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == "/tmp");
            let tmp_volume = tmp.and_then(|m| {
                let volumes = pod.spec.volumes.iter().flatten();
                volumes.clone().find(|v| v.name == m.name)
            });
            if tmp_volume.is_none_or(|v| v.empty_dir.is_none())
                || tmp.is_some_and(|m| m.read_only == Some(true))
            {
                problem("no writable emptyDir on /tmp");
            }
        }
    }
    assert_none(problems);
}

/// The problems with one probe: one handler, on a port the container declares.
fn probe_problems(pod: &Pod, which: &str, probe: Option<&Probe>) -> Vec<String> {
    let Some(probe) = probe else {
        return vec![format!("no {which}")];
    };
    let handlers = [
        probe.exec.is_some(),
        probe.tcp_socket.is_some(),
        probe.http_get.is_some(),
        probe.grpc.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        return vec![format!("{which} has not exactly one handler")];
    }
    let port = match (&probe.tcp_socket, &probe.http_get, &probe.grpc) {
        (Some(tcp), _, _) => Some(tcp.port.clone()),
        (_, Some(http), _) => Some(http.port.clone()),
        (_, _, Some(grpc)) => Some(IntOrString::Int(grpc.port)),
        _ => None,
    };
    match port {
        Some(p) if pod.port_number(&p).is_none() => {
            vec![format!("{which} checks {p:?}, no port of the pod")]
        }
        _ => Vec::new(),
    }
}

#[test]
fn every_serving_container_has_liveness_and_readiness_probes() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    for pod in pods(&manifests).iter().filter(|p| p.deadline.is_none()) {
        for c in pod.containers() {
            let probes = [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
            ];
            for (which, probe) in probes {
                let found = probe_problems(pod, which, probe);
                problems.extend(
                    found
                        .into_iter()
                        .map(|p| format!("{} {}: {p}", pod.origin, c.name)),
                );
            }
            if c.startup_probe.is_some() {
                let found = probe_problems(pod, "startupProbe", c.startup_probe.as_ref());
                problems.extend(
                    found
                        .into_iter()
                        .map(|p| format!("{} {}: {p}", pod.origin, c.name)),
                );
            }
        }
    }
    assert_none(problems);
}

/// Whether the container's command line puts its model on a GPU.
fn uses_gpu(c: &Container) -> bool {
    let words = c.command.iter().flatten().chain(c.args.iter().flatten());
    words
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "--device" && w[1].starts_with("cuda"))
        || c.args
            .iter()
            .flatten()
            .any(|a| a.starts_with("--device=cuda"))
}

#[test]
fn every_container_has_resource_requests_and_limits() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    for pod in pods(&manifests) {
        for c in pod.containers() {
            let mut problem =
                |what: String| problems.push(format!("{} {}: {what}", pod.origin, c.name));
            let resources = c.resources.clone().unwrap_or_default();
            let requests = resources.requests.unwrap_or_default();
            let limits = resources.limits.unwrap_or_default();
            for name in ["cpu", "memory"] {
                match (requests.get(name), limits.get(name)) {
                    (Some(r), Some(l)) if quantity::value(&r.0) > quantity::value(&l.0) => {
                        problem(format!("{name} request {} above its limit {}", r.0, l.0))
                    }
                    (Some(_), Some(_)) => {}
                    _ => problem(format!("{name} needs both a request and a limit")),
                }
            }
            let gpus = limits.get("nvidia.com/gpu").map(|q| quantity::value(&q.0));
            if uses_gpu(c) && gpus.is_none_or(|n| n < 1.0) {
                problem("runs on cuda without an nvidia.com/gpu limit".into());
            }
            // Extended resources are not overcommitted: a request must equal the limit.
            if requests
                .get("nvidia.com/gpu")
                .is_some_and(|r| Some(quantity::value(&r.0)) != gpus)
            {
                problem("nvidia.com/gpu request differs from its limit".into());
            }
        }
    }
    assert_none(problems);
}

/// The image's repository and tag (`None` for an untagged image).
fn image_tag(image: &str) -> (&str, Option<&str>) {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(colon) => (&name[..last + colon], Some(&name[last + colon + 1..])),
        None => (name, None),
    }
}

/// Whether `tag` is an exact release: `1.2.3`, `v1.2.3`, with an optional `-suffix`.
fn is_exact_version(tag: &str) -> bool {
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let version = version.split_once('-').map_or(version, |(v, _)| v);
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn every_image_is_pinned_to_a_version() {
    let manifests = manifests::load();
    let version = env!("CARGO_PKG_VERSION");
    let mut problems = Vec::new();
    for pod in pods(&manifests) {
        for c in pod.containers() {
            let image = c.image.as_deref().unwrap_or_default();
            let mut problem =
                |what: &str| problems.push(format!("{} {}: {image}: {what}", pod.origin, c.name));
            match image_tag(image) {
                (_, None) => problem("no tag (means :latest)"),
                (_, Some(tag)) if !is_exact_version(tag) => problem("not an exact version tag"),
                ("umi", Some(tag)) if tag != version && tag != format!("{version}-cuda") => {
                    problem("not umi's version (Cargo.toml's workspace version)")
                }
                ("umi", Some(tag)) if uses_gpu(c) != tag.ends_with("-cuda") => {
                    problem("the -cuda image is for the containers on a GPU, and only for them")
                }
                _ => {}
            }
        }
    }
    assert_none(problems);
}

#[test]
fn every_service_routes_to_pods_and_their_ports() {
    let manifests = manifests::load();
    let pods = pods(&manifests);
    let mut problems = Vec::new();
    for m in &manifests {
        let Object::Service(service) = &m.object else {
            continue;
        };
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        let selected: Vec<_> = pods
            .iter()
            .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect();
        if selected.is_empty() {
            problems.push(format!("{}: selects no pod", m.origin));
        }
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for pod in selected.iter().filter(|p| p.port_number(&target).is_none()) {
                problems.push(format!(
                    "{}: port {target:?} is no port of {}",
                    m.origin, pod.origin
                ));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn network_policies_deny_ingress_by_default_and_allow_only_umis_paths() {
    let manifests = manifests::load();
    let pods = pods(&manifests);
    let policies = network_policies(&manifests);
    let pod = |app: &str, role: Option<&str>| {
        let found = pods.iter().find(|p| {
            p.labels.get("app").map(String::as_str) == Some(app)
                && p.labels.get("role").map(String::as_str) == role
        });
        found.unwrap_or_else(|| panic!("no pod app={app} role={role:?}"))
    };

    // Default deny: a policy with no ingress rule isolates every pod of the manifests.
    let deny_all = policies.iter().find(|p| {
        let rules = p.spec.as_ref().and_then(|s| s.ingress.as_ref());
        rules.is_none_or(Vec::is_empty) && pods.iter().all(|pod| isolates(p, &pod.labels))
    });
    assert!(
        deny_all.is_some(),
        "no NetworkPolicy denies ingress to every pod"
    );

    let coordinator = pod("umi", Some("coordinator"));
    let workers = ["planner", "caller", "summarizer"].map(|r| pod("umi", Some(r)));
    let etcd = pod("umi-etcd", None);
    let auth_job = pod("umi-etcd-auth", None);
    let stranger = BTreeMap::from([("app".to_string(), "something-else".to_string())]);
    let from = |p: &Pod| p.labels.clone();
    let (coordinator_labels, etcd_labels, job_labels) =
        (from(coordinator), from(etcd), from(auth_job));
    let (c, e, j, s) = (
        Source::Pod(&coordinator_labels),
        Source::Pod(&etcd_labels),
        Source::Pod(&job_labels),
        Source::Pod(&stranger),
    );
    let check = |from: &Source, who: &str, to: &Pod, port: i32, expected: bool| {
        let got = allows(&policies, from, to, port);
        (got != expected).then(|| {
            format!(
                "{who} -> {}:{port}: allowed {got}, should be {expected}",
                to.origin
            )
        })
    };
    let mut problems = Vec::new();
    // Clients, wherever they are, reach the coordinator's gRPC port and nothing else.
    for (source, who) in [(&Source::Outside, "outside"), (&s, "another pod")] {
        problems.push(check(source, who, coordinator, 50050, true));
        problems.push(check(source, who, coordinator, 50051, false));
        problems.push(check(source, who, etcd, 2379, false));
        problems.push(check(source, who, etcd, 2380, false));
        problems.push(check(source, who, auth_job, 2379, false));
        for worker in workers {
            problems.push(check(source, who, worker, 50051, false));
        }
    }
    for worker in workers {
        let labels = from(worker);
        let w = Source::Pod(&labels);
        problems.push(check(&c, "coordinator", worker, 50051, true));
        problems.push(check(&w, "a worker", etcd, 2379, true));
        problems.push(check(&w, "a worker", etcd, 2380, false));
        problems.push(check(&e, "etcd", worker, 50051, false));
        problems.push(check(&j, "auth job", worker, 50051, false));
        for other in workers {
            problems.push(check(&w, "a worker", other, 50051, false));
        }
    }
    problems.push(check(&c, "coordinator", etcd, 2379, true));
    problems.push(check(&c, "coordinator", etcd, 2380, false));
    problems.push(check(&j, "auth job", etcd, 2379, true));
    problems.push(check(&e, "etcd", etcd, 2380, true));
    problems.push(check(&e, "etcd", auth_job, 2379, false));
    assert_none(problems.into_iter().flatten().collect());
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile_instructions() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(continued) => pending = pending + continued + " ",
            None => instructions.push(std::mem::take(&mut pending) + line),
        }
    }
    instructions
}

#[test]
fn the_image_runs_as_the_manifests_non_root_user() {
    let instructions = dockerfile_instructions();
    let keyword = |i: &String| {
        i.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
    };
    let last_from = instructions
        .iter()
        .rposition(|i| keyword(i) == "FROM")
        .expect("a FROM");
    let user = instructions[last_from..]
        .iter()
        .rfind(|i| keyword(i) == "USER")
        .expect("the final stage sets no USER: the image runs as root");
    let user = user.split_whitespace().nth(1).unwrap_or_default();
    // Numeric, so that the kubelet can verify runAsNonRoot without /etc/passwd.
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let uid: i64 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: not a numeric uid"));
    let gid: i64 = gid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: not a numeric gid"));
    assert!(uid > 0 && gid > 0, "USER {user} is root");

    let manifests = manifests::load();
    let mut umi_containers = 0;
    for pod in pods(&manifests) {
        for c in pod
            .containers()
            .filter(|c| image_tag(c.image.as_deref().unwrap_or_default()).0 == "umi")
        {
            let context = c.security_context.clone().unwrap_or_default();
            assert_eq!(
                context.run_as_user,
                Some(uid),
                "{} {}: runAsUser",
                pod.origin,
                c.name
            );
            assert_eq!(
                context.run_as_group,
                Some(gid),
                "{} {}: runAsGroup",
                pod.origin,
                c.name
            );
            umi_containers += 1;
        }
    }
    assert!(umi_containers >= 4);
}

#[test]
fn the_build_context_keeps_the_sources_and_leaves_out_builds_runs_and_secrets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join(".dockerignore")).expect("a .dockerignore at the root");
    let ignore = DockerIgnore::parse(&text);
    let mut problems = Vec::new();
    let left_out = [
        "target/release/umi",
        "runs/cluster/secrets/ca.key",
        "runs/cluster/secrets/token",
        ".git/config",
        ".git",
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "eval-out/full/journal.jsonl",
        "services/engine/target/x",
        "tls.key",
        "deploy/secrets/worker-token",
    ];
    for path in left_out.into_iter().filter(|p| !ignore.excludes(p)) {
        problems.push(format!("{path} is in the build context"));
    }
    // What `cargo build` in the image reads: the manifests, the lock, rustflags, the build
    // scripts, every source, proto and data file, and the CUDA build script.
    let mut kept = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".into(),
        ".cargo/config.toml".into(),
        "build.rs".into(),
        "scripts/build_cuda.sh".into(),
    ];
    for dir in ["src", "services", "proto", "data"] {
        let mut stack = vec![root.join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                kept.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    assert!(kept.len() > 100, "the walk found the sources");
    for path in kept.iter().filter(|p| ignore.excludes(p)) {
        problems.push(format!(
            "{path} is left out of the build context, which needs it"
        ));
    }
    assert_none(problems);
}

#[test]
fn the_systemd_units_run_sandboxed_as_their_own_user() {
    let dir = deploy_dir().join("systemd");
    let mut problems = Vec::new();
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".service") {
            continue;
        }
        units += 1;
        let unit = Unit::parse(&std::fs::read_to_string(&path).unwrap());
        let mut problem = |what: String| problems.push(format!("{name}: {what}"));
        match unit.get("Service", "User") {
            None | Some("" | "root" | "0") => problem("no User= other than root".into()),
            Some(_) => {}
        }
        for (key, wanted) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            if unit.get("Service", key) != Some(wanted) {
                problem(format!("{key}={wanted} missing"));
            }
        }
        let exec = unit.get("Service", "ExecStart").unwrap_or_default();
        // A worker on a GPU opens /dev/nvidia*: PrivateDevices would hide them.
        if exec.contains(" worker ") && unit.get("Service", "PrivateDevices") == Some("yes") {
            problem("PrivateDevices=yes hides the GPU from the worker".into());
        }
        // Everything the service writes lies where ProtectSystem=strict lets it write.
        let mut writable: Vec<String> = unit
            .all("Service", "StateDirectory")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|d| format!("/var/lib/{d}/"))
            .collect();
        let read_write = unit.all("Service", "ReadWritePaths");
        writable.extend(
            read_write
                .iter()
                .flat_map(|v| v.split_whitespace())
                .map(|p| format!("{}/", p.trim_start_matches('-').trim_end_matches('/'))),
        );
        let words: Vec<&str> = exec.split_whitespace().collect();
        for pair in words.windows(2).filter(|w| w[0] == "--task-journal") {
            if !writable.iter().any(|w| pair[1].starts_with(w.as_str())) {
                problem(format!(
                    "writes {} outside StateDirectory= and ReadWritePaths=",
                    pair[1]
                ));
            }
        }
    }
    assert!(units >= 2, "the worker and coordinator units");
    assert_none(problems);
}

/// Identity per role: each role's workers (and the coordinator) mount their own TLS
/// Secret and no other identity's, and log in to etcd as their own user; the auth Job
/// lets each role's user write only its own prefix; the systemd worker unit takes its
/// identity from its instance name. A pod of one role can then neither register as
/// another role, nor serve one, nor impersonate the coordinator.
#[test]
fn each_role_has_an_identity_of_its_own() {
    let manifests = manifests::load();
    let mut problems = Vec::new();
    let mut identities = Vec::new();
    for pod in pods(&manifests) {
        if pod.labels.get("app").map(String::as_str) != Some("umi") {
            continue;
        }
        let Some(role) = pod.labels.get("role") else {
            problems.push(format!("{}: no role label", pod.origin));
            continue;
        };
        identities.push(role.clone());
        let mut problem = |what: String| problems.push(format!("{} ({role}): {what}", pod.origin));
        let volumes = pod.spec.volumes.iter().flatten();
        let tls: Vec<&str> = volumes
            .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
            .filter(|name| name.starts_with("umi-tls"))
            .collect();
        let own = format!("umi-tls-{role}");
        if tls != [own.as_str()] {
            problem(format!("mounts the TLS Secrets {tls:?}, not {own} alone"));
        }
        for c in pod.containers() {
            let env: Vec<_> = c.env.iter().flatten().collect();
            let user = env
                .iter()
                .find(|e| e.name == "UMI_ETCD_USER")
                .and_then(|e| e.value.as_deref());
            if user != Some(role.as_str()) {
                problem(format!("{}: etcd user {user:?}, not {role}", c.name));
            }
            let password = env
                .iter()
                .find(|e| e.name == "UMI_ETCD_PASSWORD")
                .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.key.as_str());
            let own = format!("{role}-password");
            if password != Some(own.as_str()) {
                problem(format!("{}: etcd password {password:?}, not {own}", c.name));
            }
            if c.args
                .iter()
                .flatten()
                .any(|a| a.starts_with("--tls-domain"))
            {
                problem(format!(
                    "{}: --tls-domain would check workers against one name, not their roles'",
                    c.name
                ));
            }
        }
    }
    identities.sort();
    assert_eq!(
        identities,
        ["caller", "coordinator", "planner", "summarizer"]
    );

    let job = std::fs::read_to_string(deploy_dir().join("k8s/etcd-auth-job.yaml")).unwrap();
    let lines: Vec<&str> = job.lines().map(str::trim).collect();
    let wanted: Vec<String> = ["planner", "caller", "summarizer"]
        .iter()
        .map(|role| {
            format!(
                r#"etcdctl role grant-permission umi-{role} --prefix=true readwrite "$PREFIX/workers/{role}/" || exit 1"#
            )
        })
        .collect();
    for line in lines
        .iter()
        .filter(|l| l.starts_with("etcdctl role grant-permission"))
    {
        if line.contains(" readwrite ") && !wanted.iter().any(|w| w == line) {
            problems.push(format!(
                "auth Job: a write grant beyond one role's prefix: {line}"
            ));
        }
    }
    for (role, grant) in ["planner", "caller", "summarizer"].iter().zip(&wanted) {
        if !lines.contains(&grant.as_str()) {
            problems.push(format!(
                "auth Job: no grant of /workers/{role}/ to umi-{role}"
            ));
        }
        let user = format!(
            r#"user {role} "${}_PASSWORD" umi-{role}"#,
            role.to_uppercase()
        );
        if !lines.contains(&user.as_str()) {
            problems.push(format!("auth Job: no `{user}`"));
        }
    }

    let unit = std::fs::read_to_string(deploy_dir().join("systemd/umi-worker@.service")).unwrap();
    let unit = Unit::parse(&unit);
    let environment = unit.all("Service", "Environment").join(" ");
    for setting in [
        "UMI_TLS_CERT=/etc/umi/tls/worker-%i.pem",
        "UMI_TLS_KEY=/etc/umi/tls/worker-%i-key.pem",
        "UMI_ETCD_USER=%i",
        "UMI_ETCD_PASSWORD_FILE=/etc/umi/etcd/%i-password",
    ] {
        if !environment.split_whitespace().any(|s| s == setting) {
            problems.push(format!("umi-worker@.service: no Environment={setting}"));
        }
    }
    assert_none(problems);
}
