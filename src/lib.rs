//! sting-proxy: a pingora reverse-proxy sidecar for Flask apps whose sessions live in Redis
//! (Flask-Session, signed cookies) and whose users log in through Ory Kratos.
//!
//! A map of the crate, in the order a request meets it:
//!
//! - [`config`]: one TOML file + environment overrides → a validated [`config::Config`].
//! - [`server`]: assembles the pingora server (proxy, admin, background services).
//! - [`proxy`]: the `ProxyHttp` phases; thin, delegating to the modules below.
//! - [`client_ip`]: who the client is, trusting `X-Forwarded-For` only from configured proxies.
//! - [`cookies`]: reading `Cookie`, noticing cleared cookies in `Set-Cookie`.
//! - [`authenticate`]: identity, cheapest layer first: Flask session, then Kratos.
//! - [`flask_cookie`]: Flask-Session's signer (HMAC-SHA1, `flask-session` salt, key rotation).
//! - [`session_lookup`]: sid → identity via an in-process cache and one Redis `GET`.
//! - [`session_value`]: decoding stored sessions (pickle via [`pickle_fields`], msgpack, JSON).
//! - [`kratos`]: whoami with caching, single-flight ([`single_flight`]), a per-client limit on
//!   uncached lookups ([`lookup_limit`]) and a [`circuit_breaker`].
//! - [`rules`]: path-prefix authorisation rules.
//! - [`headers`]: identity header names; stripping forged ones.
//! - [`local_response`]: answers the proxy writes itself.
//! - [`access_log`]: one line per request (JSON or combined), written by a background thread.
//! - [`own_endpoints`]: the API and the [`dashboard`] (assets embedded), with the live
//!   active-sessions stream fed by [`live_active`].
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics` ([`metrics`]) on the admin listener.
//! - [`analytics_api`]: the analytics REST API the proxy answers itself (admin or token only);
//!   [`analytics_queries`]: the reads behind it, shared with the ops CLI.
//! - [`store`]: the shared Redis handle; [`keys`]: every Redis key name.
//! - [`check`]: the `check` command (config, Redis and Kratos diagnostics).
//! - [`ops_cli`]: the ops commands (`sessions`, `stats`, `top`, `cleanup`, `validate` via
//!   [`integrity`]), printed with [`terminal`].
//!
//! Analytics, off the request path:
//!
//! - [`request_event`]: the compact record the `logging` phase hands over.
//! - [`capture`]: the bounded queue and the batching writer (one atomic pipeline per batch).
//! - [`route_template`]: raw path → bounded route template; assets vs page views.
//! - [`device`]: User-Agent → browser, OS and device kind (desktop/mobile/tablet/bot).
//! - [`geo`]: client IP → country and city from a MaxMind `.mmdb` file.
//! - [`aggregate`]: a batch of events → summed Redis writes.
//! - [`session_scripts`]: the Lua scripts that start, touch and end sessions exactly once.
//! - [`session_lifecycle`]: expiry via keyspace notifications, and the sweep.

pub mod access_log;
pub mod admin;
pub mod aggregate;
pub mod analytics_api;
pub mod analytics_queries;
pub mod authenticate;
pub mod capture;
pub mod check;
pub mod circuit_breaker;
pub mod client_ip;
pub mod config;
pub mod cookies;
pub mod dashboard;
pub mod device;
pub mod flask_cookie;
pub mod geo;
pub mod headers;
pub mod identity;
pub mod integrity;
pub mod keys;
pub mod kratos;
pub mod live_active;
pub mod local_response;
pub mod lookup_limit;
pub mod metrics;
pub mod ops_cli;
pub mod own_endpoints;
pub mod pickle_fields;
pub mod proxy;
pub mod request_event;
pub mod route_template;
pub mod rules;
pub mod server;
pub mod session_lifecycle;
pub mod session_lookup;
pub mod session_scripts;
pub mod session_value;
pub mod single_flight;
pub mod store;
pub mod terminal;
