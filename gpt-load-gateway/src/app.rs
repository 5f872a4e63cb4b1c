//! Start-up, the HTTP routes, background jobs and graceful shutdown.
//!
//! Start: adopt or check the database, connect and migrate; seed and load the settings; load the
//! groups and keys into the [`Registry`] and apply the bootstrap file through it; start the
//! write-behind tasks (request logs, key states) and the jobs (validation, retention, gauges,
//! the settings watcher); serve `/proxy/{group}/…`,
//! the admin API under `/api`, `/health`, `/health/ready`, `/metrics` and, for every other path,
//! the embedded web console (`console`).
//!
//! Shutdown (SIGTERM/SIGINT, or [`Running::shutdown`]): stop accepting, let in-flight requests
//! and streams finish for up to `SERVER_GRACEFUL_SHUTDOWN_TIMEOUT`, then stop the jobs and flush
//! the request logs and key states.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{any, any_service, get},
};
use gpt_load_tower::{body::BodyBudget, keys::KeyId, limit::ConcurrencyLimitLayer, log::ChannelSink};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::ServiceBuilder;

use crate::{
    bootstrap::Bootstrap,
    cluster::Cluster,
    config::{Config, database::DatabaseDsn},
    console::Console,
    crypto::{KeyCipher, proxy_keys},
    db::Db,
    jobs::{
        self,
        log_writer::{LogWriter, WriterSummary},
    },
    proxy::{
        front_door::{self, FrontDoor},
        stack::{ProxyParts, ProxyService, proxy_stack},
    },
    registry::{
        Registry,
        persist::{self, PersistSummary},
    },
    repo::reencrypt,
    settings::{self, SettingsStore},
    telemetry,
};

/// How often background jobs look for work; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobIntervals {
    pub(crate) validation_tick: Duration,
    pub(crate) retention: Duration,
    pub(crate) gauges: Duration,
    /// How often the access keys' token totals are read from `usage_hourly`.
    pub(crate) access_quotas: Duration,
}

impl Default for JobIntervals {
    fn default() -> Self {
        Self {
            validation_tick: Duration::from_secs(60),
            retention: Duration::from_secs(3600),
            gauges: Duration::from_secs(5),
            access_quotas: Duration::from_secs(10),
        }
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
struct AppState {
    db: Db,
    metrics: PrometheusHandle,
    started: Instant,
}

/// A gateway that is serving.
pub(crate) struct Running {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the in-process tests reach the gateway here")
    )]
    pub(crate) addr: SocketAddr,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the in-process tests reach the gateway here")
    )]
    pub(crate) registry: Registry,
    pub(crate) limit: ConcurrencyLimitLayer,
    shutdown: watch::Sender<bool>,
    flush: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    log_writer: JoinHandle<WriterSummary>,
    persister: JoinHandle<PersistSummary>,
    jobs: Vec<JoinHandle<()>>,
    cluster_tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// Connects to the configured database.
pub(crate) async fn connect(dsn: &DatabaseDsn) -> anyhow::Result<Db> {
    // A backend left out of the build (its cargo feature off) is named, not a connection error.
    let db = match dsn {
        #[cfg(feature = "sqlite")]
        DatabaseDsn::Sqlite { path } => Db::sqlite(path).await?,
        #[cfg(feature = "postgres")]
        DatabaseDsn::Postgres { url } => Db::postgres(url, 16).await?,
        #[cfg(feature = "mysql")]
        DatabaseDsn::Mysql { url } => Db::mysql(url, 16).await?,
        #[allow(unreachable_patterns, reason = "reached only in builds without a backend")]
        other => anyhow::bail!(other.not_built_in()),
    };
    Ok(db)
}

/// Encrypts the proxy key lists stored in plain text while encryption is on (written before
/// proxy keys were encrypted), in one transaction; returns how many. Lists that do not decrypt
/// are left alone: the catalog accepts none of their keys and says so.
pub(crate) async fn seal_plain_proxy_keys(db: &Db, cipher: &KeyCipher) -> anyhow::Result<usize> {
    let seal = |stored: &str| {
        Ok::<_, std::convert::Infallible>(
            proxy_keys::needs_sealing(cipher, stored).then(|| proxy_keys::seal(cipher, stored)),
        )
    };
    Ok(reencrypt::rewrite_proxy_key_lists(db, &seal).await?)
}

/// Refuses a gpt-load database not adopted yet (for followers and the other subcommands).
pub(crate) async fn ensure_adopted(dsn: &DatabaseDsn) -> anyhow::Result<()> {
    let owned = dsn.clone();
    tokio::task::spawn_blocking(move || crate::gpt_load::adopt::ensure_adopted(&owned))
        .await
        .context("checking for a gpt-load database")?
        .with_context(|| format!("database {dsn}"))?;
    Ok(())
}

/// Converts a gpt-load database in place when `DATABASE_DSN` points at one (docs/MIGRATING.md).
async fn adopt_gpt_load(config: &Config, auth_key: &str) -> anyhow::Result<()> {
    use crate::gpt_load::adopt::{self, AdoptOptions, Adoption};
    let dsn = config.database.dsn.clone();
    let options = AdoptOptions {
        allowed_on_servers: config.database.adopt_gpt_load,
        encryption_key: config.auth.encryption_key.as_ref().map(|k| k.expose().to_owned()),
        auth_key: Some(auth_key.to_owned()),
    };
    let adoption = tokio::task::spawn_blocking(move || {
        adopt::adopt(&dsn, &options, &mut crate::gpt_load::progress::Logged::default())
    })
    .await
    .context("adopting a gpt-load database")?
    .with_context(|| format!("database {}", config.database.dsn))?;
    if let Adoption::Adopted { summary, backup } = adoption {
        if let Some(backup) = backup {
            tracing::info!(backup = %backup.display(), "the gpt-load database before adoption is kept here");
        }
        for (table, rows) in &summary.copied {
            tracing::info!(table, rows, "adopted from gpt-load");
        }
        for (reason, rows) in &summary.skipped {
            tracing::warn!(rows, "not adopted: {reason}");
        }
        for (what, rows) in &summary.repaired {
            tracing::warn!(rows, "repaired while adopting: {what}");
        }
        for warning in &summary.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!("gpt-load database adopted: it is now this gateway's database");
    }
    Ok(())
}

/// Starts the gateway on `listener`: each step below is one function.
pub(crate) async fn start(
    config: Config,
    auth_key: &str,
    listener: TcpListener,
    intervals: JobIntervals,
) -> anyhow::Result<Running> {
    // Only the leader changes the schema, seeds the settings and applies the bootstrap file: a
    // single node unless `IS_SLAVE=true`, in a cluster the holder of the lease.
    let cluster = Cluster::join(&config.cluster, listener.local_addr()?).await?;
    let leader = cluster.is_leader();
    prepare_database(&config, auth_key, leader).await?;
    let db = connect(&config.database.dsn)
        .await
        .with_context(|| format!("database {}", config.database.dsn))?;
    migrate(&cluster, &db).await?;
    let cipher = KeyCipher::from_password(config.auth.encryption_key.as_ref().map(|k| k.expose()));
    let settings = open_settings(&config, &db, &cipher, leader).await?;
    let (registry, key_events) = Registry::new(db.clone(), cipher, settings)?;
    cluster.subscribe(&registry).await;
    let loaded = registry.load_all().await?;
    tracing::info!(
        groups = loaded.groups,
        keys = loaded.keys,
        "groups and keys loaded"
    );
    if leader {
        apply_bootstrap(&config, &registry).await?;
    }

    // Two phases: `stopping` ends the server and the jobs; `flushing` ends the write-behind tasks
    // once every in-flight request (and the final log record of every stream) is done.
    let (shutdown, stopping) = watch::channel(false);
    let (flush, flushing) = watch::channel(false);
    let persister = tokio::spawn(persist::run(db.clone(), key_events, flushing.clone()));
    let (log_sink, log_writer) = spawn_log_writer(&registry, flushing);
    let limit = ConcurrencyLimitLayer::new(config.server.max_concurrent_requests.get());
    let proxy = proxy_stack(ProxyParts {
        catalog: registry.catalog().clone(),
        pool: registry.proxy_pool().clone(),
        limit: limit.clone(),
        log_sink,
        client: registry.client().clone(),
        trusted_proxies: config.server.trusted_proxies.clone(),
        max_body: config.server.max_request_body.get(),
        body_budget: BodyBudget::new(config.server.max_inflight_body.get()),
    });
    let jobs = spawn_jobs(&registry, &cluster, intervals, &stopping);
    let cluster_tasks = cluster.run(&registry, &stopping);
    let router = routes(&config, &registry, &cluster, auth_key, proxy.clone());
    // CORS, when on, answers for every path, the proxy's included.
    let app = ServiceBuilder::new()
        .option_layer(crate::cors::layer(&config.cors))
        .service(FrontDoor::new(proxy, router));
    let addr = listener.local_addr()?;
    let server = tokio::spawn(crate::server::serve(
        listener,
        app,
        crate::server::ConnectionTimeouts::of(&config.server),
        stopping,
    ));
    tracing::info!(%addr, backend = %db.backend(), "gateway listening");
    Ok(Running {
        addr,
        registry,
        limit,
        shutdown,
        flush,
        server,
        log_writer,
        persister,
        jobs,
        cluster_tasks,
        grace: config.server.graceful_shutdown_timeout,
    })
}

/// Adopts a gpt-load database (the leader) or refuses one not adopted yet (a follower, which
/// never converts a database).
async fn prepare_database(config: &Config, auth_key: &str, leader: bool) -> anyhow::Result<()> {
    if leader {
        adopt_gpt_load(config, auth_key).await
    } else {
        ensure_adopted(&config.database.dsn).await
    }
}

/// Runs the migrations not applied yet (the leader), or waits for them (a follower).
async fn migrate(cluster: &Cluster, db: &Db) -> anyhow::Result<()> {
    let migrated = cluster.migrate(db).await?;
    if migrated > 0 {
        tracing::info!(migrations = migrated, backend = %db.backend(), "database migrated");
    }
    Ok(())
}

/// The live settings. The leader first encrypts proxy key lists stored in plain text, seeds the
/// missing rows and, on first start, the `stream_idle_timeout` setting from
/// `STREAM_IDLE_TIMEOUT` (afterwards the setting, per group and changeable at run time, governs).
async fn open_settings(
    config: &Config,
    db: &Db,
    cipher: &KeyCipher,
    leader: bool,
) -> anyhow::Result<Arc<SettingsStore>> {
    if !leader {
        return Ok(Arc::new(SettingsStore::open(db, cipher.clone()).await?));
    }
    let sealed = seal_plain_proxy_keys(db, cipher).await?;
    if sealed > 0 {
        tracing::info!(lists = sealed, "plain text proxy key lists encrypted");
    }
    let first_start = !crate::repo::settings::list(db)
        .await?
        .iter()
        .any(|r| r.setting_key == "stream_idle_timeout");
    // The first global proxy key is a new random one, not `AUTH_KEY` (as in gpt-load): the admin
    // key never reaches the database.
    let first_proxy_key = crate::config::auth::generate_key().context("generating the first proxy key")?;
    let host = config.server.addr.ip().to_string();
    settings::seed(db, cipher, &first_proxy_key, &host, config.server.addr.port()).await?;
    let settings = Arc::new(SettingsStore::open(db, cipher.clone()).await?);
    if let (true, Some(idle)) = (first_start, config.server.stream_idle_timeout) {
        let mut update = serde_json::Map::new();
        update.insert("stream_idle_timeout".to_owned(), json!(idle.as_secs().max(1)));
        settings
            .update(db, &update)
            .await
            .map_err(|e| anyhow::anyhow!("STREAM_IDLE_TIMEOUT: {e}"))?;
    }
    Ok(settings)
}

/// Creates the groups and keys of `GPT_LOAD_BOOTSTRAP` that do not exist yet.
async fn apply_bootstrap(config: &Config, registry: &Registry) -> anyhow::Result<()> {
    if let Some(path) = &config.bootstrap {
        let (groups, keys) = Bootstrap::read(path)?.apply(registry).await?;
        tracing::info!(groups, keys, "bootstrap applied");
    }
    Ok(())
}

/// The request log's channel and its batching writer, which stores each record with its group's
/// id and its key's stored value and hash.
fn spawn_log_writer(
    registry: &Registry,
    flushing: watch::Receiver<bool>,
) -> (ChannelSink, JoinHandle<WriterSummary>) {
    let (log_sink, records) = ChannelSink::new(65_536);
    let group_ids = {
        let catalog = registry.catalog().clone();
        Arc::new(move |name: &str| catalog.group_id(name)) as jobs::log_writer::GroupIds
    };
    let key_columns = {
        let (pool, cipher) = (registry.pool().clone(), registry.cipher().clone());
        Arc::new(move |group: &str, id: KeyId| {
            let slot = pool.get(group, id)?;
            let plain = slot.secret().expose();
            Some((cipher.encrypt(plain), cipher.hash(plain)))
        }) as jobs::log_writer::KeyColumns
    };
    let writer = LogWriter::new(registry.db().clone(), records, group_ids, key_columns)
        .write_interval_from(registry.settings().subscribe())
        .shutdown_on(flushing)
        .run();
    (log_sink, tokio::spawn(writer))
}

/// The background jobs: gauges and the access keys' token totals everywhere; key validation and log retention while this node
/// leads; and the settings watcher, which applies every settings change to the groups' policies.
fn spawn_jobs(
    registry: &Registry,
    cluster: &Cluster,
    intervals: JobIntervals,
    stopping: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut jobs = vec![tokio::spawn(jobs::gauges::run(
        registry.pool().clone(),
        intervals.gauges,
        stopping.clone(),
    ))];
    jobs.push(tokio::spawn(jobs::validate::run(
        registry.clone(),
        cluster.leadership(),
        intervals.validation_tick,
        stopping.clone(),
    )));
    jobs.push(tokio::spawn(jobs::retention::run(
        registry.db().clone(),
        registry.settings().clone(),
        cluster.leadership(),
        intervals.retention,
        stopping.clone(),
    )));
    jobs.push(tokio::spawn(jobs::access_quotas::run(
        registry.db().clone(),
        registry.catalog().proxy_keys.access.clone(),
        intervals.access_quotas,
        stopping.clone(),
    )));
    jobs.push(tokio::spawn(watch_settings(registry.clone(), stopping.clone())));
    jobs
}

/// Applies settings changes made outside the registry (a reload from the database) to the
/// groups' policies and the proxy key table.
async fn watch_settings(registry: Registry, mut stopping: watch::Receiver<bool>) {
    let mut changes = registry.settings().subscribe();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
        }
        registry.apply_settings();
    }
}

/// `/proxy/{group}/…`, the admin API under `/api`, `/health`, `/health/ready`, `/metrics` and,
/// for every other path, the embedded web console. The proxy's paths reach `proxy` without the
/// router ([`FrontDoor`]); the router keeps them so that the two agree on every path.
fn routes(
    config: &Config,
    registry: &Registry,
    cluster: &Cluster,
    auth_key: &str,
    proxy: ProxyService,
) -> Router {
    let admin = crate::admin::AdminState::new(
        registry.clone(),
        cluster.clone(),
        gpt_load_tower::secret::ApiKey::new(auth_key),
        Arc::new(config.server.trusted_proxies.clone()),
    );
    let state = AppState {
        db: registry.db().clone(),
        metrics: telemetry::prometheus(),
        started: Instant::now(),
    };
    let console = Console::for_app();
    if console.is_built() {
        tracing::debug!(files = console.len(), "web console embedded");
    } else {
        tracing::warn!(
            "this binary was built without the web console: / shows how to build it (cd web-console && npm ci && npm run build, then rebuild)"
        );
    }
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route_service(front_door::PROXY_ROUTES[0], any_service(proxy.clone()))
        .route_service(front_door::PROXY_ROUTES[1], any_service(proxy))
        // The web console, with SPA fallback; unmatched `/api*` and `/proxy*` paths get a JSON 404.
        .fallback(move |req: axum::extract::Request| async move {
            console.respond(req.method(), req.uri().path(), req.headers())
        })
        .with_state(state)
        .route(
            front_door::INTEGRATION_INFO_ROUTE,
            get(crate::admin::group_integration_info).with_state(admin.clone()),
        )
        // A nested router's fallback only sees paths below `/api/`; these two are under `/api` too.
        .route("/api", any(crate::admin::unknown_route))
        .route("/api/", any(crate::admin::unknown_route))
        .nest("/api", crate::admin::router(admin))
}

/// What shutdown flushed (the process logs it; tests assert it).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "logged by `shutdown`, asserted by the tests")
)]
pub(crate) struct ShutdownSummary {
    pub(crate) logs: WriterSummary,
    pub(crate) keys: PersistSummary,
    /// Whether in-flight requests all finished within the grace period.
    pub(crate) drained: bool,
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to the grace period), then stops the jobs
    /// and flushes request logs and key states.
    pub(crate) async fn shutdown(self) -> ShutdownSummary {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut server = self.server;
        let mut drained = tokio::time::timeout_at(deadline, &mut server).await.is_ok();
        // The server's future can finish a moment before its connections drop their last response
        // bodies; a body's end is what emits its final log record and releases its permit.
        while drained && self.limit.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                drained = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !drained {
            tracing::warn!(grace = ?self.grace, "in-flight requests did not finish in time; closing them");
            server.abort();
        }
        for job in self.jobs {
            job.abort();
        }
        // The cluster's tasks saw `stopping`: give them a moment to hand the lease over and
        // leave the node list.
        for task in self.cluster_tasks {
            if tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                tracing::warn!("a cluster task did not stop in time");
            }
        }
        let _ = self.flush.send(true);
        let logs = self
            .log_writer
            .await
            .unwrap_or(WriterSummary { written: 0, lost: 0 });
        let keys = self.persister.await.unwrap_or_default();
        tracing::info!(
            logs_written = logs.written,
            logs_lost = logs.lost,
            key_updates = keys.written,
            "gateway stopped"
        );
        ShutdownSummary { logs, keys, drained }
    }
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.db.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(err) => err.to_string(),
    };
    Json(json!({
        "status": "ok",
        "database": database,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": err.to_string()})),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Resolves when SIGINT or SIGTERM arrives.
pub(crate) async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
