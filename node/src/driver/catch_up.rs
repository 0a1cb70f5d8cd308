//! Catch-up bookkeeping: whether the node is behind its peers, since when, and progress logs.

use crate::status::Status;

/// A node this far behind its peers counts as catching up (not ready); smaller gaps are the normal
/// lag of a node that has not yet seen the last commit.
pub const CATCH_UP_GAP: u64 = 8;
/// Catch-up progress is logged at most this often.
const CATCH_UP_LOG_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy)]
struct Progress {
    start_height: u64,
    start_ms: u64,
    logged_ms: u64,
}

/// Where a catch-up started and when, and when its progress was last logged.
#[derive(Debug, Default)]
pub struct CatchUp {
    progress: Option<Progress>,
}

impl CatchUp {
    /// Peers are at `target` or above while this node is below: it is catching up (not ready)
    /// until it reaches `target`.
    pub fn behind(&mut self, status: &mut Status, target: u64, now_ms: u64) {
        let height = status.height;
        if target <= height {
            return;
        }
        let (from, old_target) = status.catching_up.unwrap_or((height + 1, 0));
        if self.progress.is_none() {
            self.progress = Some(Progress {
                start_height: height,
                start_ms: now_ms,
                logged_ms: now_ms,
            });
        }
        status.catching_up = Some((from, old_target.max(target)));
    }

    /// Ends a catch-up: logs how many blocks it took and how long.
    pub fn finish(&mut self, status: &mut Status, now_ms: u64) {
        let height = status.height;
        let (blocks, seconds) = self.progress.take().map_or((0, 0.0), |c| {
            let ms = now_ms.saturating_sub(c.start_ms);
            (height.saturating_sub(c.start_height), ms as f64 / 1_000.0)
        });
        tracing::info!(height, blocks, seconds, "caught up");
        status.catching_up = None;
    }

    /// After a commit: ends the catch-up once its target is reached.
    pub fn committed(&mut self, status: &mut Status, now_ms: u64) {
        if status
            .catching_up
            .is_some_and(|(_, target)| status.height >= target)
        {
            self.finish(status, now_ms);
        }
    }

    /// Logs progress (height, target, percentage, rate, time left) at most every
    /// [`CATCH_UP_LOG_MS`]; a catch-up shorter than that logs only its end ("caught up").
    pub fn log(&mut self, status: &Status, now_ms: u64) {
        let (Some((_, target)), Some(progress)) = (status.catching_up, self.progress.as_mut())
        else {
            return;
        };
        if now_ms < progress.logged_ms + CATCH_UP_LOG_MS {
            return;
        }
        progress.logged_ms = now_ms;
        let height = status.height;
        let done = height.saturating_sub(progress.start_height);
        let total = target.saturating_sub(progress.start_height).max(1);
        let seconds = now_ms.saturating_sub(progress.start_ms).max(1) as f64 / 1_000.0;
        let rate = done as f64 / seconds;
        let left = target.saturating_sub(height);
        tracing::info!(
            height,
            target,
            percent = (done * 100 / total).min(100),
            blocks_per_sec = format!("{rate:.0}"),
            eta_secs = if rate > 0.0 {
                (left as f64 / rate).ceil() as u64
            } else {
                0
            },
            "catching up"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_ends_at_its_highest_target() {
        let mut status = Status {
            height: 3,
            ..Status::default()
        };
        let mut c = CatchUp::default();
        c.behind(&mut status, 2, 0);
        assert_eq!(
            status.catching_up, None,
            "a target below the tip is no catch-up"
        );
        c.behind(&mut status, 20, 0);
        c.behind(&mut status, 30, 5);
        assert_eq!(status.catching_up, Some((4, 30)));
        status.height = 25;
        c.committed(&mut status, 10);
        assert_eq!(status.catching_up, Some((4, 30)));
        status.height = 30;
        c.committed(&mut status, 20);
        assert_eq!(status.catching_up, None);
    }
}
