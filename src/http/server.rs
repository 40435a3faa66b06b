//! The HTTP/1.1 server loop: what `axum::serve` does (a task per connection, the peer's
//! address as `ConnectInfo`, graceful shutdown), plus a limit on the time a client may take to
//! send a request's headers, which `axum::serve` does not let one set.
//!
//! Without it a client that opens connections and sends its headers a byte at a time (or
//! never) holds each one open for as long as it likes, and enough of them exhaust the
//! process's file descriptors. With it, hyper closes a connection whose request headers are
//! not complete within the limit, counted from the first read of the connection or the end of
//! the previous request; the same limit closes a keep-alive connection that stays idle that
//! long. The body's own limit is [`crate::http::extract::read_body`]'s. HTTP/1.1 only, as
//! with `axum::serve` and axum's default features: no HTTP/2 without TLS, whose preface would
//! otherwise be read before any limit applies.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the connections' in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
        let conn = connections.watch(
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// The next connection. Errors of one connection (reset before it was accepted) are
/// skipped; others (out of file descriptors) are logged and retried a second later, as
/// `axum::serve` does.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
