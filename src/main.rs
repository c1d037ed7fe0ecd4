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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aerugo: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(aerugo::cli::run(cli, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aerugo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
