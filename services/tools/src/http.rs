//! The HTTP client of the tool backends: JSON POSTs and GETs over `reqwest` (rustls,
//! HTTP/1.1 and HTTP/2, keep-alive, the system's proxy settings), one connection pool
//! for the process. ToolBench-style servers and LLM endpoints are often behind https.
//!
//! Requests carrying a credential (an `Authorization` or `toolbench_key` header) follow
//! redirects only within their origin: reqwest strips `Authorization` on a redirect to
//! another host but not custom headers such as `toolbench_key`, and a 307/308 resends
//! the body (where ToolBench's key also goes). [`check_clear_text`] is what callers
//! run on a URL before giving it a key: no key in clear beyond loopback.

use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("request time out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("the request cannot be sent: {0}")]
    Invalid(String),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("the HTTP client could not start: {0}")]
    Client(String),
    #[error("the response is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Redirect(String),
    #[error("refusing to send a key in clear to {url}: use https://, or a server on this machine (127.0.0.1, localhost)")]
    ClearText { url: String },
}

/// Headers that carry a credential (compared without case).
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "toolbench_key"];

/// Refuses `url` as a destination for a key when it is plain `http://` to a host other
/// than this machine: the key would cross the network readable by anyone on the path.
pub fn check_clear_text(url: &str) -> Result<(), HttpError> {
    let parsed = parse_url(url)?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !local {
        return Err(HttpError::ClearText {
            url: url.to_string(),
        });
    }
    Ok(())
}

/// The largest response body read by default: tool replies are cut to 1,024 characters
/// for the models anyway, and a hostile or broken server must not fill memory.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The process's clients, built once, their connections pooled and kept alive: one
/// with reqwest's redirects, and one for requests with credentials that follows
/// redirects only within the request's origin.
fn client(headers: &[(&str, &str)]) -> Result<&'static reqwest::Client, HttpError> {
    static PLAIN: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static KEYED: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let keyed = headers.iter().any(|(name, _)| {
        CREDENTIAL_HEADERS
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
    });
    let (cell, policy): (_, fn() -> reqwest::redirect::Policy) = if keyed {
        (&KEYED, same_origin_redirects)
    } else {
        (&PLAIN, reqwest::redirect::Policy::default)
    };
    cell.get_or_init(|| {
        // rustls needs one crypto provider for the process; another part of the
        // process may have installed it first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(policy())
            .build()
            .map_err(|e| error_text(&e))
    })
    .as_ref()
    .map_err(|e| HttpError::Client(e.clone()))
}

/// Follows up to 10 redirects that keep the first request's scheme, host and port;
/// refuses one elsewhere, naming it, so that no credential travels with it.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else if first.is_some_and(|o| o != attempt.url().origin()) {
            let text = format!(
                "refused a redirect to {}: the request carries a key, which goes to its own server only",
                attempt.url()
            );
            attempt.error(text)
        } else {
            attempt.follow()
        }
    })
}

/// A POST of a JSON body, answered within `timeout` with at most `max_body` bytes.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, HttpError> {
    let mut request = client(headers)?
        .post(parse_url(url)?)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .timeout(timeout);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request, max_body).await
}

/// A GET (e.g. a health endpoint), answered within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<Response, HttpError> {
    get_with_headers(url, &[], timeout).await
}

/// A GET with request headers (e.g. an API key).
pub async fn get_with_headers(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut request = client(headers)?.get(parse_url(url)?).timeout(timeout);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request, DEFAULT_MAX_BODY).await
}

/// Only http and https URLs with a host are taken.
fn parse_url(url: &str) -> Result<reqwest::Url, HttpError> {
    let bad = |message: &str| HttpError::Url {
        url: url.to_string(),
        message: message.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// are supported"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(parsed)
}

/// Sends, then reads the body chunk by chunk, refusing it past `max_body` bytes (a
/// declared length is checked before reading).
async fn send(request: reqwest::RequestBuilder, max_body: usize) -> Result<Response, HttpError> {
    let mut response = request.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let too_large = HttpError::TooLarge { limit: max_body };
    if response
        .content_length()
        .is_some_and(|n| n > max_body as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            HttpError::Timeout
        } else {
            HttpError::Malformed(error_text(&e))
        }
    })? {
        if body.len() + chunk.len() > max_body {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, body })
}

fn classify(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout
    } else if e.is_redirect() {
        HttpError::Redirect(error_text(&e))
    } else if e.is_builder() {
        // A header or URL the client cannot send: the request, not the connection.
        HttpError::Invalid(error_text(&e))
    } else {
        HttpError::Connect(error_text(&e))
    }
}

/// An error with its causes (`reqwest` puts the useful part, e.g. "Connection
/// refused", in the source chain).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("http://8.218.239.54:8080/rapidapi").is_ok());
        assert!(parse_url("https://example.org/rapidapi").is_ok());
        let err = parse_url("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("ftp://x/y") && err.contains("http"), "{err}");
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn keys_go_in_clear_only_to_this_machine() {
        for ok in [
            "https://example.org/rapidapi",
            "http://127.0.0.1:8080/rapidapi",
            "http://localhost:8080/v1",
            "http://[::1]:8080/v1",
        ] {
            assert!(check_clear_text(ok).is_ok(), "{ok}");
        }
        for clear in [
            "http://8.130.32.149:8080/rapidapi",
            "http://llm.internal/v1",
        ] {
            let e = check_clear_text(clear).unwrap_err().to_string();
            assert!(e.contains(clear) && e.contains("https://"), "{e}");
        }
    }

    /// A server that answers every request with `reply` and sends each request's head
    /// (lowercased) and body down `seen`.
    async fn recording_server(
        listener: tokio::net::TcpListener,
        reply: String,
        seen: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 16 << 10];
            let mut got = Vec::new();
            // Headers then the declared body (the test bodies are tiny).
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = seen.send(String::from_utf8_lossy(&got).to_lowercase());
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    }

    #[tokio::test]
    async fn a_key_does_not_follow_a_redirect_to_another_host() {
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_port = other.local_addr().unwrap().port();
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        tokio::spawn(recording_server(other, ok.into(), seen_tx.clone()));
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/rapidapi", first.local_addr().unwrap());
        // The same machine under another name, so another origin.
        let moved = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{other_port}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        tokio::spawn(recording_server(first, moved, seen_tx));

        let secret = "k3y-0123456789abcdef";
        let reply = post_json(
            &url,
            &[("toolbench_key", secret)],
            format!("{{\"toolbench_key\":\"{secret}\"}}").as_bytes(),
            Duration::from_secs(5),
            DEFAULT_MAX_BODY,
        )
        .await;
        let e = reply.err().expect("the redirect was followed").to_string();
        assert!(e.contains(&format!("localhost:{other_port}")), "{e}");
        // Only the first server heard from us.
        let heard = seen.recv().await.unwrap();
        assert!(heard.contains("/rapidapi") && heard.contains(secret));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(seen.try_recv().is_err(), "the other host got a request");

        // Without a key, redirects are followed as before.
        let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_port = other.local_addr().unwrap().port();
        tokio::spawn(recording_server(other, ok.into(), tx.clone()));
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", first.local_addr().unwrap());
        let moved = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://localhost:{other_port}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        tokio::spawn(recording_server(first, moved, tx));
        let reply = get(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply.status, 200);
        let _ = seen.recv().await;
        assert!(seen.recv().await.unwrap().starts_with("get / "));
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_silent_server_are_errors_not_hangs() {
        // A port nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let refused = get(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        assert!(
            matches!(refused, Err(HttpError::Connect(_))),
            "{:?}",
            refused.err()
        );

        // A server that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let (_socket, _) = silent.accept().await.unwrap();
            std::future::pending::<()>().await
        });
        let started = std::time::Instant::now();
        let timed_out = post_json(
            &url,
            &[],
            b"{}",
            Duration::from_millis(300),
            DEFAULT_MAX_BODY,
        )
        .await;
        assert!(
            matches!(timed_out, Err(HttpError::Timeout)),
            "{:?}",
            timed_out.err()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A server answering with a body past the limit, declared or streamed (chunked).
    async fn serve_large(declared: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", server.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let chunk = vec![b'x'; 64 << 10];
            if declared {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
            } else {
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
            }
            // Far more than the limit, unless the client stops reading.
            for _ in 0..1000 {
                let framed = if declared {
                    chunk.clone()
                } else {
                    [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk.clone(),
                        b"\r\n".to_vec(),
                    ]
                    .concat()
                };
                if socket.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn a_response_past_the_size_limit_is_refused_not_buffered() {
        for declared in [true, false] {
            let url = serve_large(declared).await;
            let reply = post_json(&url, &[], b"{}", Duration::from_secs(10), 1 << 20).await;
            assert!(
                matches!(reply, Err(HttpError::TooLarge { limit }) if limit == 1 << 20),
                "declared {declared}: {:?}",
                reply.err()
            );
        }
    }
}
