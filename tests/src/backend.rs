//! Tiny HTTP servers on loopback, for checks to probe and proxies to send
//! to: each answers every request (one read of its head) with what a
//! function of the request says, then closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A tiny HTTP server, stopped when dropped. Stop it and start another on
/// the same address to flip a check.
pub struct TinyHttp {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TinyHttp {
    /// Serves `status` on `addr` (use [`crate::unique_loopback`] and any
    /// port), with the body `status <status>`.
    pub fn start(addr: SocketAddr, status: u16) -> TinyHttp {
        TinyHttp::serve(addr, move |_| {
            (format!("{status} X"), format!("status {status}"))
        })
    }

    /// Serves on `addr` (port 0 for any) what `respond` makes of each
    /// request's head: a status line's code and reason (`200 OK`) and the
    /// body.
    pub fn serve(
        addr: SocketAddr,
        respond: impl Fn(&str) -> (String, String) + Send + 'static,
    ) -> TinyHttp {
        let listener = TcpListener::bind(addr).expect("bind tiny http");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buffer = [0u8; 4096];
                let length = stream.read(&mut buffer).unwrap_or(0);
                let (status, body) = respond(&String::from_utf8_lossy(&buffer[..length]));
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        TinyHttp {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop();
    }
}
