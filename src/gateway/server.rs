//! Assembles the pingora server from a [`Config`]: the proxy service, the admin service and the
//! Redis connector. Runs until a signal: SIGTERM = graceful (stop accepting, let in-flight
//! requests finish within the grace period), SIGINT = fast, SIGQUIT = hand the listeners to a
//! new process started with `--upgrade`.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::api::live_active;
use crate::capture::alerts::{AlertDispatcher, Enforcement};
use crate::capture::enforce::Enforcer;
use crate::capture::privacy::Privacy;
use crate::capture::session_lifecycle::{ExpiryListener, Sweeper};
use crate::capture::writer;
use crate::config::Config;
use crate::gateway::admin::AdminApp;
use crate::gateway::own_endpoints::OwnEndpoints;
use crate::gateway::proxy::Sidecar;
use crate::identity::authenticate::Authenticator;
use crate::identity::revocation::{RevocationListener, Revocations};
use crate::identity::session_id::SessionIds;
use crate::observe::access_log;
use crate::store::RedisStore;

/// Builds every service and blocks until shutdown.
pub fn run(cfg: Config, upgrade: bool) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let store = RedisStore::new(&cfg.redis_target, Duration::from_millis(cfg.redis.connect_timeout_ms), Duration::from_millis(cfg.redis.command_timeout_ms))
        .context("redis.url")?;

    let revocations = Arc::new(Revocations::new(cfg.revocation_keep()));
    // How addresses and personal fields are kept: one for the writer, the log, the API.
    let privacy = Arc::new(Privacy::new(&cfg));
    crate::store::field_cipher::install(privacy.cipher().clone());
    let auth = Arc::new(Authenticator::from_config(&cfg, store.clone(), revocations.clone()).context("building the Kratos HTTP client")?);

    let upstream = cfg
        .upstream_addr
        .to_socket_addrs()
        .with_context(|| format!("upstream.url: cannot resolve {}", cfg.upstream_addr))?
        .next()
        .with_context(|| format!("upstream.url: {} resolves to no address", cfg.upstream_addr))?;
    let mut peer = HttpPeer::new(upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_millis(cfg.upstream.connect_timeout_ms));
    peer.options.read_timeout = Some(Duration::from_millis(cfg.upstream.read_timeout_ms));
    peer.options.write_timeout = Some(Duration::from_millis(cfg.upstream.write_timeout_ms));
    peer.options.idle_timeout = Some(Duration::from_secs(cfg.upstream.idle_timeout_seconds));

    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    // The pid file's and the socket's directory: created private if missing, refused if another
    // user owns it or others may write it (someone else's `/tmp/sting-proxy-<uid>`, say).
    for (key, path) in [("server.upgrade_sock", &cfg.server.upgrade_sock), ("server.pid_file", &cfg.server.pid_file)] {
        crate::config::runtime_dir::ensure_private(crate::config::runtime_dir::parent_of(path)).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    }
    let opt = Opt { upgrade, ..Default::default() };
    let conf = ServerConf {
        threads: cfg.server.threads,
        work_stealing: cfg.server.work_stealing,
        grace_period_seconds: Some(cfg.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(cfg.server.graceful_shutdown_timeout_seconds),
        upgrade_sock: cfg.server.upgrade_sock.clone(),
        pid_file: cfg.server.pid_file.clone(),
        upstream_keepalive_pool_size: cfg.upstream.keepalive_pool_size,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server.add_service(background_service("revocation-listener", RevocationListener { store: store.clone(), revocations: revocations.clone() }));

    // Analytics: the writer and the lifecycle services, all off the request path.
    let capture = if cfg.analytics.enabled {
        let grace = Duration::from_secs(cfg.server.grace_period_seconds);
        // Its own connection: batches may take longer than a request-path command may, and the
        // writer drives it from its own runtime (see `writer::Writer::start`).
        let analytics_store =
            RedisStore::new(&cfg.redis_target, Duration::from_millis(cfg.redis.connect_timeout_ms), writer::BATCH_TIMEOUT).context("redis.url")?.exactly_once();
        let (handle, writer) = writer::channel(&cfg.analytics, &cfg.security, cfg.session.lifetime_secs(), analytics_store.clone(), grace, privacy.clone())
            .context("analytics")?;
        server.add_service(background_service("analytics-writer", writer.pinned_to(cfg.server.analytics_cpu)));
        if cfg.analytics.keyspace_notifications {
            server.add_service(background_service(
                "session-expiry-listener",
                ExpiryListener {
                    store: store.clone(),
                    key_prefix: cfg.session.key_prefix.clone(),
                    ids: SessionIds::for_session(&cfg.session),
                    capture: handle.clone(),
                },
            ));
        }
        if cfg.security.anomalies {
            let (revoke, step_up) = (cfg.security.revoking(), cfg.security.stepping_up());
            let enforce = (!revoke.is_empty() || !step_up.is_empty()).then(|| Enforcement {
                revoke,
                step_up,
                enforcer: Enforcer::new(&cfg),
                store: analytics_store.clone(),
            });
            let alerts = AlertDispatcher::new(analytics_store.clone(), cfg.security.webhook_secret.expose(), cfg.analytics.retention_days * 86_400, enforce)
                .context("building the alert HTTP client")?;
            server.add_service(background_service("alert-dispatcher", alerts));
        }
        server.add_service(background_service(
            "session-sweeper",
            Sweeper {
                store: analytics_store,
                key_prefix: cfg.session.app_key_prefix_of_published().map(str::to_owned),
                interval: Duration::from_secs(cfg.analytics.sweep_interval_seconds),
                idle_timeout: Duration::from_secs(cfg.analytics.idle_timeout_seconds),
                anonymous_ttl_secs: cfg.session.lifetime_secs(),
                capture: handle.clone(),
                instance: uuid::Uuid::new_v4().simple().to_string(),
            },
        ));
        Some(handle)
    } else {
        None
    };

    crate::observe::metrics::init(cfg.server.metrics_max_routes);
    let access_log = match cfg.server.access_log.as_str() {
        "off" => None,
        format => {
            let format = if format == "combined" { access_log::Format::Combined } else { access_log::Format::Json };
            let geo = if cfg.analytics.geoip_database.is_empty() {
                None
            } else {
                Some(crate::capture::geo::GeoDb::open(std::path::Path::new(&cfg.analytics.geoip_database)).context("analytics.geoip_database")?)
            };
            let handle = access_log::start(format, &cfg.server.access_log_path, crate::capture::log_record::log_enricher(geo, privacy.clone()))
                .with_context(|| format!("server.access_log_path: cannot open {:?}", cfg.server.access_log_path))?;
            server.add_service(background_service("access-log-reopen", ReopenOnHangup));
            Some(handle)
        }
    };
    let live = if cfg.analytics.enabled {
        let (feed, poller) = live_active::channel(store.clone());
        server.add_service(background_service("live-active-sessions", poller));
        Some(feed)
    } else {
        None
    };
    let own = OwnEndpoints::new(&cfg, auth.clone(), store.clone(), live);
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, Sidecar::new(cfg.clone(), peer, auth, capture, own, access_log)?, "sting-proxy");
    proxy.add_tcp(&cfg.listen.to_string());
    if cfg.server.h2c {
        if let Some(app) = proxy.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            app.server_options = Some(options);
        }
    }

    let mut admin = Service::new("sting-admin".to_string(), AdminApp::new(store.clone(), revocations));
    admin.add_tcp(&cfg.admin_listen.to_string());

    server.add_service(background_service("redis-connector", RedisConnector(store)));
    server.add_service(proxy);
    server.add_service(admin);
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, upstream = %cfg.upstream_addr, "sting-proxy starting");
    server.run_forever();
}

/// Connects the shared Redis handle in the background, so start-up never waits on Redis.
struct RedisConnector(RedisStore);

#[async_trait]
impl BackgroundService for RedisConnector {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.0.connect_forever() => {}
            _ = shutdown.changed() => return,
        }
        // The connection's driver task lives on this service's runtime: keep it until shutdown.
        let _ = shutdown.changed().await;
    }
}

/// SIGHUP asks the access log to reopen its file (after logrotate moved it).
struct ReopenOnHangup;

#[async_trait]
impl BackgroundService for ReopenOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the access log will not be reopened");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    access_log::REOPEN.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("SIGHUP: reopening the access log");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
