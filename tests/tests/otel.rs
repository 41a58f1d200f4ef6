//! The stock apps export their spans to an OpenTelemetry collector: a real OTLP/HTTP
//! receiver (hyper) gets, from each app as a process, the components' spans by name
//! with their attributes, under the configured service name.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use larder_e2e::{client, login, serial, App, AppEnv, Framework, Role, Site};
use larder_testing::{eventually, RedisServer};

/// What the collector was sent: each request's path and body.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// An OTLP/HTTP receiver on a free loopback port: it keeps every request and
/// answers 200 with an empty body (an empty `ExportTraceServiceResponse`).
async fn collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let keep = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let keep = keep.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        keep.lock().unwrap().push((path, body));
                        let mut ok = Response::new(Full::new(Bytes::new()));
                        ok.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, hyper::Error>(ok)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, received)
}

/// Whether the bodies sent to `/v1/traces` hold `text` (protobuf keeps strings as
/// their UTF-8 bytes).
fn sent(received: &Received, text: &str) -> bool {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "/v1/traces")
        .any(|(_, body)| body.windows(text.len()).any(|w| w == text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_opentelemetry_collector() {
    let _one_at_a_time = serial().await;
    for framework in Framework::BOTH {
        let redis = RedisServer::start();
        let site = Site::new();
        let (url, received) = collector().await;
        let service = format!("stock-{}", framework.name());
        let env = AppEnv::single(&redis)
            .var("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
            .var("OTEL_SERVICE_NAME", &service)
            .var("OTEL_BSP_SCHEDULE_DELAY", "100");
        let app = App::start(framework, &site, Role::Web, &env);
        let http = client();
        for _ in 0..2 {
            let got = http
                .get(app.url("/balance"))
                .header("x-tenant-id", "1")
                .send()
                .await
                .unwrap();
            assert_eq!(got.status().as_u16(), 200);
        }
        let cookie = login(&http, &app, "alice").await;
        let job = http
            .post(app.url("/reports/daily"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(job.status().as_u16(), 202);

        let expected = [
            service.as_str(),
            "cache.lookup",
            "ratelimit.check",
            "session.load",
            "jobs.enqueue",
            "send_daily_report",
            "outcome",
            "tenant",
        ];
        let all_sent = eventually(100, Duration::from_millis(100), || async {
            expected.iter().all(|text| sent(&received, text))
        })
        .await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|text| !sent(&received, text))
            .collect();
        assert!(
            all_sent,
            "{}: not exported: {missing:?}; log:\n{}",
            framework.name(),
            app.log()
        );
        assert!(
            !sent(&received, cookie.trim_start_matches("stock_session=")),
            "{}: a span carried the session id",
            framework.name()
        );
    }
}
