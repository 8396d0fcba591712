//! Command line: `serve`, `demo-upstream`, and admin commands that call the REST API.

mod key_body;
mod serve;
mod table;

use key_body::{create_body, key_details, update_body};
pub use serve::{demo_upstream, serve, DemoUpstreamArgs, ServeArgs};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_URL};
use crate::domain::wire::{CreateWorkspace, KeyView, List, PatchKey, RotateKey, WorkspaceView};
use crate::tokens::{self, Token, TokenKind};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate control plane: API keys, quotas and usage analytics enforced at the Envoy edge"
)]
pub struct Cli {
    /// Control plane URL for the admin commands.
    #[arg(long, global = true, env = "TOLLGATE_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Admin token (`serve`: the token to accept; admin commands: the token to send). When unset,
    /// `<data-dir>/admin-token` is used.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Data directory (database and token files).
    #[arg(long, global = true, env = "TOLLGATE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print the raw API JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format of `serve` and `demo-upstream` (stderr): `text`, or `json` (one object a line,
    /// for log collectors).
    #[arg(long, global = true, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How the servers write their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message` and the event's
    /// other fields.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane server.
    Serve(ServeArgs),
    /// Run a demo upstream that echoes every request as JSON.
    DemoUpstream(DemoUpstreamArgs),
    /// Manage workspaces.
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the REST API's OpenAPI 3.1 description, as `GET /v1/openapi.json` serves it.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace.
    Create {
        /// Display name (1-100 characters).
        #[arg(long)]
        name: String,
        /// free, pro or enterprise.
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// List workspaces.
    List,
    /// Show one workspace.
    Show {
        /// Workspace id (ws_...).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create(Box<CreateKeyArgs>),
    /// List the keys of a workspace.
    List {
        /// Workspace id (ws_...).
        #[arg(long)]
        workspace: String,
        /// Only the keys with this external id.
        #[arg(long)]
        external_id: Option<String>,
    },
    /// Change a key's rate limits, credit budget, external id or meta.
    Update(Box<UpdateKeyArgs>),
    /// Show one key.
    Show { id: String },
    /// Stop accepting a key (it keeps its plan slot and history).
    Deactivate { id: String },
    /// Accept a deactivated key again.
    Activate { id: String },
    /// Replace a key's secret; the new one is printed once.
    Rotate {
        id: String,
        /// Keep the old secret working for this many seconds (at most 604800).
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    /// Delete a key that was never used (deactivate used keys instead).
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// Workspace id (ws_...).
    #[arg(long)]
    pub workspace: String,
    /// Name unique in the workspace: 1-64 of letters, digits, space and _ . : -
    #[arg(long)]
    pub alias: String,
    /// Free text, at most 500 characters.
    #[arg(long)]
    pub description: Option<String>,
    /// production (default), development, staging or a custom label.
    #[arg(long)]
    pub category: Option<String>,
    /// RFC 3339, e.g. 2027-01-01T00:00:00Z.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Maximum requests over the key's lifetime.
    #[arg(long)]
    pub quota_total: Option<u64>,
    /// Maximum requests per rolling day.
    #[arg(long)]
    pub quota_daily: Option<u64>,
    /// Maximum requests per rolling week.
    #[arg(long)]
    pub quota_weekly: Option<u64>,
    /// Maximum requests per rolling month.
    #[arg(long)]
    pub quota_monthly: Option<u64>,
    /// Allowed endpoint, "METHOD PATH" or "PATH" (any method); repeatable. None = all.
    #[arg(long = "allow", value_name = "METHOD PATH")]
    pub allow: Vec<String>,
    /// The key's own limit of requests per second (on top of its plan's).
    #[arg(long)]
    pub rate_limit_per_second: Option<u64>,
    /// The key's own limit of requests per minute.
    #[arg(long)]
    pub rate_limit_per_minute: Option<u64>,
    /// The key's own limit of requests per hour.
    #[arg(long)]
    pub rate_limit_per_hour: Option<u64>,
    /// Credits the key may spend per --credits-period (both or neither).
    #[arg(long)]
    pub credits_limit: Option<u64>,
    /// day, month (calendar, UTC) or total.
    #[arg(long)]
    pub credits_period: Option<String>,
    /// Whom the key belongs to in your system (1-128 printable ASCII, no spaces); forwarded
    /// to the upstream as x-tollgate-external-id.
    #[arg(long)]
    pub external_id: Option<String>,
    /// A meta entry, NAME=VALUE (names [a-z0-9_-]); repeatable.
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    pub meta: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateKeyArgs {
    /// Key id (key_...).
    pub id: String,
    /// Requests per second, or `none` to remove the limit.
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    pub rate_limit_per_second: Option<String>,
    /// Requests per minute, or `none`.
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    pub rate_limit_per_minute: Option<String>,
    /// Requests per hour, or `none`.
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    pub rate_limit_per_hour: Option<String>,
    /// A new credit budget: credits per --credits-period (both are needed).
    #[arg(long, allow_hyphen_values = true)]
    pub credits_limit: Option<String>,
    /// day, month (calendar, UTC) or total.
    #[arg(long)]
    pub credits_period: Option<String>,
    /// Remove the credit budget.
    #[arg(long, conflicts_with_all = ["credits_limit", "credits_period"])]
    pub no_credits: bool,
    /// A new external id.
    #[arg(long)]
    pub external_id: Option<String>,
    /// Remove the external id.
    #[arg(long, conflicts_with = "external_id")]
    pub no_external_id: bool,
    /// Replaces the key's meta with these entries, NAME=VALUE; repeatable.
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    pub meta: Vec<String>,
    /// Remove every meta entry.
    #[arg(long, conflicts_with = "meta")]
    pub no_meta: bool,
}

/// An error for the user: printed as `error: <message>`, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

pub async fn workspaces(cli: &Cli, command: &WorkspacesCommand) -> Result<(), CliError> {
    let client = Client::new(cli)?;
    match command {
        WorkspacesCommand::Create { name, plan } => {
            let body = CreateWorkspace {
                name: name.clone(),
                plan: plan.clone(),
            };
            let ws = client
                .call(Method::POST, "/v1/workspaces", Some(json(&body)?))
                .await?;
            output(cli, &ws, |ws: WorkspaceView| workspace_details(&ws))?;
        }
        WorkspacesCommand::List => {
            let list = client.call(Method::GET, "/v1/workspaces", None).await?;
            output(cli, &list, |list: List<WorkspaceView>| {
                let rows = list
                    .data
                    .into_iter()
                    .map(|ws| vec![ws.id, ws.name, ws.plan, ws.created_at])
                    .collect::<Vec<_>>();
                table::render(&["ID", "NAME", "PLAN", "CREATED"], &rows)
            })?;
        }
        WorkspacesCommand::Show { id } => {
            let ws = client
                .call(
                    Method::GET,
                    &format!("/v1/workspaces/{}", segment(id)),
                    None,
                )
                .await?;
            output(cli, &ws, |ws: WorkspaceView| workspace_details(&ws))?;
        }
    }
    Ok(())
}

pub async fn keys(cli: &Cli, command: &KeysCommand) -> Result<(), CliError> {
    let client = Client::new(cli)?;
    match command {
        KeysCommand::Create(args) => {
            let path = format!("/v1/workspaces/{}/keys", segment(&args.workspace));
            let key = client
                .call(Method::POST, &path, Some(json(&create_body(args)?)?))
                .await?;
            output_with_secret(cli, &key)?;
        }
        KeysCommand::List {
            workspace,
            external_id,
        } => {
            let mut path = format!("/v1/workspaces/{}/keys", segment(workspace));
            if let Some(x) = external_id {
                path.push_str(&format!("?external_id={}", segment(x)));
            }
            let list = client.call(Method::GET, &path, None).await?;
            output(cli, &list, |list: List<KeyView>| {
                let rows = list
                    .data
                    .into_iter()
                    .map(|k| {
                        vec![
                            k.id,
                            k.alias,
                            k.category,
                            k.status,
                            k.prefix,
                            or_dash(k.expires_at),
                            or_dash(k.last_used_at),
                            or_dash(k.external_id),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(
                    &[
                        "ID",
                        "ALIAS",
                        "CATEGORY",
                        "STATUS",
                        "PREFIX",
                        "EXPIRES",
                        "LAST USED",
                        "EXTERNAL ID",
                    ],
                    &rows,
                )
            })?;
        }
        KeysCommand::Update(args) => {
            let key = client
                .call(
                    Method::PATCH,
                    &key_path(&args.id, ""),
                    Some(json(&update_body(args)?)?),
                )
                .await?;
            output(cli, &key, |key: KeyView| key_details(&key))?;
        }
        KeysCommand::Show { id } => {
            let key = client.call(Method::GET, &key_path(id, ""), None).await?;
            output(cli, &key, |key: KeyView| key_details(&key))?;
        }
        KeysCommand::Deactivate { id } | KeysCommand::Activate { id } => {
            let active = matches!(command, KeysCommand::Activate { .. });
            let body = PatchKey {
                active: Some(Some(active)),
                ..PatchKey::default()
            };
            let key = client
                .call(Method::PATCH, &key_path(id, ""), Some(json(&body)?))
                .await?;
            output(cli, &key, |key: KeyView| key_details(&key))?;
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let body = RotateKey {
                grace_seconds: i64::try_from(grace_seconds.unwrap_or(0)).unwrap_or(i64::MAX),
            };
            let key = client
                .call(Method::POST, &key_path(id, "/rotate"), Some(json(&body)?))
                .await?;
            output_with_secret(cli, &key)?;
            if !cli.json && grace_seconds.is_some_and(|g| g > 0) {
                println!(
                    "The previous secret keeps working for {} more seconds.",
                    grace_seconds.unwrap_or(0)
                );
            }
        }
        KeysCommand::Delete { id } => {
            client.call(Method::DELETE, &key_path(id, ""), None).await?;
            if !cli.json {
                println!("Deleted key {id}");
            }
        }
    }
    Ok(())
}

/// A request body as JSON.
pub(crate) fn json(body: &impl Serialize) -> Result<Value, CliError> {
    serde_json::to_value(body).map_err(|e| CliError::new(format!("cannot encode the request: {e}")))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl Client {
    fn new(cli: &Cli) -> Result<Self, CliError> {
        let token = match cli.token.clone().and_then(Token::new) {
            Some(t) => t,
            None => {
                let path = TokenKind::Admin.path(&cli.data_dir);
                tokens::read_file(TokenKind::Admin, &path)
                    .map_err(|e| CliError::new(e.to_string()))?
                    .ok_or_else(|| {
                        CliError::new(format!(
                            "no admin token: set TOLLGATE_ADMIN_TOKEN, pass --token, or point \
                             --data-dir at the server's data directory ({} does not exist)",
                            path.display()
                        ))
                    })?
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::new(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: cli.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The response JSON (`null` for 204); API errors become their `error` message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CliError::new(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::new(format!("cannot read the response from {url}: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                CliError::new(format!(
                    "{url} answered {status} with a body that is not JSON"
                ))
            })?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(CliError::new(match value["error"].as_str() {
                Some(message) => message.to_owned(),
                None => format!("{url} answered {status}"),
            }))
        }
    }
}

/// Percent-encodes an id for use as one path segment, so odd input cannot change the route.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn key_path(id: &str, suffix: &str) -> String {
    format!("/v1/keys/{}{suffix}", segment(id))
}

/// The API's answer: its JSON as it came with `--json`, else `human` of it read as `T` (the
/// type the API wrote it from).
fn output<T: DeserializeOwned>(
    cli: &Cli,
    value: &Value,
    human: impl FnOnce(T) -> String,
) -> Result<(), CliError> {
    if cli.json {
        println!("{}", pretty(value));
    } else {
        print!("{}", human(read(value)?));
    }
    Ok(())
}

fn output_with_secret(cli: &Cli, value: &Value) -> Result<(), CliError> {
    if cli.json {
        println!("{}", pretty(value));
        eprintln!("warning: the secret in this output will not be shown again; store it now");
        return Ok(());
    }
    let key: KeyView = read(value)?;
    let secret = or_dash(key.secret.clone());
    print!("{}", key_details(&key));
    println!();
    println!("Secret: {secret}");
    println!("Store this secret now: it will not be shown again.");
    Ok(())
}

fn read<T: DeserializeOwned>(value: &Value) -> Result<T, CliError> {
    T::deserialize(value).map_err(|e| CliError::new(format!("unexpected answer from the API: {e}")))
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// An optional value as a table cell: `-` when absent.
pub(crate) fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

fn workspace_details(ws: &WorkspaceView) -> String {
    table::details(&[
        ("id", ws.id.clone()),
        ("name", ws.name.clone()),
        ("plan", ws.plan.clone()),
        ("created_at", ws.created_at.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("key_AbC09"), "key_AbC09");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
