//! Many HTTP endpoints on loopback for benchmarks: a few listeners on
//! 127.0.0.1 answering every request with `200 ok` and closing the
//! connection, as fast as a small async server can, on a runtime of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running set of listeners.
#[derive(Debug)]
pub struct HttpFarm {
    addrs: Vec<SocketAddr>,
    served: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpFarm {
    /// Starts `listeners` listeners on free loopback ports.
    pub fn start(listeners: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let served = Arc::new(AtomicU64::new(0));
        let mut addrs = Vec::new();
        for _ in 0..listeners {
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
            addrs.push(listener.local_addr()?);
            let served = served.clone();
            runtime.spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else { continue };
                    let served = served.clone();
                    tokio::spawn(async move {
                        let mut buf = [0_u8; 2048];
                        let mut seen = Vec::new();
                        // Read until the end of the request head.
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    seen.extend_from_slice(&buf[..n]);
                                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                            .await;
                        let _ = stream.shutdown().await;
                        served.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
        Ok(Self {
            addrs,
            served,
            runtime: Some(runtime),
        })
    }

    /// `count` distinct URLs spread over the listeners.
    pub fn urls(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("http://{}/health/{i}", self.addrs[i % self.addrs.len()]))
            .collect()
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpFarm {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
