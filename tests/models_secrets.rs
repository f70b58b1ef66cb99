//! Credentials never show: every log line (all crates, TRACE level), error text,
//! `Debug` output and counter of a sync session — good keys, wrong secret, server
//! down — is searched for the access key id and the secret.

#[path = "support/s3.rs"]
mod support;

use edgegw::inference::sync::ModelSync;
use edgegw::inference::{shared, ModelRegistry};
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_logs_errors_debug_or_metrics() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let mut server = S3Server::start();
    let keys = Keys::good();
    let c = client(&server.endpoint(), &keys);
    let v1 = Bundle::vibration("vibration-edge", "1.0.0", 7.0);
    publish(&c, &v1).await;
    publish_index(&c, &[("vibration", &v1)]).await;

    let mut seen = Vec::<String>::new();
    let state = tempfile::tempdir().unwrap();
    let good_cfg = gateway_config(state.path(), Some(s3_config(&server.endpoint(), &keys)));
    seen.push(format!("{good_cfg:?}"));
    seen.push(format!("{c:?}"));
    let reg = shared(ModelRegistry::with_defaults().unwrap());
    let mut good = ModelSync::new(&good_cfg, reg.clone()).unwrap();
    good.load_cached();
    let report = good.sync_once().await.expect("good sync");
    seen.push(format!("{report:?}"));
    seen.push(format!("{good:?}"));
    seen.push(serde_json::to_string(&good.counters().values()).unwrap());

    let wrong = Keys::new(ACCESS_KEY, "wr0ng-" /* prefix of nothing real */);
    // Its own cache: `good` holds the one-writer lock of the first.
    let state2 = tempfile::tempdir().unwrap();
    let wrong_cfg = gateway_config(state2.path(), Some(s3_config(&server.endpoint(), &wrong)));
    let mut bad = ModelSync::new(&wrong_cfg, reg.clone()).unwrap();
    let err = bad.sync_once().await.unwrap_err();
    seen.push(err.to_string());
    seen.push(format!("{err:?}"));

    server.stop();
    let err = good.sync_once().await.unwrap_err();
    seen.push(err.to_string());
    seen.push(format!("{err:?}"));

    // `edgegw models list` output too.
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("Model sync failed"),
        "the capture works and saw the failures:\n{logs}"
    );
    seen.push(logs);
    for text in &seen {
        for secret in [SECRET_KEY, ACCESS_KEY, "wr0ng-"] {
            assert!(!text.contains(secret), "{secret:?} appears in:\n{text}");
        }
        // Signed URLs carry the signature and the key id: never printed.
        assert!(!text.contains("X-Amz-Signature"), "signed URL in:\n{text}");
    }
}
