//! The HTTP client of the tool backends: JSON POSTs and GETs over `reqwest` (rustls,
//! HTTP/1.1 and HTTP/2, keep-alive, the system's proxy settings), one connection pool
//! for the process. ToolBench-style servers and LLM endpoints are often behind https.

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
}

/// The largest response body read by default: tool replies are cut to 1,024 characters
/// for the models anyway, and a hostile or broken server must not fill memory.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The process's client: built once, its connections pooled and kept alive.
fn client() -> Result<&'static reqwest::Client, HttpError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // rustls needs one crypto provider for the process; another part of the
            // process may have installed it first, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .map_err(|e| error_text(&e))
        })
        .as_ref()
        .map_err(|e| HttpError::Client(e.clone()))
}

/// A POST of a JSON body, answered within `timeout` with at most `max_body` bytes.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, HttpError> {
    let mut request = client()?
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
    let mut request = client()?.get(parse_url(url)?).timeout(timeout);
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
