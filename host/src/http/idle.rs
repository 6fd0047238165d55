//! Idle HTTP connections give their slot back. hyper bounds the wait for a request's header
//! on HTTP/1.1 only, and not before the auto builder has read enough to tell the versions
//! apart; an HTTP/2 connection with no stream open is never closed, whatever it does (any
//! live client answers pings). So each connection is watched here: once no request has been
//! in progress for the idle timeout, it is shut down gracefully (GOAWAY on HTTP/2). Bytes do
//! not count as activity, so neither pings nor a header that trickles in keep it open.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Requests in progress on one connection, and when the last of them ended.
pub struct Activity {
    state: Mutex<(usize, Instant)>,
}

/// One request in progress; its end starts the idle clock again.
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity { state: Mutex::new((0, Instant::now())) })
    }

    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        InProgress(self.clone())
    }

    /// How long until the connection has been idle for `idle` (zero: it has), or `None` while
    /// a request is in progress.
    fn idle_in(&self, idle: Duration) -> Option<Duration> {
        let (in_progress, since) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        (in_progress == 0).then(|| idle.saturating_sub(since.elapsed()))
    }
}

/// Drive `connection` to its end, or shut it down (`shutdown`, then at most 5 s to finish)
/// once `activity` has been idle for `idle`.
pub async fn serve_until_idle<C, F>(connection: C, activity: &Activity, idle: Duration, shutdown: F)
where
    C: Future,
    F: Fn(Pin<&mut C>),
{
    let mut connection = std::pin::pin!(connection);
    loop {
        let wait = activity.idle_in(idle).unwrap_or(idle);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep(wait) => {
                if activity.idle_in(idle) == Some(Duration::ZERO) {
                    shutdown(connection.as_mut());
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connections_end_busy_ones_do_not() {
        let idle = Duration::from_millis(100);
        let activity = Activity::new();
        let started = Instant::now();
        let shut = std::sync::atomic::AtomicBool::new(false);
        serve_until_idle(std::future::pending::<()>(), &activity, idle, |_| shut.store(true, std::sync::atomic::Ordering::Relaxed)).await;
        assert!(started.elapsed() >= idle && shut.into_inner(), "shut down once idle");

        let busy = activity.begin();
        let ended = tokio::time::timeout(idle * 5, serve_until_idle(std::future::pending::<()>(), &activity, idle, |_| {})).await;
        assert!(ended.is_err(), "a request in progress keeps the connection");
        drop(busy);
        let started = Instant::now();
        serve_until_idle(std::future::pending::<()>(), &activity, idle, |_| {}).await;
        assert!(started.elapsed() >= idle / 2, "the idle time counts from the end of the last request");
    }
}
