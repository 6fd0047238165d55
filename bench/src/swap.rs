//! Figure (e), second half: changing the rules while serving. Senders submit without pause and
//! idle sessions wait for mail while the operator swaps the rules (ferrymail: `policy reload`;
//! the reference: `postfix reload` and `doveadm reload`, how its rules change). Counted: how
//! long the swap took, submissions that did not end in `250`, and idle sessions that did not
//! survive it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::system::{Ports, System, account_address};
use crate::throughput::{encrypted_message, login, submission, submit};

pub struct Swap {
    pub seconds: f64,
    pub transactions: usize,
    pub failed_transactions: usize,
    pub dropped_sessions: usize,
}

const SENDERS: usize = 4;
const IDLE_SESSIONS: usize = 100;

/// Accounts `first_account .. first_account + SENDERS + IDLE_SESSIONS` are used.
pub async fn reload_under_load(system: &mut dyn System, first_account: usize) -> Swap {
    let (ports, domain) = (system.ports(), system.domain().to_string());
    let mut idle = Vec::new();
    for i in 0..IDLE_SESSIONS {
        let mut c = login(ports, &account_address(first_account + SENDERS + i, &domain)).await;
        c.imap("s", "SELECT INBOX").await;
        c.send("i IDLE").await;
        assert!(c.imap_line().await.starts_with('+'));
        idle.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let from = account_address(first_account + s, &domain);
        let to = account_address(first_account + SENDERS + s, &domain);
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        senders.push(tokio::spawn(async move { keep_sending(ports, &from, &to, &stop, &done, &failed).await }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    tokio::task::block_in_place(|| system.reload());
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let mut dropped = 0;
    for mut c in idle {
        if !still_idling(&mut c).await {
            dropped += 1;
        }
    }
    Swap {
        seconds,
        transactions: done.load(Ordering::Relaxed),
        failed_transactions: failed.load(Ordering::Relaxed),
        dropped_sessions: dropped,
    }
}

/// Submit until told to stop. A transaction that does not end in `250` counts as failed, and
/// so does a connection that breaks (the client panics in its own task); either way sending goes
/// on over a new connection.
async fn keep_sending(ports: Ports, from: &str, to: &str, stop: &Arc<AtomicBool>, done: &Arc<AtomicUsize>, failed: &Arc<AtomicUsize>) {
    let message = Arc::new(encrypted_message(from));
    while !stop.load(Ordering::Relaxed) {
        let (from, to, message) = (from.to_string(), to.to_string(), message.clone());
        let (stop, done, failed_inside) = (stop.clone(), done.clone(), failed.clone());
        let connection = tokio::spawn(async move {
            let mut c = submission(ports, &from).await;
            while !stop.load(Ordering::Relaxed) {
                done.fetch_add(1, Ordering::Relaxed);
                let reply = tokio::time::timeout(Duration::from_secs(10), submit(&mut c, &from, &to, &message)).await;
                if !reply.is_ok_and(|r| r.starts_with("250")) {
                    failed_inside.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        });
        if connection.await.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Does the session still answer (`DONE` ends the IDLE with `i OK`)? Mail that arrived in the
/// meantime shows up as untagged lines first.
async fn still_idling(c: &mut crate::client::Client) -> bool {
    let check = async {
        c.send("DONE").await;
        loop {
            let Some(line) = c.line().await else { return false };
            if line.starts_with("i ") {
                return line.starts_with("i OK");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), check).await.unwrap_or(false)
}
