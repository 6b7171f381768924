//! The metrics endpoint: a minimal HTTP/1.1 server (GET /metrics), one request per
//! connection, which is all a Prometheus scraper needs.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, info};

use super::metrics::{Metrics, own_links};
use faultline_core::engine::{Engine, ListFilter};

/// A request head larger than this is refused: scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Exporter {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub grace: Duration,
}

/// Binds now (so a taken port stops the agent at start), serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    exporter: Exporter,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("binding metrics address {addr}: {e} (see --metrics-addr, --no-metrics)")
    })?;
    let local = listener.local_addr()?;
    info!(addr = %local, "serving Prometheus metrics on http://{local}/metrics");
    let exporter = Arc::new(exporter);
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let Ok((stream, _)) = conn else { continue };
                    let ex = exporter.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &ex).await {
                            debug!(error = %e, "metrics connection");
                        }
                    });
                }
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }))
}

async fn handle(mut stream: TcpStream, ex: &Exporter) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("request head timed out"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "")
                .await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let all = ex.engine.list(&ListFilter::default()).await;
            let links = tokio::task::spawn_blocking(own_links).await.unwrap_or_default();
            let body = ex.metrics.render(&all, &links, ex.grace);
            let body = if method == "HEAD" { String::new() } else { body };
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body).await
        }
        "/" => {
            respond(&mut stream, "200 OK", "text/plain", "faultline: metrics at /metrics\n").await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
