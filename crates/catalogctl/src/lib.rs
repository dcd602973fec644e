//! catalogctl: a CLI for CI pipelines, speaking to catalog-bff over its GraphQL API.
//!
//! Exit codes (stable): 0 success; 1 the operation failed (a refresh that ends FAILURE or
//! PARTIAL unless --allow-partial, a removal that needs confirmation, not found); 2 validation
//! failed; 3 conflict; 4 authentication or permission; 5 server unreachable or timed out.

#![allow(clippy::print_stdout, reason = "a CLI's output is its stdout")]
mod client;
mod output;
mod source_file;

use catalog_api::ErrorCode;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use client::Client;
use output::{Out, relative_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Validation = 2,
    Conflict = 3,
    Auth = 4,
    Unreachable = 5,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl CliError {
    /// `code` is a server [`ErrorCode`]'s word, or one of the client's own (`UNREACHABLE`,
    /// `TIMEOUT`).
    pub fn new(exit: Exit, code: &str, message: impl Into<String>) -> CliError {
        CliError { exit, code: code.to_string(), message: message.into(), details: Value::Null }
    }

    pub fn from_graphql(err: &Value) -> CliError {
        let code = err["extensions"]["code"].as_str().unwrap_or(ErrorCode::Internal.as_str()).to_string();
        let exit = match ErrorCode::parse(&code) {
            Some(ErrorCode::ValidationFailed) => Exit::Validation,
            Some(ErrorCode::Conflict) => Exit::Conflict,
            Some(ErrorCode::Unauthenticated | ErrorCode::Forbidden) => Exit::Auth,
            _ => Exit::Failed,
        };
        CliError {
            exit,
            code,
            message: err["message"].as_str().unwrap_or("error").to_string(),
            details: err["extensions"].clone(),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Parser, Debug)]
#[command(name = "catalogctl", version, about = "Apply, refresh and roll back catalog sources on a catalog-bff server")]
struct Cli {
    /// The catalog-bff server.
    #[arg(long, global = true, env = "CATALOG_BFF_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token (see the server's --auth static).
    #[arg(long, global = true, env = "CATALOG_BFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format; `json` is a stable interface for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Format,
    /// Seconds to wait for the server (each request, and a whole refresh wait).
    #[arg(long, global = true, default_value_t = 120.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List sources: plugin, id, state, entities, last refreshed, last status.
    Sources { plugin: Option<String> },
    /// Show one source with diagnostics and recent revisions.
    Get { target: String },
    /// Validate a source file; prints diagnostics like a compiler. Changes nothing.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Apply a source file (entry + catalog content).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Refresh the source after writing it and report the result.
        #[arg(long)]
        refresh: bool,
        /// Validate and show the impact; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Fail with exit 3 unless this is the source's current revision.
        #[arg(long)]
        expected_revision: Option<i32>,
        /// Allow removing more than half of the source's entities.
        #[arg(long)]
        confirm_removals: bool,
        /// With --refresh: a PARTIAL refresh is a success.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Show what applying a source file would change (to add / update / remove).
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Refresh PLUGIN or PLUGIN/ID (or, with --all, every source of every plugin in one job)
    /// and wait for the result, showing live progress.
    Refresh {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        target: Option<String>,
        /// Every source of every plugin, in one job (suspended sources left out).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        incremental: bool,
        /// Print the job id and return at once.
        #[arg(long)]
        no_wait: bool,
        /// A PARTIAL result is a success.
        #[arg(long)]
        allow_partial: bool,
        #[arg(long)]
        confirm_removals: bool,
    },
    /// Roll PLUGIN/ID back to revision N (recorded as a new revision).
    Rollback {
        target: String,
        #[arg(long = "to")]
        to: i32,
        #[arg(long)]
        refresh: bool,
        #[arg(long)]
        allow_partial: bool,
    },
    /// Revision history of PLUGIN/ID.
    History { target: String },
    /// Recent refresh jobs.
    Jobs,
    /// One refresh job; --watch follows it until it ends. `job cancel ID` cancels one.
    #[command(args_conflicts_with_subcommands = true)]
    Job {
        #[command(subcommand)]
        action: Option<JobAction>,
        /// The job's id.
        id: Option<String>,
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        allow_partial: bool,
    },
    /// Suspend PLUGIN/ID: it keeps serving its entities, and is not refreshed on its own
    /// (schedule, watcher, plugin-wide refreshes) until resumed.
    Suspend { target: String },
    /// Resume a suspended PLUGIN/ID.
    Resume { target: String },
    /// Webhook receivers: list, create, delete, and their deliveries.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Subcommand, Debug)]
enum JobAction {
    /// Cancel a QUEUED or RUNNING refresh job: fetches in flight are aborted, sources already
    /// refreshed stay refreshed. Exit 0 when it ended CANCELLED, 2 when it had already ended.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// List the registered receivers.
    List,
    /// Register a receiver of signed catalog events (Standard Webhooks).
    Create {
        /// Where events are POSTed (https://HOST/PATH).
        #[arg(long)]
        url: String,
        /// An event kind to send (APPLIED, REFRESHED, ROLLED_BACK, REFRESH_STARTED,
        /// REFRESH_FINISHED, CONFIG_CHANGED_EXTERNALLY); repeat for more.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// Only events of this plugin; repeat for more. Left out: every plugin.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
        /// The Secret holding the `whsec_` signing secret, as NAME/KEY.
        #[arg(long)]
        secret: String,
    },
    /// Remove a receiver and its queued deliveries.
    Delete { id: String },
    /// A receiver's recent deliveries, newest first.
    Deliveries {
        id: String,
        /// How many (1 to 100).
        #[arg(long, default_value_t = 20)]
        first: i32,
    },
}

const WEBHOOK_FIELDS: &str = "id url events plugins secretRef { name key } createdBy createdAt";

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("catalogctl: cannot start: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let out = Out::new(cli.output);
    let code = match runtime.block_on(run(&cli, &out)) {
        Ok(exit) => exit,
        Err(e) => {
            out.error(&e);
            e.exit
        }
    };
    ExitCode::from(code as u8)
}

/// The NEXT REFRESH column: "suspended", "retry 2 in 40s", "in 9m", or "-".
fn next_refresh(s: &Value) -> String {
    if s["suspended"] == true {
        return "suspended".into();
    }
    let retries = s["status"]["retryCount"].as_u64().unwrap_or(0);
    let when = output::time_until(s["nextRefreshAt"].as_str());
    if retries > 0 && !s["status"]["nextRetryAt"].is_null() { format!("retry {retries} {when}") } else { when }
}

fn split_target(target: &str) -> Result<(String, Option<String>), CliError> {
    let mut parts = target.splitn(2, '/');
    let plugin = parts.next().unwrap_or_default().to_string();
    let id = parts.next().map(str::to_string);
    if plugin.is_empty() || id.as_deref() == Some("") {
        return Err(CliError::new(
            Exit::Validation,
            ErrorCode::ValidationFailed.as_str(),
            format!("`{target}` is not PLUGIN or PLUGIN/ID (e.g. models/team_models)"),
        ));
    }
    Ok((plugin, id))
}

fn need_id(target: &str) -> Result<(String, String), CliError> {
    match split_target(target)? {
        (p, Some(id)) => Ok((p, id)),
        _ => Err(CliError::new(
            Exit::Validation,
            ErrorCode::ValidationFailed.as_str(),
            format!("`{target}` needs PLUGIN/ID (e.g. models/team_models)"),
        )),
    }
}

const JOB_FIELDS: &str = "id plugin sourceId phase total completed currentSource error actor startedAt finishedAt results { plugin sourceId status entitiesLoaded entitiesAdded entitiesRemoved entitiesUpdated entitiesUnchanged artifactsLoaded durationMs summary diagnostics { severity message file line column } }";

async fn run(cli: &Cli, out: &Out) -> Result<Exit, CliError> {
    let timeout = Duration::try_from_secs_f64(cli.timeout.max(0.1)).unwrap_or(Duration::from_secs(24 * 3600));
    let client = Client::new(&cli.server, cli.token.clone(), timeout);
    match &cli.command {
        Command::Sources { plugin } => {
            let q = "query($p: String) { sources(plugin: $p) { plugin id name enabled suspended refreshInterval nextRefreshAt revision status { state entityCount lastRefreshTime lastRefreshStatus lastRefreshSummary lastError retryCount nextRetryAt } } }";
            let data = client.run(q, json!({"p": plugin}), timeout).await?;
            let rows: Vec<Vec<String>> = data["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        s["plugin"].as_str().unwrap_or_default().to_string(),
                        s["id"].as_str().unwrap_or_default().to_string(),
                        s["status"]["state"].as_str().unwrap_or_default().to_string(),
                        s["status"]["entityCount"].to_string(),
                        relative_time(s["status"]["lastRefreshTime"].as_str()),
                        s["status"]["lastRefreshStatus"].as_str().unwrap_or("-").to_string(),
                        next_refresh(s),
                    ]
                })
                .collect();
            out.data(&data["sources"], || {
                output::table(
                    &["PLUGIN", "ID", "STATE", "ENTITIES", "LAST REFRESHED", "LAST STATUS", "NEXT REFRESH"],
                    &rows,
                )
            });
            Ok(Exit::Ok)
        }
        Command::Get { target } => {
            let (plugin, id) = need_id(target)?;
            let q = "query($p: String!, $id: ID!) { source(plugin: $p, id: $id) { plugin id name type enabled labels properties revision status { state entityCount lastRefreshTime lastRefreshStatus lastRefreshSummary lastError durationMs diagnostics { severity message file line column field hint } } revisions(limit: 5) { revision action actor createdAt contentHash } } }";
            let data = client.run(q, json!({"p": plugin, "id": id}), timeout).await?;
            let s = &data["source"];
            if s.is_null() {
                return Err(CliError::new(
                    Exit::Failed,
                    ErrorCode::NotFound.as_str(),
                    format!("source {plugin}/{id} does not exist"),
                ));
            }
            out.data(s, || output::source_details(s));
            Ok(Exit::Ok)
        }
        Command::Validate { file } => {
            let src = source_file::load(file)?;
            let q = "query($p: String!, $i: SourceInput!) { validateSource(plugin: $p, input: $i) { valid errors { layer severity message file line column field suggestion hint } warnings { layer severity message file line column field hint } } }";
            let data = client.run(q, json!({"p": src.plugin, "i": src.input}), timeout).await?;
            let report = &data["validateSource"];
            out.data(report, || output::diagnostics(&src, report));
            Ok(if report["valid"].as_bool() == Some(true) { Exit::Ok } else { Exit::Validation })
        }
        Command::Diff { file } => {
            let src = source_file::load(file)?;
            let data =
                apply(&client, &src, json!({"dryRun": true}), timeout).await.map_err(|e| annotate(e, &src, out))?;
            let r = &data["applySource"];
            out.data(r, || output::impact(r));
            Ok(Exit::Ok)
        }
        Command::Apply { file, refresh, dry_run, expected_revision, confirm_removals, allow_partial } => {
            let src = source_file::load(file)?;
            let opts = json!({"refreshAfterApply": refresh, "dryRun": dry_run, "expectedRevision": expected_revision, "confirmRemovals": confirm_removals});
            let data = apply(&client, &src, opts, timeout).await.map_err(|e| annotate(e, &src, out))?;
            let r = &data["applySource"];
            out.data(r, || output::applied(&src, r));
            Ok(match r["refresh"].is_null() {
                true => Exit::Ok,
                false => job_exit(&r["refresh"], *allow_partial),
            })
        }
        Command::Refresh { target, all, incremental, no_wait, allow_partial, confirm_removals } => {
            let (plugin, id) = match target {
                Some(t) if !*all => split_target(t)?,
                _ => ("*".to_string(), None),
            };
            let mode = if *incremental { "INCREMENTAL" } else { "FULL" };
            let vars = json!({"p": plugin, "id": id, "mode": mode, "confirm": confirm_removals});
            let job = match &id {
                _ if *all => {
                    let q = format!(
                        "mutation($mode: RefreshMode, $confirm: Boolean) {{ job: refreshAll(mode: $mode, wait: false, confirmRemovals: $confirm) {{ {JOB_FIELDS} }} }}"
                    );
                    client.run(&q, json!({"mode": mode, "confirm": confirm_removals}), timeout).await?["job"].clone()
                }
                Some(_) => {
                    let q = format!(
                        "mutation($p: String!, $id: ID!, $mode: RefreshMode, $confirm: Boolean) {{ job: refreshSource(plugin: $p, id: $id, mode: $mode, wait: false, confirmRemovals: $confirm) {{ {JOB_FIELDS} }} }}"
                    );
                    client.run(&q, vars, timeout).await?["job"].clone()
                }
                None => {
                    let q = format!(
                        "mutation($p: String!, $mode: RefreshMode, $confirm: Boolean) {{ job: refreshPlugin(plugin: $p, mode: $mode, wait: false, confirmRemovals: $confirm) {{ {JOB_FIELDS} }} }}"
                    );
                    client.run(&q, vars, timeout).await?["job"].clone()
                }
            };
            if *no_wait {
                out.data(&job, || {
                    format!(
                        "started refresh job {} ({})",
                        job["id"].as_str().unwrap_or_default(),
                        job["phase"].as_str().unwrap_or_default()
                    )
                });
                return Ok(Exit::Ok);
            }
            let done = follow(&client, &job, out, timeout).await?;
            out.data(&done, || output::job_summary(&done));
            Ok(job_exit(&done, *allow_partial))
        }
        Command::Rollback { target, to, refresh, allow_partial } => {
            let (plugin, id) = need_id(target)?;
            let q = format!(
                "mutation($p: String!, $id: ID!, $r: Int!, $o: ApplyOptions) {{ rollbackSource(plugin: $p, id: $id, revision: $r, options: $o) {{ revision changed source {{ plugin id status {{ state entityCount lastRefreshSummary }} }} refresh {{ {JOB_FIELDS} }} }} }}"
            );
            let data = client.run(&q, json!({"p": plugin, "id": id, "r": to, "o": {"refreshAfterApply": refresh, "confirmRemovals": true}}), timeout).await?;
            let r = &data["rollbackSource"];
            out.data(r, || {
                let mut s = format!("{plugin}/{id}: rolled back to revision {to} as revision {}", r["revision"]);
                if !r["refresh"].is_null() {
                    s.push('\n');
                    s.push_str(&output::job_summary(&r["refresh"]));
                }
                s
            });
            Ok(if r["refresh"].is_null() { Exit::Ok } else { job_exit(&r["refresh"], *allow_partial) })
        }
        Command::History { target } => {
            let (plugin, id) = need_id(target)?;
            let q = "query($p: String!, $id: ID!) { source(plugin: $p, id: $id) { revisions(limit: 100) { revision action actor createdAt contentHash } } }";
            let data = client.run(q, json!({"p": plugin, "id": id}), timeout).await?;
            if data["source"].is_null() {
                return Err(CliError::new(
                    Exit::Failed,
                    ErrorCode::NotFound.as_str(),
                    format!("source {plugin}/{id} does not exist"),
                ));
            }
            let revs = &data["source"]["revisions"];
            let rows: Vec<Vec<String>> = revs
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        r["revision"].to_string(),
                        r["action"].as_str().unwrap_or_default().to_string(),
                        r["actor"].as_str().unwrap_or_default().to_string(),
                        relative_time(r["createdAt"].as_str()),
                        r["contentHash"].as_str().unwrap_or_default().chars().take(12).collect(),
                    ]
                })
                .collect();
            out.data(revs, || output::table(&["REVISION", "ACTION", "ACTOR", "WHEN", "HASH"], &rows));
            Ok(Exit::Ok)
        }
        Command::Jobs => {
            let q =
                "{ refreshJobs(limit: 20) { id plugin sourceId phase total completed actor startedAt finishedAt } }";
            let data = client.run(q, json!({}), timeout).await?;
            let jobs = &data["refreshJobs"];
            let rows: Vec<Vec<String>> = jobs
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    let target = match j["sourceId"].as_str() {
                        Some(s) => format!("{}/{s}", j["plugin"].as_str().unwrap_or_default()),
                        None => j["plugin"].as_str().unwrap_or_default().to_string(),
                    };
                    vec![
                        j["id"].as_str().unwrap_or_default().to_string(),
                        target,
                        j["phase"].as_str().unwrap_or_default().to_string(),
                        format!("{}/{}", j["completed"], j["total"]),
                        j["actor"].as_str().unwrap_or_default().to_string(),
                        relative_time(j["startedAt"].as_str()),
                    ]
                })
                .collect();
            out.data(jobs, || output::table(&["ID", "TARGET", "PHASE", "DONE", "ACTOR", "STARTED"], &rows));
            Ok(Exit::Ok)
        }
        Command::Job { action: Some(JobAction::Cancel { id }), .. } => {
            let q = format!("mutation($id: ID!) {{ job: cancelRefreshJob(id: $id) {{ {JOB_FIELDS} }} }}");
            let job = client.run(&q, json!({"id": id}), timeout).await?["job"].clone();
            out.data(&job, || output::job_summary(&job));
            Ok(Exit::Ok)
        }
        Command::Suspend { target } | Command::Resume { target } => {
            let (plugin, id) = need_id(target)?;
            let suspend = matches!(cli.command, Command::Suspend { .. });
            let field = if suspend { "suspendSource" } else { "resumeSource" };
            let q = format!(
                "mutation($p: String!, $id: ID!) {{ s: {field}(plugin: $p, id: $id) {{ plugin id suspended revision nextRefreshAt status {{ state entityCount }} }} }}"
            );
            let data = client.run(&q, json!({"p": plugin, "id": id}), timeout).await?;
            let s = &data["s"];
            out.data(s, || {
                let next = s["nextRefreshAt"]
                    .as_str()
                    .map_or_else(|| "not scheduled".to_string(), |t| format!("next refresh {t}"));
                match suspend {
                    true => format!(
                        "{plugin}/{id}: suspended (serving {} entities; not refreshed on its own until resumed)",
                        s["status"]["entityCount"]
                    ),
                    false => format!("{plugin}/{id}: resumed ({next})"),
                }
            });
            Ok(Exit::Ok)
        }
        Command::Job { action: None, id, watch, allow_partial } => {
            let Some(id) = id else {
                return Err(CliError::new(
                    Exit::Validation,
                    ErrorCode::ValidationFailed.as_str(),
                    "`job` needs a job id (catalogctl job ID) or `job cancel ID`".to_string(),
                ));
            };
            let q = format!("query($id: ID!) {{ refreshJob(id: $id) {{ {JOB_FIELDS} }} }}");
            let data = client.run(&q, json!({"id": id}), timeout).await?;
            let job = data["refreshJob"].clone();
            if job.is_null() {
                return Err(CliError::new(
                    Exit::Failed,
                    ErrorCode::NotFound.as_str(),
                    format!("refresh job {id} does not exist"),
                ));
            }
            let job = if *watch { follow(&client, &job, out, timeout).await? } else { job };
            out.data(&job, || output::job_summary(&job));
            Ok(if job["phase"] == "QUEUED" || job["phase"] == "RUNNING" {
                Exit::Ok
            } else {
                job_exit(&job, *allow_partial)
            })
        }
        Command::Webhook(cmd) => webhook(&client, cmd, out, timeout).await,
    }
}

async fn webhook(client: &Client, cmd: &WebhookCommand, out: &Out, timeout: Duration) -> Result<Exit, CliError> {
    let row = |w: &Value| {
        let list = |v: &Value| {
            v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or("*".into())
        };
        vec![
            w["id"].as_str().unwrap_or_default().to_string(),
            w["url"].as_str().unwrap_or_default().to_string(),
            list(&w["events"]),
            list(&w["plugins"]),
            format!(
                "{}/{}",
                w["secretRef"]["name"].as_str().unwrap_or_default(),
                w["secretRef"]["key"].as_str().unwrap_or_default()
            ),
        ]
    };
    const HEAD: [&str; 5] = ["ID", "URL", "EVENTS", "PLUGINS", "SECRET"];
    match cmd {
        WebhookCommand::List => {
            let data = client.run(&format!("{{ webhooks {{ {WEBHOOK_FIELDS} }} }}"), json!({}), timeout).await?;
            let hooks = &data["webhooks"];
            let rows: Vec<Vec<String>> = hooks.as_array().into_iter().flatten().map(row).collect();
            out.data(hooks, || output::table(&HEAD, &rows));
        }
        WebhookCommand::Create { url, events, plugins, secret } => {
            let Some((name, key)) = secret.split_once('/') else {
                return Err(CliError::new(
                    Exit::Validation,
                    ErrorCode::ValidationFailed.as_str(),
                    format!("--secret `{secret}` is not NAME/KEY (e.g. ci-hook/signing)"),
                ));
            };
            let input = json!({
                "url": url,
                "events": events.iter().map(|e| e.to_ascii_uppercase()).collect::<Vec<_>>(),
                "plugins": if plugins.is_empty() { Value::Null } else { json!(plugins) },
                "secretRef": {"name": name, "key": key},
            });
            let q = format!("mutation($i: WebhookInput!) {{ createWebhook(input: $i) {{ {WEBHOOK_FIELDS} }} }}");
            let data = client.run(&q, json!({"i": input}), timeout).await?;
            let w = &data["createWebhook"];
            out.data(w, || output::table(&HEAD, &[row(w)]));
        }
        WebhookCommand::Delete { id } => {
            let q = format!("mutation($id: ID!) {{ deleteWebhook(id: $id) {{ {WEBHOOK_FIELDS} }} }}");
            let data = client.run(&q, json!({"id": id}), timeout).await?;
            let w = &data["deleteWebhook"];
            out.data(w, || format!("deleted webhook {id} ({})", w["url"].as_str().unwrap_or_default()));
        }
        WebhookCommand::Deliveries { id, first } => {
            let q = "query { webhooks { id deliveries(first: FIRST) { totalCount nodes { id messageId eventKind plugin sourceId state attempts statusCode durationMs lastError createdAt nextAttemptAt deliveredAt } } } }"
                .replace("FIRST", &first.to_string());
            let data = client.run(&q, json!({}), timeout).await?;
            let Some(hook) = data["webhooks"].as_array().into_iter().flatten().find(|w| w["id"] == id.as_str()) else {
                return Err(CliError::new(
                    Exit::Failed,
                    ErrorCode::NotFound.as_str(),
                    format!("webhook {id} does not exist"),
                ));
            };
            let nodes = &hook["deliveries"]["nodes"];
            let rows: Vec<Vec<String>> = nodes
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let target = match d["sourceId"].as_str() {
                        Some(s) => format!("{}/{s}", d["plugin"].as_str().unwrap_or_default()),
                        None => d["plugin"].as_str().unwrap_or_default().to_string(),
                    };
                    vec![
                        d["id"].as_str().unwrap_or_default().to_string(),
                        d["eventKind"].as_str().unwrap_or("-").to_string(),
                        target,
                        d["state"].as_str().unwrap_or_default().to_string(),
                        d["attempts"].to_string(),
                        d["statusCode"].as_i64().map_or("-".into(), |c| c.to_string()),
                        relative_time(d["createdAt"].as_str()),
                        d["lastError"].as_str().unwrap_or("").chars().take(60).collect(),
                    ]
                })
                .collect();
            out.data(nodes, || {
                output::table(&["ID", "EVENT", "TARGET", "STATE", "ATTEMPTS", "STATUS", "QUEUED", "LAST ERROR"], &rows)
            });
        }
    }
    Ok(Exit::Ok)
}

async fn apply(
    client: &Client,
    src: &source_file::SourceFile,
    options: Value,
    timeout: Duration,
) -> Result<Value, CliError> {
    let q = format!(
        "mutation($p: String!, $i: SourceInput!, $o: ApplyOptions) {{ applySource(plugin: $p, input: $i, options: $o) {{ revision changed dryRun validation {{ valid warnings {{ severity message file line column field hint }} }} impact {{ toAdd toUpdate toRemove unchanged currentCount addedNames updatedNames removedNames }} source {{ plugin id revision status {{ state entityCount lastRefreshTime lastRefreshSummary lastError }} }} refresh {{ {JOB_FIELDS} }} }} }}"
    );
    client.run(&q, json!({"p": src.plugin, "i": src.input, "o": options}), timeout).await
}

/// Validation errors from apply/diff are printed like `validate` prints them.
fn annotate(e: CliError, src: &source_file::SourceFile, out: &Out) -> CliError {
    if e.exit == Exit::Validation
        && let Some(diags) = e.details["diagnostics"].as_array()
        && out.format() == Format::Table
    {
        for d in diags {
            eprintln!("{}", output::compiler_line(src, d));
        }
    }
    e
}

/// SUCCEEDED → 0; FAILED → 1 unless every non-success result is PARTIAL and partial is allowed.
fn job_exit(job: &Value, allow_partial: bool) -> Exit {
    if job["phase"] == "SUCCEEDED" {
        return Exit::Ok;
    }
    let results = job["results"].as_array().cloned().unwrap_or_default();
    let only_partial =
        !results.is_empty() && results.iter().all(|r| r["status"] == "SUCCESS" || r["status"] == "PARTIAL");
    if allow_partial && only_partial { Exit::Ok } else { Exit::Failed }
}

/// Follows a job over the refreshProgress subscription until it ends.
async fn follow(client: &Client, job: &Value, out: &Out, timeout: Duration) -> Result<Value, CliError> {
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let q = format!("subscription($id: ID!) {{ refreshProgress(jobId: $id) {{ {JOB_FIELDS} }} }}");
    let mut last = job.clone();
    let mut progress = output::Progress::new(out, job);
    let sub = client.subscribe(&q, json!({"id": id}), |data| {
        let j = &data["refreshProgress"];
        progress.update(j);
        last = j.clone();
    });
    match tokio::time::timeout(timeout, sub).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(CliError::new(
                Exit::Unreachable,
                "TIMEOUT",
                format!("refresh job {id} did not finish within {} s (--timeout)", timeout.as_secs_f64()),
            ));
        }
    }
    progress.finish();
    Ok(last)
}
