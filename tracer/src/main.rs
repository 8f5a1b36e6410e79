use std::process::ExitCode;

use clap::Parser;
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("TRACER_LOG", "warn")).init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Watch(args) => tracer::cmd::watch::run(args).await,
            Command::Diagnose(args) => tracer::cmd::diagnose::diagnose(args).await,
            Command::Record(args) => tracer::cmd::diagnose::record(args).await,
            Command::Report(args) => tracer::cmd::diagnose::report_cmd(args),
            Command::Compare(args) => tracer::cmd::diagnose::compare_cmd(args),
            Command::Daemon(_) => {
                // The daemon parses its own arguments again together with its config file.
                tracer::cmd::daemon::run(std::env::args_os().skip_while(|a| a != "daemon").skip(1).collect()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
