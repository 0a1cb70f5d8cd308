//! Logs through `tracing`: human-readable by default, JSON on request. Logs go to stderr so that
//! command output on stdout stays machine-readable.
//!
//! A node takes its format and level from `[log]` in its config; `--log-format` (or
//! `MEDCHAIN_LOG_FORMAT`) overrides the format and `MEDCHAIN_LOG` (an `EnvFilter` directive such
//! as `info` or `medchain_node=debug`) overrides the level, so an operator can turn on debug for
//! one run without editing the file. Other commands log at `info` unless `MEDCHAIN_LOG` says
//! otherwise.

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the process's subscriber. `level` is the configured filter, used unless
/// `MEDCHAIN_LOG` is set; an invalid `MEDCHAIN_LOG` falls back to `level` with a warning.
pub fn init(format: LogFormat, level: &str) {
    let from_env = std::env::var("MEDCHAIN_LOG").ok();
    // `level` was validated with the config; "info" covers the commands that have none.
    let configured = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, bad_env) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (configured(), Some(e)),
        None => (configured(), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(format == LogFormat::Human && std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, level, "MEDCHAIN_LOG is not a log filter; using the configured level");
    }
}
