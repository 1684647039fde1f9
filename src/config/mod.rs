//! What the operator declared: one TOML file plus environment overrides, validated into a
//! [`Config`] whose errors name the key and the file, and the pure matchers compiled from it
//! (path [`rules`] and [`route_template`]s).
//!
//! May use: `observe` (defaults that live beside the metric they bound).

pub mod cpu_affinity;
pub mod funnel;
pub mod privacy;
pub mod redis_target;
pub mod route_template;
pub mod rules;
pub mod runtime_dir;
mod secret;
pub mod security;
mod settings;

pub use secret::Secret;
pub use settings::*;
