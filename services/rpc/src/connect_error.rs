//! What a failed connection's text says happened. tonic and hyper report a refused or
//! timed-out connect as nested "transport error"s whose only useful part is the OS
//! error at the bottom; these read it, for clients deciding whether to wait (a peer not
//! listening yet) and for one-line error reports.

/// Markers of tonic's and hyper's transport internals in an error's text.
pub const INTERNALS: [&str; 5] = [
    "grpc request error",
    "transport error",
    "source: tonic",
    "error trying to connect",
    "tcp connect error",
];

/// What went wrong at the bottom of a transport error, in words, from its text.
pub fn summary(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let summary = if m.contains("connection refused") {
        "connection refused"
    } else if m.contains("timed out") || m.contains("deadline") || m.contains("timeout") {
        "timed out"
    } else if m.contains("dns error")
        || m.contains("failed to lookup")
        || m.contains("name or service not known")
    {
        "host name not found"
    } else if m.contains("certificate") || m.contains("tls") || m.contains("handshake") {
        "TLS handshake failed"
    } else if m.contains("connection reset") || m.contains("broken pipe") {
        "connection reset"
    } else if m.contains("tcp connect error") || m.contains("transport error") {
        "could not connect"
    } else {
        return None;
    };
    Some(summary)
}

/// Whether the error says the peer is not listening (yet), which waiting may cure, as
/// opposed to a wrong host name or TLS setting. Each layer of the chain is read as a
/// report would show it: a layer holding transport internals by its [`summary`], any
/// other by its own first line.
pub fn not_listening(e: &(dyn std::error::Error + 'static)) -> bool {
    let waitable = ["connection refused", "timed out", "connection reset"];
    std::iter::successors(Some(e), |e| e.source()).any(|layer| {
        let message = layer.to_string();
        let first = message.lines().next().unwrap_or_default();
        let shown = if INTERNALS.iter().any(|p| first.contains(p)) {
            summary(&message).unwrap_or_default()
        } else {
            message.as_str()
        };
        waitable.iter().any(|w| shown.contains(w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to the coordinator at https://127.0.0.1:9")]
    struct Outer(#[source] crate::security::SecurityError);

    fn connect_error(bottom: &str) -> Outer {
        Outer(crate::security::SecurityError::Config(format!(
            "connecting to https://127.0.0.1:9: transport error: tcp connect error: {bottom}"
        )))
    }

    #[test]
    fn a_refused_or_timed_out_peer_is_waited_for_a_wrong_name_or_tls_is_not() {
        assert!(not_listening(&connect_error(
            "Connection refused (os error 111)"
        )));
        assert!(not_listening(&connect_error("connection timed out")));
        assert!(!not_listening(&connect_error(
            "dns error: failed to lookup address information"
        )));
        assert!(!not_listening(&connect_error(
            "invalid peer certificate: UnknownIssuer"
        )));
        assert_eq!(summary("Tcp connect error"), Some("could not connect"));
        assert_eq!(summary("all fine"), None);
    }
}
