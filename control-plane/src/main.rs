use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tollgate_control_plane::cli::{self, Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => {
            init_tracing(cli.log_format);
            cli::serve(&cli, args).await
        }
        Command::DemoUpstream(args) => {
            init_tracing(cli.log_format);
            cli::demo_upstream(args).await
        }
        Command::Workspaces(command) => cli::workspaces(&cli, command).await,
        Command::Keys(command) => cli::keys(&cli, command).await,
        Command::Openapi => {
            print!("{}", tollgate_control_plane::server::openapi_document());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (`RUST_LOG`, default `info`); stdout is reserved for what users read.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr a file on a full disk) is dropped: reporting
    // it, as tracing does by default, is an `eprintln!` to the same stderr, whose panic would
    // kill the request being answered.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // The event's message and fields at the top level, where log collectors look for them.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}
