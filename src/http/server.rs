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
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the connections' in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // The signal is the receiver going away; every connection watches the sender.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    // Each connection holds a receiver; the loop's end waits until none is left.
    let (close_tx, close_rx) = watch::channel(());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = signal_tx.closed() => break,
        };
        let service = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = signal_tx.closed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
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
