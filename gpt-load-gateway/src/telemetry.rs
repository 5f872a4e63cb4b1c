//! Structured logs (`LOG_LEVEL`, `LOG_FORMAT`, `LOG_ENABLE_FILE`, `LOG_FILE_PATH`) and the
//! Prometheus recorder behind `/metrics`.
//!
//! No secret is ever passed to a log call: keys appear only masked, request URIs are logged
//! without their query, and headers are never logged.

use std::{fs::OpenOptions, io, sync::Arc, time::Duration};

use gpt_load_tower::telemetry;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt::writer::MakeWriterExt, prelude::*};

use crate::config::log::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` directives refine `LOG_LEVEL` when set.
pub(crate) fn init_logging(config: &LogConfig) -> io::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(config.level.level_filter().into())
        .from_env_lossy()
        // Per-query SQL logging of diesel/tokio-postgres is noise at debug.
        .add_directive("tokio_postgres=warn".parse().expect("static directive"))
        .add_directive("mysql_async=warn".parse().expect("static directive"));
    let file = if config.enable_file {
        if let Some(dir) = config.file_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Some(Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.file_path)?,
        ))
    } else {
        None
    };
    let writer = io::stdout.and(move || -> Box<dyn io::Write> {
        match &file {
            Some(file) => Box::new(SharedFile(file.clone())),
            None => Box::new(io::sink()),
        }
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    // A second initialisation (tests start several gateways in one process) keeps the first.
    let _ = match config.format {
        LogFormat::Json => registry.with(layer.json().with_ansi(false)).try_init(),
        LogFormat::Text => registry.with(layer.with_ansi(!config.enable_file)).try_init(),
    };
    Ok(())
}

struct SharedFile(Arc<std::fs::File>);

impl io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ];
            // The gateway's own overhead is well below a millisecond.
            let overhead = [
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("static buckets")
                .set_buckets_for_metric(Matcher::Full(telemetry::OVERHEAD.to_owned()), &overhead)
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was already installed");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}
