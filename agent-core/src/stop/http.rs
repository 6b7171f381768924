//! The HTTP stop condition's probe: one GET over plain HTTP/1.1 that must answer 2xx within
//! its timeout. No TLS, no redirects: a health endpoint answers directly.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// The status line's code, or why there was none.
pub async fn get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    match tokio::time::timeout(timeout, request(host, port, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", crate::units::human_duration(timeout))),
    }
}

async fn request(host: &str, port: u16, path: &str) -> Result<u16, String> {
    let addr =
        if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut s = TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: faultline-stop-condition\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    // The status line is all that is needed: "HTTP/1.1 200 OK".
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    status_code(&buf).ok_or_else(|| "no HTTP status line in the answer".to_string())
}

fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut w = line.split_whitespace();
    w.next().filter(|v| v.starts_with("HTTP/"))?;
    w.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[tokio::test]
    async fn a_real_server_answers_and_a_closed_port_does_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = c.read(&mut b).unwrap();
            c.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        });
        assert_eq!(get("127.0.0.1", port, "/healthz", Duration::from_secs(2)).await, Ok(204));
        server.join().unwrap();
        // The listener is gone: refused.
        assert!(get("127.0.0.1", port, "/", Duration::from_secs(2)).await.is_err());
    }
}
