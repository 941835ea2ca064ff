//! Plain HTTP/1 listeners (a worker's OpenAI-compatible endpoints, every process's
//! Prometheus endpoint) with limits of their own, as gRPC's listeners have theirs
//! (`serve.rs`): a client must send a request's headers within `header_read_timeout`
//! (also while a kept-alive connection waits for its next request), so connections opened
//! and left silent, or fed a header a byte at a time (slowloris), are closed; and at most
//! `max_connections` are open at once (one more is closed as soon as it is accepted).
//! A response may take as long as it takes (a streamed completion): only the client's
//! side of a request is timed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};

static REFUSED_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// What one client can hold on an HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive within this, counted from when the server starts
    /// waiting for them (a new connection, or a kept-alive one after its last response).
    /// A client on a LAN sends them in milliseconds; a proxy forwards them at once.
    pub header_read_timeout: Duration,
    /// Connections open at once. A scraper holds one; the OpenAI endpoints' clients
    /// (the judge, the simulator, `openai` scripts) a few each.
    pub max_connections: usize,
    /// Header lines in one request, far above what clients send (about 10).
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_headers: 64,
        }
    }
}

/// Serves `service` (a tower service, e.g. an axum `Router`) over HTTP/1 on `listener`
/// within `limits` until `shutdown` completes; then stops accepting and waits for the
/// requests in flight to finish.
pub async fn serve_http<S, B>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("umi_http_connections_refused_total").increment(1);
            if let Some(held_back) = REFUSED_LOG.admit() {
                tracing::warn!(
                    peer = ?stream.peer_addr().ok(),
                    held_back,
                    "closed an HTTP connection: the listener holds as many as it admits"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// A service answering `GET <path>` with the text `render` makes at that moment (a
/// Prometheus scrape page), and 404 or 405 to anything else.
#[derive(Clone)]
pub struct TextPage {
    path: &'static str,
    content_type: &'static str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl TextPage {
    pub fn new(
        path: &'static str,
        content_type: &'static str,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        TextPage {
            path,
            content_type,
            render: Arc::new(render),
        }
    }
}

impl tower_service::Service<Request<Incoming>> for TextPage {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let (status, content_type, body) = if request.uri().path() != self.path {
            (404, "text/plain", "not found\n".to_string())
        } else if request.method() != hyper::Method::GET {
            (405, "text/plain", "GET only\n".to_string())
        } else {
            (200, self.content_type, (self.render)())
        };
        let mut response = Response::new(body);
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        std::future::ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Answers every request with "ok".
    #[derive(Clone)]
    struct Ok200;

    impl tower_service::Service<Request<Incoming>> for Ok200 {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Incoming>) -> Self::Future {
            std::future::ready(Ok(Response::new("ok".to_string())))
        }
    }

    async fn listening(limits: HttpLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_http(listener, Ok200, limits, std::future::pending()));
        addr
    }

    /// Reads until the server closes the connection (or `within` passes: `None`).
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
        read.ok()
            .map(|_| String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn a_header_sent_a_byte_at_a_time_is_cut_off_and_others_are_served() {
        let addr = listening(HttpLimits {
            header_read_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let trickle = async {
            for byte in
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            {
                if slow.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Meanwhile a normal client is answered.
        let normal = async {
            let mut ok = TcpStream::connect(addr).await.unwrap();
            ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            read_to_close(&mut ok, Duration::from_secs(5)).await
        };
        let ((), answer) = tokio::join!(trickle, normal);
        assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
        let closed = read_to_close(&mut slow, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "the slow client was never cut off");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cut off only after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let addr = listening(HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(read_to_close(&mut silent, Duration::from_secs(5))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn a_text_page_answers_its_path_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page = TextPage::new("/metrics", "text/plain; version=0.0.4", || {
            "umi_up 1\n".to_string()
        });
        tokio::spawn(serve_http(
            listener,
            page,
            HttpLimits::default(),
            std::future::pending(),
        ));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            read_to_close(&mut s, Duration::from_secs(5)).await.unwrap()
        };
        let page = get("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains("version=0.0.4") && page.ends_with("umi_up 1\n"),
            "{page}"
        );
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once() {
        let addr = listening(HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        })
        .await;
        let _held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = read_to_close(&mut extra, Duration::from_secs(2)).await;
        assert_eq!(
            answer.as_deref(),
            Some(""),
            "the extra connection was served"
        );
    }
}
