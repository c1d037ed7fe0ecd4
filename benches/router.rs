//! Requests through the whole router in-process (no sockets): a blob HEAD and a manifest GET
//! on an open registry (no users) and on a closed one (a bearer token, basic credentials).
//! The difference between the open and closed rows is what the authorization gate costs per
//! request, measured on one thread without the noise of a load generator sharing two cores.
//! `push_small_blob` pushes a new 1 KiB blob per iteration in one `POST ?digest=` (a
//! signature's or a config's size), fsyncs and metadata writes included: its rate is the
//! small-push rate of one client.
//!
//!     cargo bench --bench router                      # criterion timings
//!     ROUTER_BENCH_CASE=head_bearer ROUTER_BENCH_REQUESTS=2000 \
//!         valgrind --tool=callgrind target/release/deps/router-…   # instruction counts
//!
//! With `ROUTER_BENCH_CASE` set the binary sends that many requests of one case (after the
//! same warm-up) and exits, so that an instruction counter sees one path only.

use std::hint::black_box;

use aerugo::accounts::AccountName;
use aerugo::config::Config;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use criterion::Criterion;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const ADMIN: &str = "bench-admin";
const PASSWORD: &str = "bench-password-1";
const REPO: &str = "bench/app";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry in a temporary directory with one small image pushed.
struct Registry {
    router: Router,
    layer: String,
    manifest: String,
    _dir: tempfile::TempDir,
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, body)
}

fn basic() -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}"));
    format!("Basic {pair}")
}

async fn push(
    router: &Router,
    credentials: Option<&str>,
    path: String,
    content_type: &str,
    body: Vec<u8>,
) {
    let mut request = Request::builder()
        .method(if path.contains("/manifests/") {
            Method::PUT
        } else {
            Method::POST
        })
        .uri(path)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(credentials) = credentials {
        request = request.header(header::AUTHORIZATION, credentials);
    }
    let (status, body) = send(router, request.body(Body::from(body)).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "push: {}",
        String::from_utf8_lossy(&body)
    );
}

impl Registry {
    async fn start(closed: bool) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.validate().expect("valid configuration");
        let state = aerugo::app::app_state(&config, "bench-local-admin".into())
            .await
            .expect("registry state");
        let credentials = closed.then(basic);
        if closed {
            let name: AccountName = ADMIN.parse().unwrap();
            aerugo::app::create_user(state.auth.store().as_ref(), &name, PASSWORD, true)
                .await
                .expect("admin");
        }
        let router = aerugo::api::router(state);
        let layer = vec![7u8; 4096];
        let config_blob =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let (layer_digest, config_digest) = (digest_of(&layer), digest_of(&config_blob));
        for (blob, digest) in [
            (layer, &layer_digest),
            (config_blob.clone(), &config_digest),
        ] {
            let path = format!("/v2/{REPO}/blobs/uploads/?digest={digest}");
            push(
                &router,
                credentials.as_deref(),
                path,
                "application/octet-stream",
                blob,
            )
            .await;
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": 4096}],
        })
        .to_string();
        let manifest_digest = digest_of(manifest.as_bytes());
        let path = format!("/v2/{REPO}/manifests/latest");
        push(
            &router,
            credentials.as_deref(),
            path,
            MANIFEST_TYPE,
            manifest.into_bytes(),
        )
        .await;
        Registry {
            router,
            layer: layer_digest,
            manifest: manifest_digest,
            _dir: dir,
        }
    }

    async fn bearer_token(&self) -> String {
        let request = Request::get(format!(
            "/auth/token?service=aerugo&scope=repository:{REPO}:pull"
        ))
        .header(header::AUTHORIZATION, basic())
        .body(Body::empty())
        .unwrap();
        let (status, body) = send(&self.router, request).await;
        assert_eq!(status, StatusCode::OK);
        let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
        format!("Bearer {}", token["token"].as_str().unwrap())
    }
}

/// One benchmarked request: its name, the registry it goes to and what it sends.
struct Case {
    name: &'static str,
    closed: bool,
    method: Method,
    path: String,
    credentials: Option<String>,
}

impl Case {
    fn request(&self) -> Request<Body> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(header::ACCEPT, MANIFEST_TYPE);
        if let Some(credentials) = &self.credentials {
            request = request.header(header::AUTHORIZATION, credentials);
        }
        request.body(Body::empty()).unwrap()
    }

    async fn run(&self, router: &Router) {
        let (status, _) = send(router, self.request()).await;
        assert_eq!(status, StatusCode::OK, "{}", self.name);
    }
}

fn cases(open: &Registry, closed: &Registry, bearer: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for (kind, method, path) in [
        (
            "head",
            Method::HEAD,
            format!("/v2/{REPO}/blobs/{}", open.layer),
        ),
        (
            "manifest",
            Method::GET,
            format!("/v2/{REPO}/manifests/{}", open.manifest),
        ),
    ] {
        assert_eq!(
            (&open.layer, &open.manifest),
            (&closed.layer, &closed.manifest)
        );
        for (suffix, closed, credentials) in [
            ("open", false, None),
            ("bearer", true, Some(bearer.to_owned())),
            ("basic", true, Some(basic())),
        ] {
            cases.push(Case {
                name: Box::leak(format!("{kind}_{suffix}").into_boxed_str()),
                closed,
                method: method.clone(),
                path: path.clone(),
                credentials,
            });
        }
    }
    cases
}

/// Requests each case sends before it is measured: the caches it relies on are warm.
const WARM_UP: usize = 100;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (open, closed) =
        runtime.block_on(async { (Registry::start(false).await, Registry::start(true).await) });
    let bearer = runtime.block_on(closed.bearer_token());
    let cases = cases(&open, &closed, &bearer);
    let router_of = |case: &Case| {
        if case.closed {
            &closed.router
        } else {
            &open.router
        }
    };
    if let Ok(only) = std::env::var("ROUTER_BENCH_CASE") {
        let case = cases.iter().find(|c| c.name == only).unwrap_or_else(|| {
            let names: Vec<_> = cases.iter().map(|c| c.name).collect();
            panic!("ROUTER_BENCH_CASE={only}: one of {names:?}")
        });
        let requests = std::env::var("ROUTER_BENCH_REQUESTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        runtime.block_on(async {
            for _ in 0..WARM_UP + requests {
                case.run(router_of(case)).await;
            }
        });
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    for case in &cases {
        let router = router_of(case);
        runtime.block_on(async {
            for _ in 0..WARM_UP {
                case.run(router).await;
            }
        });
        criterion.bench_function(case.name, |b| {
            b.iter(|| runtime.block_on(black_box(case).run(router)))
        });
    }
    bench_small_pushes(&mut criterion, &runtime, &open.router);
    criterion.final_summary();
}

/// A new blob each iteration (the counter makes its bytes, so its digest, unique).
fn bench_small_pushes(
    criterion: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    router: &Router,
) {
    let mut pushed: u64 = 0;
    criterion.bench_function("push_small_blob", |b| {
        b.iter(|| {
            pushed += 1;
            let mut blob = vec![0u8; 1024];
            blob[..8].copy_from_slice(&pushed.to_le_bytes());
            let path = format!("/v2/{REPO}/blobs/uploads/?digest={}", digest_of(&blob));
            runtime.block_on(push(router, None, path, "application/octet-stream", blob))
        })
    });
}
