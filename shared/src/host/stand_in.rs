//! A scripted HTTP/1.1 server on loopback that stands in for a metadata
//! service in unit tests (EC2's IMDSv2, DigitalOcean's, GCP's, Azure's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::identity::ImdsSettings;

/// One request as the stand-in metadata service saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

pub type Handler = dyn Fn(&Seen, usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

/// A scripted HTTP/1.1 server on loopback standing in for the metadata
/// service: `handler` gets each request and how many came before it.
pub struct StandIn {
    pub endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    pub async fn start(handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let handler: Arc<Handler> = Arc::from(handler);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0_u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut lines = text.split("\r\n");
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let seen = Seen {
                        method: first.next().unwrap_or_default().to_owned(),
                        path: first.next().unwrap_or_default().to_owned(),
                        headers: lines
                            .filter_map(|l| l.split_once(": "))
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                            .collect(),
                    };
                    let before = {
                        let mut log = log.lock().unwrap();
                        log.push(seen.clone());
                        log.len() - 1
                    };
                    let (status, headers, body) = handler(&seen, before);
                    let mut answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        let _ = write!(answer, "{k}: {v}\r\n");
                    }
                    answer.push_str("\r\n");
                    answer.push_str(&body);
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { endpoint, seen }
    }

    pub fn settings(&self) -> ImdsSettings {
        ImdsSettings::with_endpoint(&self.endpoint).unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An environment of `pairs`, as the settings' `from_lookup` reads one.
pub fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |key| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}
