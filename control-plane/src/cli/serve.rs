//! The commands that run a server: `serve` (the control plane) and `demo-upstream`, with their
//! flags.

use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tollgate_core::duration::parse_duration;

use super::{Cli, CliError};
use crate::config::{
    Retention, ServeConfig, DEFAULT_DEMO_UPSTREAM_LISTEN, DEFAULT_KEY_CACHE_TTL_MS, DEFAULT_LISTEN,
    DEFAULT_LOOKUP_CACHE_ENTRIES, DEFAULT_RETENTION_DAYS, DEFAULT_ROLLUP_RETENTION_DAYS,
    MAX_LEASE_TTL_MS,
};
use crate::server::shutdown_signal;
use crate::tokens::Token;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Token the Envoy filter sends. When unset, `<data-dir>/filter-token` is used.
    #[arg(long, env = "TOLLGATE_FILTER_TOKEN", hide_env_values = true)]
    pub filter_token: Option<String>,
    /// PostgreSQL database to use (`postgres://user:password@host:5432/dbname`) instead of
    /// SQLite in `<data-dir>/tollgate.db`. Tokens still live in the data directory.
    #[arg(long, env = "TOLLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Longest time the filter may cache a key lookup (milliseconds).
    #[arg(long, default_value_t = DEFAULT_KEY_CACHE_TTL_MS)]
    pub key_cache_ttl_ms: u64,
    /// Delete raw usage records (the request log) older than this many days, hourly; 0 keeps
    /// them forever.
    #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS)]
    pub retention_days: u32,
    /// Delete usage rollups (analytics) older than this many days; 0 keeps them forever.
    #[arg(long, default_value_t = DEFAULT_ROLLUP_RETENTION_DAYS)]
    pub rollup_retention_days: u32,
    /// The longest a budget lease lasts (`250ms`, `30s`, `2m`, `1h`; at most 1h).
    #[arg(long, env = "TOLLGATE_LEASE_TTL", default_value = "30s", value_parser = lease_ttl)]
    pub lease_ttl: Duration,
    /// Filter lookup answers kept in memory until a write could change them (SQLite only;
    /// 0 keeps none, so every lookup reads the database).
    #[arg(long, env = "TOLLGATE_LOOKUP_CACHE", default_value_t = DEFAULT_LOOKUP_CACHE_ENTRIES)]
    pub lookup_cache: usize,
    /// Serve `GET /metrics` (Prometheus) on this address instead of on `--listen`.
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// A duration as the filter's configuration writes one (`250ms`, `30s`, `2m`, `1h`); for
/// `--lease-ttl`, more than 0 and at most [`MAX_LEASE_TTL_MS`].
fn lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl.is_zero() || ttl.as_millis() > u128::from(MAX_LEASE_TTL_MS) {
        return Err("must be more than 0 and at most 1h".to_owned());
    }
    Ok(ttl)
}

#[derive(Debug, Args)]
pub struct DemoUpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_DEMO_UPSTREAM_LISTEN)]
    pub listen: String,
}

pub async fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), CliError> {
    // A file-size limit (RLIMIT_FSIZE) the database reaches must fail the write, as a full disk
    // does (ingest answers 5xx and the filter sends the records again), not kill the process.
    // SAFETY: only the disposition of SIGXFSZ changes, before any thread writes a file.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let config = ServeConfig {
        data_dir: cli.data_dir.clone(),
        database_url: args.database_url.clone().filter(|u| !u.is_empty()),
        admin_token: cli.token.clone().and_then(Token::new),
        filter_token: args.filter_token.clone().and_then(Token::new),
        key_cache_ttl_ms: args.key_cache_ttl_ms,
        lease_ttl_ms: u64::try_from(args.lease_ttl.as_millis()).unwrap_or(MAX_LEASE_TTL_MS),
        lookup_cache_entries: args.lookup_cache,
        retention: Retention {
            raw_days: args.retention_days,
            rollup_days: args.rollup_retention_days,
            ..Retention::default()
        },
        metrics_listen: args.metrics_listen.clone().filter(|a| !a.is_empty()),
    };
    crate::server::serve(listener, config, shutdown_signal())
        .await
        .map_err(|e| CliError::new(e.to_string()))
}

pub async fn demo_upstream(args: &DemoUpstreamArgs) -> Result<(), CliError> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", args.listen)))?;
    println!("Demo upstream listening on http://{}", args.listen);
    crate::demo_upstream::serve(listener, shutdown_signal())
        .await
        .map_err(|e| CliError::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use clap::Parser;

    #[test]
    fn lease_ttls_are_durations() {
        assert_eq!(lease_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(lease_ttl("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(lease_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(lease_ttl("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "30", "0s", "2h", "s", "-1s", "1.5s", "30 s"] {
            assert!(lease_ttl(bad).is_err(), "{bad}");
        }
        let cli = Cli::try_parse_from(["tollgate", "serve", "--lease-ttl", "10s"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.lease_ttl, Duration::from_secs(10));
    }
}
