//! Many sessions on shared mailboxes at once, every response checked against a model of what
//! each session was told (RFC 3501 §7.4.1: sequence numbers change only by EXPUNGE and
//! EXISTS, UIDs ascend with them), and all sessions agreeing with a fresh one at the end.
//!
//! CI runs it briefly; for the figure in a note, longer and in release:
//! `FERRYMAIL_STRESS_CLIENTS=50 FERRYMAIL_STRESS_SECS=60 cargo test --release -p ferrymail --test imap_stress -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::mail::{PASSWORD, account};
use common::relay::TestRelay;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one session has been told of the selected mailbox: UIDs by sequence number, `None`
/// until a FETCH names it.
#[derive(Default)]
struct View {
    uids: Vec<Option<u32>>,
    /// The command being answered is a UID SEARCH: its hits are UIDs.
    uid_search: bool,
}

impl View {
    /// Take in one response line; an error says what contradicts the model.
    fn apply(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.split(' ');
        if words.next() != Some("*") {
            return Ok(());
        }
        let (Some(first), Some(second)) = (words.next(), words.next()) else { return Ok(()) };
        let Ok(n) = first.parse::<usize>() else {
            if first == "SEARCH" && !self.uid_search {
                return self.check_search(line);
            }
            return Ok(());
        };
        match second {
            "EXPUNGE" => {
                if n == 0 || n > self.uids.len() {
                    return Err(format!("EXPUNGE {n} of {}", self.uids.len()));
                }
                self.uids.remove(n - 1);
            }
            "EXISTS" => {
                if n < self.uids.len() {
                    return Err(format!("EXISTS {n} below {} without EXPUNGE", self.uids.len()));
                }
                self.uids.resize(n, None);
            }
            "RECENT" if n > self.uids.len() => return Err(format!("RECENT {n} of {}", self.uids.len())),
            "FETCH" => {
                if n == 0 || n > self.uids.len() {
                    return Err(format!("FETCH {n} of {}: {line}", self.uids.len()));
                }
                if let Some(uid) = line.split("UID ").nth(1).and_then(|r| r.split([' ', ')']).next()).and_then(|u| u.parse().ok()) {
                    match self.uids[n - 1] {
                        Some(known) if known != uid => return Err(format!("sequence {n} was UID {known}, now {uid}")),
                        _ => self.uids[n - 1] = Some(uid),
                    }
                }
            }
            _ => {}
        }
        let known: Vec<u32> = self.uids.iter().flatten().copied().collect();
        if known.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("UIDs out of order: {known:?}"));
        }
        Ok(())
    }

    fn check_search(&self, line: &str) -> Result<(), String> {
        for n in line.split(' ').skip(2).filter_map(|w| w.parse::<usize>().ok()) {
            if n == 0 || n > self.uids.len() {
                return Err(format!("SEARCH hit {n} of {}", self.uids.len()));
            }
        }
        Ok(())
    }
}

struct Session {
    client: Client,
    view: View,
    tags: u64,
}

impl Session {
    async fn open(relay: &TestRelay, address: &str) -> Session {
        let mut client = Client::tls(relay.imaps).await;
        client.imap_line().await;
        let login = client.imap("l", &format!("LOGIN \"{address}\" \"{PASSWORD}\"")).await;
        assert!(login.last().unwrap().starts_with("l OK"), "{login:?}");
        let mut session = Session { client, view: View::default(), tags: 0 };
        session.run("SELECT INBOX").await.unwrap();
        session
    }

    /// One command, every response checked; the tagged status line.
    async fn run(&mut self, command: &str) -> Result<String, String> {
        self.tags += 1;
        let tag = format!("t{}", self.tags);
        self.view.uid_search = command.starts_with("UID SEARCH");
        let reply = self.client.imap(&tag, command).await;
        for line in &reply[..reply.len() - 1] {
            self.view.apply(line).map_err(|e| format!("{command}: {e}"))?;
        }
        let status = reply.last().unwrap().clone();
        if status.starts_with(&format!("{tag} BAD")) {
            return Err(format!("{command}: {status}"));
        }
        Ok(status)
    }

    async fn idle(&mut self) -> Result<(), String> {
        self.client.send("i IDLE").await;
        loop {
            let line = self.client.imap_line().await;
            if line.starts_with('+') {
                break;
            }
            self.view.apply(&line)?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.client.send("DONE").await;
        for line in self.client.imap_until("i").await {
            if !line.starts_with("i ") {
                self.view.apply(&line).map_err(|e| format!("IDLE: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A small xorshift: the mix differs per client, and a failure can be replayed by seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides.max(1)
    }
}

async fn client(relay: &TestRelay, address: &str, seed: u64, until: Instant) -> Result<(u64, Session), String> {
    let mut session = Session::open(relay, address).await;
    let mut dice = Dice(seed | 1);
    let mut operations = 0;
    while Instant::now() < until {
        let len = session.view.uids.len() as u64;
        let seq = dice.roll(len.max(1)) + 1;
        match dice.roll(12) {
            0 => session.run("FETCH 1:* (UID FLAGS)").await.map(drop)?,
            1 if len > 0 => session.run(&format!("STORE {seq} +FLAGS (\\Seen)")).await.map(drop)?,
            2 if len > 0 => session.run(&format!("STORE {seq} +FLAGS.SILENT (\\Deleted)")).await.map(drop)?,
            3 => session.run("EXPUNGE").await.map(drop)?,
            4 if len > 0 && len < 60 => session.run(&format!("COPY {seq} INBOX")).await.map(drop)?,
            5 if len > 0 => {
                let target = if dice.roll(2) == 0 { "Trash" } else { "INBOX" };
                session.run(&format!("MOVE {seq} {target}")).await.map(drop)?
            }
            6 => session.run("SEARCH UNSEEN").await.map(drop)?,
            7 if len < 60 => {
                let message = format!("Subject: stress {seed} {operations}\r\n\r\nbody\r\n");
                session.client.write(format!("a APPEND INBOX {{{}+}}\r\n{message}\r\n", message.len()).as_bytes()).await;
                for line in session.client.imap_until("a").await {
                    session.view.apply(&line).map_err(|e| format!("APPEND: {e}"))?;
                }
            }
            8 => session.idle().await?,
            9 => {
                if dice.roll(8) == 0 {
                    session.run("LOGOUT").await.map(drop).ok();
                    session = Session::open(relay, address).await;
                } else {
                    session.run("NOOP").await.map(drop)?;
                }
            }
            10 if len > 0 => session.run(&format!("FETCH {seq} (UID BODY.PEEK[HEADER])")).await.map(drop)?,
            _ => session.run("UID SEARCH ALL").await.map(drop)?,
        }
        operations += 1;
    }
    Ok((operations, session))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_contradict_themselves() {
    let clients = setting("FERRYMAIL_STRESS_CLIENTS", 12);
    let seconds = setting("FERRYMAIL_STRESS_SECS", 6);
    let relay = std::sync::Arc::new(TestRelay::start("").await);
    // Two accounts, so that sessions share mailboxes with some and not with others.
    let addresses = [account(&relay, "stress001").await, account(&relay, "stress002").await];
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (relay, address) = (relay.clone(), addresses[i as usize % 2].clone());
        tasks.push(tokio::spawn(async move { client(&relay, &address, 0x9e37_79b9 * (i + 1), until).await }));
    }
    let mut operations = 0;
    let mut sessions = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (done, session) = task.await.unwrap().unwrap_or_else(|e| panic!("a session was told something inconsistent: {e}"));
        operations += done;
        sessions.push((addresses[i % 2].clone(), session));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("imap stress: {clients} clients, {operations} operations in {elapsed:.1} s: {:.0} operations/s", operations as f64 / elapsed);
    assert!(operations > clients, "the sessions got work done");

    // All quiet: every session, brought up to date, sees what a fresh one sees.
    for address in &addresses {
        let mut fresh = Session::open(&relay, address).await;
        fresh.run("FETCH 1:* (UID)").await.unwrap();
        for (_, session) in sessions.iter_mut().filter(|(a, _)| a == address) {
            session.run("NOOP").await.unwrap();
            session.run("FETCH 1:* (UID)").await.unwrap();
            assert_eq!(session.view.uids, fresh.view.uids, "a session disagrees with a fresh one");
        }
    }
}
