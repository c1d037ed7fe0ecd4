//! No secret is ever printed. A whole session — a core on the production backends and an edge
//! gateway in front of it, every secret read from a `*_FILE` variable, both logging at debug
//! level — signs in right and wrong, issues and refreshes tokens, pushes, creates a robot and
//! pulls with it, pulls through the gateway and checks its configuration; then every line the
//! processes and `admin check-config` printed is searched for each secret.

use std::path::Path;
use std::process::Command;

use aerugo::auth::secret::random_token;
use aerugo::testkit;

use crate::support::image::TestImage;
use crate::support::process::{AERUGO, CoreProcess, free_addr, http_client, read_log};
use crate::support::process::{spawn_logged, terminate, wait_until_ready};
use crate::support::seed::Seeder;
use crate::support::stack::{Stack, run_sql};

const ADMIN: &str = "admin";

/// A secret the session uses, and the name it is searched under when found.
struct Secret {
    what: &'static str,
    value: String,
}

/// Writes `value` to a file in `dir` (with the line break an `echo` would add) and returns the
/// `<variable>_FILE` assignment naming it.
fn secret_file(dir: &Path, variable: &'static str, value: &str) -> (String, String) {
    let path = dir.join(variable);
    std::fs::write(&path, format!("{value}\n")).expect("writing a secret file");
    (format!("{variable}_FILE"), path.display().to_string())
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_printed_during_a_whole_session_carries_a_secret() {
    let Some(stack) = Stack::create().await else {
        eprintln!("skipping: PostgreSQL, Redis or the S3 server is not running");
        return;
    };
    // The test stack's PostgreSQL password is its user name; this role's is a secret.
    let role = testkit::unique_name("aerugo_secret_");
    let database_password = random_token();
    run_sql(
        &stack.postgres_url,
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{database_password}'"),
    )
    .await;
    let mut database_url = reqwest::Url::parse(&stack.database_url()).unwrap();
    database_url.set_username(&role).unwrap();
    database_url.set_password(Some(&database_password)).unwrap();
    let admin_password = random_token();
    let jwt_secret = random_token() + &random_token();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let files = [
        ("DATABASE_URL", database_url.to_string()),
        ("REDIS_URL", stack.redis_url.clone()),
        ("JWT_SECRET", jwt_secret.clone()),
        ("S3_ACCESS_KEY", stack.s3.access_key.clone()),
        ("S3_SECRET_KEY", stack.s3.secret_key.clone()),
        (
            "AERUGO__AUTH__BOOTSTRAP_ADMIN_PASSWORD",
            admin_password.clone(),
        ),
    ];
    let mut env: Vec<(String, String)> = files
        .iter()
        .map(|(variable, value)| secret_file(dir, variable, value))
        .collect();
    env.extend(
        [
            ("S3_ENDPOINT", stack.s3.endpoint.clone()),
            ("S3_BUCKET", stack.bucket.clone()),
            ("S3_REGION", stack.s3.region.clone()),
            (
                "AERUGO__CACHE__REDIS_KEY_PREFIX",
                stack.redis_prefix.clone(),
            ),
            ("AERUGO__AUTH__BOOTSTRAP_ADMIN", ADMIN.to_owned()),
            ("AERUGO__SERVER__LOG_LEVEL", "debug".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    let env_refs: Vec<(&str, String)> = env.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let core =
        CoreProcess::start_with_env(tempfile::tempdir().unwrap(), &dir.join("data"), &env_refs)
            .await;

    let mut secrets = vec![
        Secret {
            what: "the database password",
            value: database_password,
        },
        Secret {
            what: "the S3 secret key",
            value: stack.s3.secret_key.clone(),
        },
        Secret {
            what: "the JWT secret",
            value: jwt_secret,
        },
        Secret {
            what: "the admin's password",
            value: admin_password.clone(),
        },
    ];
    secrets.extend(session(&core, &admin_password).await);

    let check = Command::new(AERUGO)
        .args(["admin", "check-config"])
        .envs(env.iter().cloned())
        .output()
        .expect("running admin check-config");
    let check_output = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "check-config: {check_output}");
    assert!(check_output.contains("<redacted>"), "{check_output}");

    let (edge_log, edge_secrets) = through_a_gateway(&core, dir, &admin_password).await;
    secrets.extend(edge_secrets);
    let core_log = core.log();
    assert!(
        core_log.lines().count() > 50 && core_log.contains("DEBUG"),
        "the core logged at debug level: {core_log}"
    );
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{admin_password}"))
    };
    secrets.push(Secret {
        what: "the admin's basic credentials",
        value: basic,
    });
    for (name, printed) in [
        ("core log", &core_log),
        ("edge log", &edge_log),
        ("check-config", &check_output),
    ] {
        for secret in &secrets {
            assert!(
                !printed.contains(&secret.value),
                "{} appears in the {name}:\n{}",
                secret.what,
                printed
                    .lines()
                    .filter(|line| line.contains(&secret.value))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    drop(core);
    drop(stack);
    run_sql(
        &testkit::postgres_url().unwrap(),
        &format!("DROP ROLE IF EXISTS {role}"),
    )
    .await;
}

/// Sign-ins right and wrong, token grants, a push, a robot and its pull, a logout; returns the
/// secrets the session was given (tokens, the robot's secret).
async fn session(core: &CoreProcess, admin_password: &str) -> Vec<Secret> {
    let client = http_client();
    let wrong = client
        .get(core.url("/auth/token?service=aerugo"))
        .basic_auth(ADMIN, Some("not-the-password-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let granted: serde_json::Value = client
        .post(core.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("service", "aerugo"),
            ("client_id", "secrets-test"),
            ("access_type", "offline"),
            ("username", ADMIN),
            ("password", admin_password),
            ("scope", "repository:acme/app:pull,push"),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = granted["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh_token = granted["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let refreshed = client
        .post(core.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("service", "aerugo"),
            ("client_id", "secrets-test"),
            ("refresh_token", &refresh_token),
            ("scope", "repository:acme/app:pull"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);

    let org = client
        .post(core.url("/api/v1/orgs"))
        .basic_auth(ADMIN, Some(admin_password))
        .json(&serde_json::json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(org.status(), 201);
    Seeder::signed_in(&core.url(""), ADMIN, admin_password)
        .push_image("acme/app", "1", &TestImage::new("secrets"))
        .await;
    let robot: serde_json::Value = client
        .post(core.url("/api/v1/orgs/acme/robots"))
        .basic_auth(ADMIN, Some(admin_password))
        .json(&serde_json::json!({"name": "ci", "scopes": ["repository:acme/*:pull"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let robot_secret = robot["secret"].as_str().expect("robot secret").to_owned();
    let pulled = client
        .get(core.url("/v2/acme/app/manifests/1"))
        .basic_auth("acme+ci", Some(&robot_secret))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    let denied = client
        .get(core.url("/v2/acme/app/manifests/1"))
        .bearer_auth(format!("{access_token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let logout = client
        .post(core.url("/api/v1/auth/logout"))
        .json(&serde_json::json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success(), "{}", logout.status());
    vec![
        Secret {
            what: "an access token",
            value: access_token,
        },
        Secret {
            what: "a refresh token",
            value: refresh_token,
        },
        Secret {
            what: "the robot's secret",
            value: robot_secret,
        },
    ]
}

/// An edge gateway in front of `core`, filling with the admin's credential from
/// `AERUGO__EDGE__GATEWAY__SERVICE_PASSWORD_FILE`, serving a pull with a token; returns its
/// log and the token it was given.
async fn through_a_gateway(
    core: &CoreProcess,
    dir: &Path,
    admin_password: &str,
) -> (String, Vec<Secret>) {
    let client = http_client();
    let token: serde_json::Value = client
        .get(core.url("/auth/token?service=aerugo&scope=repository:acme/app:pull"))
        .basic_auth(ADMIN, Some(admin_password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().expect("token").to_owned();
    let addr = free_addr();
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[edge]\nlisten_address = \"{addr}\"\ncache_dir = \"{}\"\n\
             grace_period_seconds = 0\n[edge.gateway]\ncores = [\"{}\"]\nservice_username = \"{ADMIN}\"\n",
            dir.join("edge-cache").display(),
            core.addr,
        ),
    )
    .unwrap();
    let log = dir.join("edge.log");
    let (variable, path) = secret_file(
        dir,
        "AERUGO__EDGE__GATEWAY__SERVICE_PASSWORD",
        admin_password,
    );
    let mut edge = spawn_logged(
        Command::new(AERUGO)
            .arg("edge")
            .arg("--config")
            .arg(&config)
            .env("AERUGO__SERVER__LOG_LEVEL", "debug")
            .env(variable, path),
        &log,
    );
    wait_until_ready(
        &client,
        &format!("http://{addr}/healthz"),
        &mut edge,
        &log,
        "aerugo edge",
    )
    .await;
    let image = TestImage::new("secrets");
    for _ in 0..2 {
        let pulled = client
            .get(format!(
                "http://{addr}/v2/acme/app/blobs/{}",
                image.layers[0].digest
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(pulled.status(), 200, "{}", read_log(&log));
    }
    terminate(&mut edge, std::time::Duration::from_secs(10));
    (
        read_log(&log),
        vec![Secret {
            what: "a token the gateway verified",
            value: token,
        }],
    )
}
