//! The `aerugo` command line: `serve` and the `admin` operator commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{self, DataDirLock};
use crate::config::{Config, ConfigError, EdgeOverrides, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "aerugo",
    version,
    about = "A container registry (OCI Distribution API)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "AERUGO_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the embedded backends' files (default ./data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (default 127.0.0.1:5000).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run an edge node: the pull-through cache near CI runners, or a gateway in front of cores.
    Edge {
        #[command(flatten)]
        common: Common,
        /// Plain-HTTP listen address (default 127.0.0.1:5001).
        #[arg(long)]
        listen: Option<String>,
        /// Disk cache directory (default ./edge-cache).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// An upstream registry, `[NAME=]URL`, repeatable. Unnamed = the default for bare paths.
        #[arg(long = "upstream", value_name = "[NAME=]URL")]
        upstreams: Vec<String>,
        /// Graceful restart: take the listening sockets over from the edge running with the
        /// same configuration, through its upgrade socket (`edge.upgrade_socket`). Send the old
        /// process SIGQUIT within 5 seconds; it hands over, finishes what is in flight and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Exit 0 when the node at `--url` answers its health check: the container image's
    /// HEALTHCHECK, which has no curl.
    Healthcheck {
        /// The node's health endpoint (a core's or an edge's `/healthz`).
        #[arg(long, default_value = "http://127.0.0.1:5000/healthz")]
        url: String,
    },
    /// Operator commands.
    Admin {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Delete unreferenced blobs and abandoned uploads. With a server running on the same data
    /// directory, the server does the work (online); otherwise it runs here.
    Gc {
        /// Keep anything linked or touched within this many seconds (default: gc.grace_period_seconds).
        #[arg(long)]
        grace_period: Option<u64>,
    },
    /// Validate the configuration (the `[edge]` section included), print it as resolved with
    /// every secret redacted, and check that each external backend answers (exit status 1
    /// when one does not).
    CheckConfig {
        /// Also check what `aerugo edge` needs to start: upstreams or gateway cores to serve.
        #[arg(long)]
        edge: bool,
    },
    /// Fill the registry with synthetic content to measure how its costs grow with its size
    /// (see `aerugo::seed`: `seed/tags` with tags and referrers, `seed/r0000000…`). Writes
    /// through the registry's own methods, like pushes; refuses while a server holds the data
    /// directory.
    Seed {
        /// Distinct small blobs, dealt round-robin over the repositories.
        #[arg(long, default_value_t = 10_000)]
        blobs: u64,
        /// Repositories `seed/r0000000…`, each with a manifest tagged `latest`.
        #[arg(long, default_value_t = 1_000)]
        repositories: u64,
        /// Tags in `seed/tags`, each its own manifest.
        #[arg(long, default_value_t = 1_000)]
        tags: u64,
        /// Artifact manifests in `seed/tags` whose subject is `t0000000`.
        #[arg(long, default_value_t = 100)]
        referrers: u64,
        /// Writes in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Create or upgrade the metadata schema.
    Migrate,
    /// Start signing tokens with a new key (kept in the database; every node follows within
    /// auth.key_reload_seconds). Tokens signed with the old keys stay valid until they expire.
    RotateSigningKey,
    /// Create a user in the database `serve` uses (the same data directory or DATABASE_URL;
    /// a running server sees it at once). The first user closes an open registry.
    CreateUser {
        name: String,
        /// Make the user a registry admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (its first line), never from the command
        /// line, where other users and shell history would see it.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

impl Cli {
    /// Resolves the configuration for the chosen command.
    pub fn config(&self) -> anyhow::Result<Config> {
        let (common, listen, edge) = match &self.command {
            Command::Serve { common, listen } => (common, listen.clone(), None),
            Command::Edge {
                common,
                listen,
                cache_dir,
                upstreams,
                ..
            } => (
                common,
                listen.clone(),
                Some(EdgeOverrides {
                    cache_dir: cache_dir.clone(),
                    upstreams: upstreams.clone(),
                }),
            ),
            Command::Admin { common, .. } => (common, None, None),
            // Asks a running node; its own configuration plays no part.
            Command::Healthcheck { .. } => return Ok(Config::default()),
        };
        let overrides = Overrides {
            listen,
            data_dir: common.data_dir.clone(),
            edge,
        };
        let config = Config::load(common.config.as_deref(), &overrides)?;
        if let Command::Admin {
            command: AdminCommand::CheckConfig { edge },
            ..
        } = &self.command
        {
            let problems = if *edge {
                config.edge.startup_problems()
            } else {
                config.edge.problems()
            };
            if !problems.is_empty() {
                return Err(ConfigError::Invalid(problems).into());
            }
        }
        Ok(config)
    }
}

/// Whether the command runs the edge, which owns its runtimes (pingora) and so must be
/// started outside any tokio runtime.
pub fn is_edge(cli: &Cli) -> bool {
    matches!(cli.command, Command::Edge { .. })
}

/// Whether `aerugo edge --upgrade` was asked for.
pub fn is_edge_upgrade(cli: &Cli) -> bool {
    matches!(cli.command, Command::Edge { upgrade: true, .. })
}

/// How long a health check waits for the node.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);

async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .build()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    Ok(())
}

pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Edge { .. } => {
            anyhow::bail!("the edge runs outside the async runtime; call edge::server::run")
        }
        Command::Serve { .. } => {
            let addr = config.listen_addr();
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            app::run_server(config, listener, shutdown_signal()).await
        }
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::Admin {
            command: AdminCommand::Gc { grace_period },
            ..
        } => {
            let grace = Duration::from_secs(grace_period.unwrap_or(config.gc.grace_period_seconds));
            gc(&config, grace).await
        }
        Command::Admin {
            command: AdminCommand::CheckConfig { .. },
            ..
        } => check_config(&config).await,
        Command::Admin {
            command: AdminCommand::RotateSigningKey,
            ..
        } => {
            anyhow::ensure!(
                config.auth.signing_key_file.is_none(),
                "auth.signing_key_file is set: the nodes sign with that file's key; replace the file instead"
            );
            anyhow::ensure!(
                config.security.jwt_secret.is_none(),
                "security.jwt_secret (JWT_SECRET) is set: the nodes sign with the key derived from it; change the secret on every node instead"
            );
            let accounts = app::open_accounts(&config).await?;
            let kid = crate::auth::Auth::rotate_keys(accounts.as_ref()).await?;
            print_out(&format!("signing with the new key {kid}"))
        }
        Command::Admin {
            command: AdminCommand::CreateUser { name, admin, .. },
            ..
        } => create_user(&config, &name, admin).await,
        Command::Admin {
            command:
                AdminCommand::Seed {
                    blobs,
                    repositories,
                    tags,
                    referrers,
                    concurrency,
                },
            ..
        } => {
            let plan = crate::seed::SeedPlan {
                blobs,
                repositories,
                tags,
                referrers,
                concurrency,
            };
            seed(&config, plan).await
        }
        Command::Admin {
            command: AdminCommand::Migrate,
            ..
        } => {
            app::migrate(&config).await?;
            print_out("metadata schema is up to date")
        }
    }
}

async fn create_user(config: &Config, name: &str, admin: bool) -> anyhow::Result<()> {
    let name: crate::accounts::AccountName = name
        .parse()
        .with_context(|| format!("user name {name:?}"))?;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    crate::auth::password::check_new(password)?;
    let accounts = app::open_accounts(config).await?;
    app::create_user(accounts.as_ref(), &name, password, admin).await?;
    print_out(&format!(
        "created {}user {name}",
        if admin { "admin " } else { "" }
    ))
}

async fn gc(config: &Config, grace: Duration) -> anyhow::Result<()> {
    let report = match DataDirLock::try_acquire(&config.server.data_dir)? {
        Some(_lock) => {
            app::build_registry(config)
                .await?
                .collect_garbage(grace)
                .await?
        }
        None => {
            let addr = DataDirLock::holder_address(&config.server.data_dir)
                .unwrap_or_else(|| config.listen_addr());
            let url = format!(
                "http://{}/api/v1/admin/gc?grace_period_seconds={}",
                reachable(addr),
                grace.as_secs()
            );
            let mut request = reqwest::Client::new().post(&url);
            if let Some(token) = DataDirLock::admin_token(&config.server.data_dir) {
                request = request.header(crate::api::LOCAL_ADMIN_HEADER, token);
            }
            let response = request.send().await.with_context(|| {
                format!("a server holds the data directory; asking it at {url}")
            })?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            anyhow::ensure!(
                status.is_success(),
                "server refused garbage collection ({status}): {body}"
            );
            serde_json::from_str(&body).context("reading the server's report")?
        }
    };
    print_out(&serde_json::to_string_pretty(&report)?)
}

async fn seed(config: &Config, plan: crate::seed::SeedPlan) -> anyhow::Result<()> {
    let Some(_lock) = DataDirLock::try_acquire(&config.server.data_dir)? else {
        anyhow::bail!(
            "a server holds the data directory {}; stop it first",
            config.server.data_dir.display()
        );
    };
    let report = crate::seed::seed(app::build_registry(config).await?, plan).await?;
    print_out(&serde_json::to_string_pretty(&report)?)
}

async fn check_config(config: &Config) -> anyhow::Result<()> {
    let resolved = toml::to_string_pretty(&config.redacted()).context("rendering configuration")?;
    print_out(&resolved)?;
    let mut down = 0;
    for probe in app::probe_backends(config).await {
        let line = match &probe.outcome {
            Ok(state) => format!("# {}: {} — {state}", probe.backend, probe.target),
            Err(e) => {
                down += 1;
                format!("# {}: {} — PROBLEM: {e:#}", probe.backend, probe.target)
            }
        };
        print_out(&line)?;
    }
    anyhow::ensure!(down == 0, "{down} backend(s) did not answer");
    Ok(())
}

/// The server's address as reachable from this host (a wildcard address means loopback).
fn reachable(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Writes a command's result; a closed stdout (`| head`) is an error, not a panic.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
