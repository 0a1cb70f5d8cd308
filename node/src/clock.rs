//! The one wall clock of the node and of the CLI. Consensus engines and the ledger take time as an
//! input; every reading of the system clock that feeds them, a timestamp or a nonce is here, so a
//! test (or a future simulated runtime) has one place to look.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before it).
#[allow(clippy::disallowed_methods)] // the process's wall clock, read in one place
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_after_2025_and_milliseconds_follow_microseconds() {
        let us = super::now_us();
        let ms = super::now_ms();
        assert!(ms >= 1_735_689_600_000, "clock before 2025: {ms}");
        assert!(ms >= us / 1_000 && ms - us / 1_000 < 1_000);
    }
}
