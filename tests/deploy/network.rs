//! What the NetworkPolicies let through, evaluated as Kubernetes does for ingress: a pod
//! that no Ingress policy selects takes any connection; one that some policy selects takes
//! only what a rule of one of the policies selecting it allows.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::manifests::Pod;

/// Where a connection comes from.
pub enum Source<'a> {
    /// A pod in the manifests' namespace, by its labels.
    Pod(&'a BTreeMap<String, String>),
    /// Anything beyond the cluster.
    Outside,
}

/// Whether `selector` selects an object with these labels (`{}` selects everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten();
    let labels_match = by_label.clone().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown label selector operator {other}"),
        }
    });
    labels_match && expressions_match
}

/// Whether `policy` governs ingress to pods with these labels.
pub fn isolates(policy: &NetworkPolicy, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    // Without policyTypes a policy is an Ingress policy (plus Egress if it has egress rules).
    let ingress = spec
        .policy_types
        .as_ref()
        .is_none_or(|t| t.iter().any(|t| t == "Ingress"));
    let everything = LabelSelector::default();
    ingress && selects(spec.pod_selector.as_ref().unwrap_or(&everything), labels)
}

/// Whether a TCP connection from `from` to `to`'s `port` gets through `policies`.
pub fn allows(policies: &[&NetworkPolicy], from: &Source, to: &Pod, port: i32) -> bool {
    let governing: Vec<_> = policies
        .iter()
        .filter(|p| isolates(p, &to.labels))
        .collect();
    if governing.is_empty() {
        return true;
    }
    governing.iter().any(|policy| {
        let rules = policy.spec.iter().flat_map(|s| s.ingress.iter().flatten());
        rules.clone().any(|rule| {
            let peers = rule.from.as_deref().unwrap_or_default();
            let ports = rule.ports.as_deref().unwrap_or_default();
            (peers.is_empty() || peers.iter().any(|peer| peer_matches(peer, from)))
                && (ports.is_empty() || ports.iter().any(|p| port_matches(p, to, port)))
        })
    })
}

fn peer_matches(peer: &NetworkPolicyPeer, from: &Source) -> bool {
    match from {
        Source::Pod(labels) => {
            if peer.ip_block.is_some() {
                return false; // pod IPs in an ipBlock are left to the network plugin
            }
            // The manifests' namespace has no labels the checks know of: only `{}` or no
            // namespaceSelector (the policy's own namespace) surely selects it.
            let same_namespace = peer
                .namespace_selector
                .as_ref()
                .is_none_or(|s| selects(s, &BTreeMap::new()));
            let everything = LabelSelector::default();
            same_namespace && selects(peer.pod_selector.as_ref().unwrap_or(&everything), labels)
        }
        Source::Outside => peer
            .ip_block
            .as_ref()
            .is_some_and(|b| b.cidr == "0.0.0.0/0" || b.cidr == "::/0"),
    }
}

fn port_matches(rule: &NetworkPolicyPort, to: &Pod, port: i32) -> bool {
    if rule.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return false;
    }
    let Some(wanted) = &rule.port else {
        return true;
    };
    match (to.port_number(wanted), rule.end_port) {
        (Some(first), Some(last)) => (first..=last).contains(&port),
        (Some(only), None) => only == port,
        (None, _) => false,
    }
}
