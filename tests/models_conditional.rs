//! The index GET is conditional: a peer that implements `If-None-Match` the way AWS
//! S3 and MinIO do (s3s-fs, used by the other tests, ignores the header) answers
//! `304`, and the sync stops after that one request. A minimal HTTP/1.1 peer on
//! 127.0.0.1 records every request line and header block.

#[path = "support/s3.rs"]
mod support;

use edgegw::inference::sync::ModelSync;
use edgegw::inference::{shared, ModelRegistry};
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ETAG: &str = "\"3f1c0ffee\"";

#[tokio::test]
async fn unchanged_index_costs_one_request_answered_304() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let index = br#"{"format":1,"models":{}}"#;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        buf.drain(..end + 4);
                        log.lock().unwrap().push(head.clone());
                        let resp = if head.contains(&format!("if-none-match: {}", ETAG)) {
                            format!("HTTP/1.1 304 Not Modified\r\nETag: {ETAG}\r\ncontent-length: 0\r\n\r\n").into_bytes()
                        } else {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nETag: {ETAG}\r\ncontent-length: {}\r\n\r\n",
                                index.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(index);
                            r
                        };
                        if s.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });

    let state = tempfile::tempdir().unwrap();
    let keys = Keys::good();
    let cfg = gateway_config(
        state.path(),
        Some(s3_config(&format!("http://127.0.0.1:{port}"), &keys)),
    );
    let reg = shared(ModelRegistry::with_defaults().unwrap());
    let mut sync = ModelSync::new(&cfg, reg).unwrap();
    sync.load_cached();
    let first = sync.sync_once().await.unwrap();
    assert!(!first.not_modified);
    let second = sync.sync_once().await.unwrap();
    assert!(second.not_modified, "{second:?}");
    // A restart remembers the ETag (cache state) and asks conditionally at once.
    drop(sync);
    let reg2 = shared(ModelRegistry::with_defaults().unwrap());
    let mut again = ModelSync::new(&cfg, reg2).unwrap();
    again.load_cached();
    assert!(again.sync_once().await.unwrap().not_modified);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one request per sync: {seen:#?}");
    for head in &seen {
        assert!(head.starts_with("get /models/edge/index.json?"), "{head}");
        assert!(head.contains("x-amz-signature="), "signed: {head}");
    }
    assert!(!seen[0].contains("if-none-match"));
    assert!(seen[1].contains(&format!("if-none-match: {ETAG}")));
    assert!(seen[2].contains(&format!("if-none-match: {ETAG}")));
}
