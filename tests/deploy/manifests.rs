//! The Kubernetes manifests in deploy/k8s, read as `kubectl apply -k deploy/k8s` reads them
//! and parsed strictly into k8s-openapi's types. serde alone would drop a field the type
//! does not know (k8s-openapi's types ignore unknown fields), so every document is also
//! serialized back and compared with what the file says: a misspelt or misplaced field
//! fails instead of silently doing nothing on a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The repository's deploy/ folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The kinds of object the manifests may hold; any other kind fails the parse. (Held
/// unboxed: a dozen of them, read once per test.)
#[allow(clippy::large_enum_variant)]
pub enum Object {
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    Job(Job),
    NetworkPolicy(NetworkPolicy),
}

/// One document of one manifest file.
pub struct Manifest {
    /// `file.yaml#n` (n counts documents from 1), for failure messages.
    pub origin: String,
    pub object: Object,
}

/// A pod template of a workload, with what the checks need to know about it.
pub struct Pod<'a> {
    /// `Kind/name` of the workload.
    pub origin: String,
    pub labels: BTreeMap<String, String>,
    pub spec: &'a PodSpec,
    /// A Job's pod runs to completion: nothing routes to it, so it has no probes; the
    /// Job's activeDeadlineSeconds ends it if it hangs. None for other workloads.
    pub deadline: Option<Option<i64>>,
    /// A StatefulSet's volume claim templates, mounted like the pod's own volumes.
    pub claim_templates: Vec<String>,
}

impl Pod<'_> {
    /// Its init containers and containers.
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        let init = self.spec.init_containers.iter().flatten();
        init.chain(self.spec.containers.iter())
    }

    /// The container port named or numbered `port` (as a probe or policy gives it).
    pub fn port_number(
        &self,
        port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ) -> Option<i32> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let ports = self.containers().flat_map(|c| c.ports.iter().flatten());
        match port {
            IntOrString::Int(n) => ports.map(|p| p.container_port).find(|p| p == n),
            IntOrString::String(name) => ports
                .filter(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .next(),
        }
    }
}

impl Manifest {
    /// The workload's pod template, if it is a workload.
    pub fn pod(&self) -> Option<Pod<'_>> {
        let (kind, meta, template, claims, deadline) = match &self.object {
            Object::Deployment(d) => {
                let spec = &d.spec;
                ("Deployment", &d.metadata, &spec.template, None, None)
            }
            Object::StatefulSet(s) => {
                let spec = &s.spec;
                let claims = spec.volume_claim_templates.as_ref();
                ("StatefulSet", &s.metadata, &spec.template, claims, None)
            }
            Object::Job(j) => {
                let spec = j.spec.as_ref()?;
                let deadline = Some(spec.active_deadline_seconds);
                ("Job", &j.metadata, &spec.template, None, deadline)
            }
            Object::Service(_) | Object::NetworkPolicy(_) => return None,
        };
        let name = meta.name.clone().unwrap_or_default();
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        Some(Pod {
            origin: format!("{kind}/{name} ({})", self.origin),
            labels: labels.unwrap_or_default(),
            spec: template.spec.as_ref()?,
            deadline,
            claim_templates: claims
                .into_iter()
                .flatten()
                .filter_map(|c| c.metadata.name.clone())
                .collect(),
        })
    }
}

/// The files kustomization.yaml lists, checked to be every other .yaml file in
/// deploy/k8s (a manifest it leaves out is never applied, one it names must exist).
pub fn resources() -> Vec<String> {
    let dir = deploy_dir().join("k8s");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Kustomization {
        resources: Vec<String>,
    }
    let k: Kustomization = serde_norway::from_str(&text).expect("kustomization.yaml");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = k.resources.clone();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml's resources against deploy/k8s/*.yaml"
    );
    k.resources
}

/// Every document of every file kustomization.yaml lists, parsed strictly.
pub fn load() -> Vec<Manifest> {
    let dir = deploy_dir().join("k8s");
    let mut manifests = Vec::new();
    for file in resources() {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let origin = format!("{file}#{}", i + 1);
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}"));
            if value.is_null() {
                continue; // an empty document (`---` at the end): kubectl skips it too
            }
            let object = typed(&origin, &value);
            manifests.push(Manifest { origin, object });
        }
    }
    manifests
}

fn typed(origin: &str, value: &Value) -> Object {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    match (api_version, value["kind"].as_str().unwrap_or_default()) {
        ("v1", "Service") => Object::Service(strict(origin, value)),
        ("apps/v1", "Deployment") => Object::Deployment(strict(origin, value)),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(strict(origin, value)),
        ("batch/v1", "Job") => Object::Job(strict(origin, value)),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(strict(origin, value)),
        (api, kind) => panic!("{origin}: no check knows {api} {kind}: add it to manifests.rs"),
    }
}

/// `value` as a `T`, failing if any part of it does not survive the round trip. What the
/// type adds on the way back is not in the file and changes nothing (k8s-openapi writes
/// `apiVersion` and `kind` into a StatefulSet's volume claim templates, for one).
pub fn strict<T: DeserializeOwned + Serialize>(origin: &str, value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(path) = first_loss(value, &back, String::new()) {
        panic!(
            "{origin}: `{path}` does not survive parsing as {}: a field the type does not know \
             (misspelt or misplaced), or a value it rewrites",
            std::any::type_name::<T>()
        );
    }
    object
}

/// The path of the first part of `original` that `back` lacks or holds differently. A
/// number that comes back as its own text is kept: a quantity (`nvidia.com/gpu: 1`) is
/// written as a string, and the API server reads either.
pub fn first_loss(original: &Value, back: &Value, path: String) -> Option<String> {
    match (original, back) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(key, value)| {
            let here = format!("{path}.{key}");
            match y.get(key) {
                Some(kept) => first_loss(value, kept, here),
                None => Some(here),
            }
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| first_loss(a, b, format!("{path}[{i}]"))),
        (Value::Number(n), Value::String(text)) if n.to_string() == *text => None,
        _ => (original != back).then_some(path),
    }
}
