//! The `log` crate's records (the core logs through it) written to Envoy's log, under
//! Envoy's `dynamic_modules` logger, at Envoy's current level.

use crate::abi::{
    envoy_dynamic_module_callback_log_enabled, envoy_dynamic_module_callback_log_v2, LogLevel,
    ModuleBuffer,
};

struct EnvoyLog;

static LOGGER: EnvoyLog = EnvoyLog;

fn level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::ERROR,
        log::Level::Warn => LogLevel::WARN,
        log::Level::Info => LogLevel::INFO,
        log::Level::Debug => LogLevel::DEBUG,
        log::Level::Trace => LogLevel::TRACE,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: a plain query, callable from any thread.
        unsafe { envoy_dynamic_module_callback_log_enabled(level(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let file = record.file().unwrap_or_default();
        // SAFETY: the buffers outlive the call; Envoy copies the message.
        unsafe {
            envoy_dynamic_module_callback_log_v2(
                level(record.level()),
                ModuleBuffer::from_bytes(message.as_bytes()),
                ModuleBuffer::from_bytes(file.as_bytes()),
                record.line().unwrap_or(0),
            )
        }
    }

    fn flush(&self) {}
}

/// Routes `log` to Envoy (once per process; later calls do nothing).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}
