use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = aerugo::cli::Cli::parse();
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aerugo: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    aerugo::telemetry::init_logging(&config.server.log_level, &config.server.log_format);
    if aerugo::cli::is_edge(&cli) {
        return exit_with(run_edge(&config, aerugo::cli::is_edge_upgrade(&cli)));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aerugo: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    exit_with(runtime.block_on(aerugo::cli::run(cli, config)))
}

#[cfg(feature = "edge")]
fn run_edge(config: &aerugo::config::Config, upgrade: bool) -> anyhow::Result<()> {
    aerugo::edge::server::run(config, upgrade)
}

#[cfg(not(feature = "edge"))]
fn run_edge(_: &aerugo::config::Config, _: bool) -> anyhow::Result<()> {
    anyhow::bail!("this binary was built without the `edge` feature")
}

fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aerugo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
