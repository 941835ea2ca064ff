//! How a failed command tells its user: one line of cause (each layer's context once,
//! transport internals summarised: which address, what happened), one line of remedy
//! where the cause is one a person can act on. The whole chain, with tonic's and hyper's
//! internals, is logged at debug level (`RUST_LOG=debug`).

use umi_rpc::connect_error::{summary as transport_summary, INTERNALS};

/// One layer's message, transport internals replaced by their summary (then only its
/// first line is kept: umi's own messages may list things on further lines).
fn layer(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    match INTERNALS.iter().filter_map(|p| first.find(p)).min() {
        Some(at) => {
            let head = first[..at].trim_end_matches([':', ' ', ',']);
            // Without a summary here, the layer below says what happened.
            match (head.is_empty(), transport_summary(message)) {
                (true, what) => what.unwrap_or("the connection failed").to_string(),
                (false, Some(what)) => format!("{head}: {what}"),
                (false, None) => head.to_string(),
            }
        }
        None => message.to_string(),
    }
}

/// The one-line cause: each layer once (a layer that repeats the next one's text, as
/// wrapped errors do, is cut to its own part).
pub fn cause(e: &anyhow::Error) -> String {
    cause_of(e.as_ref())
}

/// [`cause`] of any error and its sources.
pub fn cause_of(e: &(dyn std::error::Error + 'static)) -> String {
    let raw: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(|c| c.to_string())
        .collect();
    let mut parts: Vec<String> = Vec::new();
    for (i, message) in raw.iter().enumerate() {
        let mut own = message.clone();
        if let Some(next) = raw.get(i + 1) {
            if let Some(cut) = own.find(next.as_str()).filter(|&at| at > 0) {
                own.truncate(cut);
            } else if own == *next {
                continue;
            }
        }
        let own = layer(own.trim_end_matches([':', ' ']));
        if own.is_empty() || parts.last().is_some_and(|p| p.ends_with(&own)) {
            continue;
        }
        parts.push(own);
    }
    // A transport layer's summary said once, at the end.
    let mut line = parts.join(": ");
    for s in [
        "connection refused",
        "timed out",
        "host name not found",
        "TLS handshake failed",
        "could not connect",
    ] {
        let twice = format!("{s}: {s}");
        while line.contains(&twice) {
            line = line.replace(&twice, s);
        }
    }
    line
}

/// An error that knows what its user can do about it.
#[derive(Debug)]
pub struct Actionable {
    pub cause: String,
    pub remedy: String,
}

impl std::fmt::Display for Actionable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for Actionable {}

/// What a person can do about it, where the cause says.
pub fn remedy(e: &anyhow::Error) -> Option<String> {
    if let Some(a) = e.chain().find_map(|c| c.downcast_ref::<Actionable>()) {
        return Some(a.remedy.clone());
    }
    let text = cause(e);
    let lower = text.to_ascii_lowercase();
    let unreachable = [
        "connection refused",
        "timed out",
        "could not connect",
        "host name not found",
        "connection reset",
    ]
    .iter()
    .any(|s| lower.contains(s));
    if unreachable && lower.contains("etcd") {
        return Some("start etcd (or point --etcd at a running one) and check the address, the port and http vs https".into());
    }
    if unreachable {
        return Some("check that the service at that address is running and reachable, and that http/https matches its TLS setting".into());
    }
    if lower.contains("tls handshake failed") {
        return Some("check --tls-ca (the CA that signed the server's certificate) and that the address's host name is in the certificate".into());
    }
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if not_found {
        return Some("check the path; the bundled model and demo queries are found through $UMI_HOME, beside the binary, or in the checkout (see `umi run --help`)".into());
    }
    None
}

/// Prints `error: <cause>` and, where there is one, `hint: <remedy>` on stderr (the full
/// chain is logged at debug level by `main`).
pub fn print(e: &anyhow::Error) {
    eprintln!("error: {}", cause(e));
    if let Some(hint) = remedy(e) {
        eprintln!("hint: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_etcd_is_one_line_with_its_address_and_a_remedy() {
        let bottom = anyhow::anyhow!("grpc request error: code: 'The service is currently unavailable', message: \"tcp connect error\", source: tonic::transport::Error(Transport, ConnectError(ConnectError(\"tcp connect error\", 127.0.0.1:9, Os {{ code: 111, kind: ConnectionRefused, message: \"Connection refused\" }})))");
        let e = bottom
            .context("etcd at http://127.0.0.1:9: grpc request error: code: 'The service is currently unavailable'")
            .context("registering in etcd");
        let line = cause(&e);
        assert_eq!(
            line,
            "registering in etcd: etcd at http://127.0.0.1:9: connection refused"
        );
        assert!(remedy(&e).unwrap().starts_with("start etcd"));
    }

    #[test]
    fn plain_chains_keep_every_layer_once() {
        let e = anyhow::Error::new(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        ))
        .context("reading data/queries/demo.json");
        assert_eq!(
            cause(&e),
            "reading data/queries/demo.json: No such file or directory (os error 2)"
        );
        assert!(remedy(&e).unwrap().contains("UMI_HOME"));
        let e = anyhow::anyhow!("--width and --concurrency must be at least 1");
        assert_eq!(cause(&e), "--width and --concurrency must be at least 1");
        assert_eq!(remedy(&e), None);
    }
}
