//! ferrymail side by side with today's chatmail relay stack (Postfix + Dovecot from Debian,
//! configured like a chatmail relay), on this machine's loopback, in the same run.
//!
//! `bench/run` installs what it needs and runs this with `--bench`; it writes bench/REPORT.md
//! and bench/results.json. Without `--bench` (under `cargo test`) it makes one small run and
//! writes nothing, so that the bench keeps working.
//!
//! Options: --runs N (3), --pairs N (16 sender/receiver pairs), --messages N (per pair, 200),
//! --sessions 1000,10000 (idle session levels measured in every run), --max-sessions N
//! (100000; opened once per system, as many as fit), --rounds N (Delta Chat rounds per run, 5),
//! --figures abcde (which figures to measure).

#[path = "../../host/tests/common/client.rs"]
#[allow(dead_code)]
mod client;
mod deltachat;
mod idle;
#[path = "../../host/tests/common/pgp.rs"]
#[allow(dead_code)]
mod pgp;
mod policy_cost;
mod reference;
mod report;
mod swap;
mod system;
mod throughput;

use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::{Duration, Instant};

use report::{FERRYMAIL, Metric, Results};
use system::{Ferrymail, System};

/// Which accounts each figure uses: the reference needs every one listed in advance.
const IDLE_ACCOUNTS: Range<usize> = 0..1000;
const PAIR_ACCOUNTS: usize = 10_000;
const SWAP_ACCOUNTS: Range<usize> = 20_000..20_200;
const DELTACHAT_ACCOUNTS: usize = 30_000;
/// Seconds idle sessions are left alone before measuring: chatmail's Dovecot hibernates an
/// IDLE session after 30 s.
const SETTLE: u64 = 35;

struct Options {
    full: bool,
    runs: usize,
    pairs: usize,
    messages: usize,
    levels: Vec<usize>,
    max_sessions: usize,
    rounds: usize,
    figures: String,
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
        let number = |flag: &str, default: usize| value(flag).map(|n| n.parse().expect(flag)).unwrap_or(default);
        let levels = value("--sessions").unwrap_or(if full { "1000,10000" } else { "20" }.to_string());
        Options {
            full,
            runs: number("--runs", if full { 3 } else { 1 }),
            pairs: number("--pairs", if full { 16 } else { 2 }),
            messages: number("--messages", if full { 200 } else { 5 }),
            levels: levels.split(',').map(|n| n.parse().expect("--sessions")).collect(),
            max_sessions: number("--max-sessions", if full { 100_000 } else { 0 }),
            rounds: number("--rounds", if full { 5 } else { 1 }),
            // The smoke run leaves the Delta Chat scenarios to the end-to-end tests.
            figures: value("--figures").unwrap_or(if full { "abcde" } else { "abce" }.to_string()),
        }
    }

    fn figure(&self, letter: char) -> bool {
        self.figures.contains(letter)
    }
}

fn main() {
    let mut options = Options::parse();
    let file_limit = raise_file_limit();
    let network = Network::claim();
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    let accounts = [IDLE_ACCOUNTS, PAIR_ACCOUNTS..PAIR_ACCOUNTS + 2 * options.pairs, SWAP_ACCOUNTS, DELTACHAT_ACCOUNTS..DELTACHAT_ACCOUNTS + 1000];
    match reference::Reference::runnable() {
        Ok(()) => systems.push(Box::new(reference::Reference::configure(&format!("_ref{}.bench", network.n), network.ip(3), &accounts))),
        Err(why) if !options.full => println!("bench: the reference is left out of this smoke run: {why}"),
        Err(why) => panic!("the reference cannot run: {why} (bench/run sets it up)"),
    }
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferrymail"));
    systems.push(Box::new(Ferrymail::configure(binary, &format!("_fm{}.bench", network.n), network.ip(2))));

    let mut results = Results::default();
    // Each session is a socket in this process and one in the system's (ferrymail: in its one
    // process), so the open-file limit caps the largest level.
    let fitting = file_limit.saturating_sub(1000) as usize;
    if options.max_sessions > fitting {
        results.notes.push(format!(
            "The largest idle level was cut from {} to {fitting} sessions: the open-file limit here is {file_limit} and cannot \
             be raised (no CAP_SYS_RESOURCE); ferrymail keeps all sessions in one process, as does the load generator.",
            options.max_sessions
        ));
        options.max_sessions = fitting;
    }
    if options.figure('c') {
        // On an idle machine, before the systems start.
        results.add("policy_chain", FERRYMAIL, policy_cost::per_message(if options.full { 20_000 } else { 10 }));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let sources: Vec<Ipv4Addr> = (10..=250).map(|host| network.ip(host)).collect();
    for system in systems.iter_mut() {
        eprintln!("bench: preparing {}", system.name());
        system.start();
        runtime.block_on(log_in_once(&**system, &accounts, &options));
        system.stop();
    }
    for run in 0..options.runs {
        // Alternate the order: neither system always runs on a machine the other just warmed.
        let order: Vec<usize> = if run % 2 == 0 { (0..systems.len()).collect() } else { (0..systems.len()).rev().collect() };
        for &i in &order {
            let system = &mut *systems[i];
            eprintln!("bench: run {} of {}, {}", run + 1, options.runs, system.name());
            let started = Instant::now();
            system.start();
            results.add("start", system.name(), started.elapsed().as_secs_f64() * 1000.0);
            if options.figure('a') || options.figure('c') {
                measure_throughput(system, &options, &runtime, &mut results);
            }
            if options.figure('e') {
                let swap = runtime.block_on(swap::reload_under_load(system, SWAP_ACCOUNTS.start));
                results.add("swap", system.name(), swap.seconds * 1000.0);
                results.add("swap_failed", system.name(), swap.failed_transactions as f64);
                results.add("swap_transactions", system.name(), swap.transactions as f64);
                results.add("swap_dropped", system.name(), swap.dropped_sessions as f64);
            }
            if options.figure('b') {
                for &level in &options.levels {
                    measure_idle(system, level, &sources, &options, &runtime, &mut results, &format!("idle_{level}"));
                }
            }
            if options.figure('d') && deltachat::available() {
                let first = DELTACHAT_ACCOUNTS + run * 100;
                for (scenario, seconds) in deltachat::scenarios(system, first, options.rounds) {
                    for s in seconds {
                        results.add(&format!("dc_{scenario}"), system.name(), s);
                    }
                }
            }
            system.stop();
        }
    }
    if options.full {
        // What the runs found, in case the largest level fails.
        write_files(&write_report(&options, &results), &results);
    }
    if options.figure('b') && options.max_sessions > 0 {
        for system in systems.iter_mut() {
            system.start();
            measure_idle(&mut **system, options.max_sessions, &sources, &options, &runtime, &mut results, "idle_max");
            system.stop();
        }
    }
    let report = write_report(&options, &results);
    if options.full {
        write_files(&report, &results);
    }
    println!("{report}");
}

fn write_files(report: &str, results: &Results) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::write(dir.join("REPORT.md"), report).unwrap();
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results.json()).unwrap()).unwrap();
    eprintln!("bench: wrote bench/REPORT.md and bench/results.json");
}

/// The first login of every account the figures use: ferrymail creates the accounts, Dovecot
/// their maildirs. Neither is part of what is measured.
async fn log_in_once(system: &dyn System, accounts: &[Range<usize>], options: &Options) {
    let (ports, domain) = (system.ports(), system.domain().to_string());
    let mut all: Vec<usize> = accounts[..3].iter().flat_map(|r| r.clone()).collect();
    if !options.full {
        all.retain(|i| *i < 40 || (PAIR_ACCOUNTS..SWAP_ACCOUNTS.end).contains(i));
    }
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in all {
        let (gate, address) = (gate.clone(), system::account_address(i, &domain));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            throughput::login(ports, &address).await.imap("q", "LOGOUT").await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn measure_throughput(system: &mut dyn System, options: &Options, runtime: &tokio::runtime::Runtime, results: &mut Results) {
    // First a light load, for latency without queueing: 2 pairs.
    let light = throughput::Load { pairs: 2, messages: options.messages / 2, first_account: PAIR_ACCOUNTS };
    let outcome = runtime.block_on(throughput::run(system.ports(), system.domain(), &light));
    results.add("light_p50", system.name(), outcome.p50_ms);
    results.add("light_p99", system.name(), outcome.p99_ms);
    let load = throughput::Load { pairs: options.pairs, messages: options.messages, first_account: PAIR_ACCOUNTS };
    let pids = system.process_ids();
    let cpu_before = system::cpu_seconds(&pids);
    let policy_before = system.policy_microseconds();
    let outcome = runtime.block_on(throughput::run(system.ports(), system.domain(), &load));
    let cpu = system::cpu_seconds(&system.process_ids()) - cpu_before;
    let messages = (options.pairs * options.messages) as f64;
    let name = system.name();
    results.add("throughput", name, outcome.messages_per_second);
    results.add("p50", name, outcome.p50_ms);
    results.add("p99", name, outcome.p99_ms);
    results.add("submit_p50", name, outcome.submit_p50_ms);
    results.add("submit_p99", name, outcome.submit_p99_ms);
    results.add("cpu_per_message", name, cpu / messages * 1e6);
    results.add("message_bytes", name, outcome.message_bytes as f64);
    if let (Some(before), Some(after)) = (policy_before, system.policy_microseconds()) {
        results.add("policy_in_relay", name, (after - before) as f64 / messages);
        results.add("policy_in_relay_share", name, (after - before) as f64 / (cpu * 1e6) * 100.0);
        if let Some(chain) = results.median("policy_chain", name) {
            results.add("policy_share", name, chain / (cpu / messages * 1e6) * 100.0);
        }
    }
}

fn measure_idle(system: &mut dyn System, count: usize, sources: &[Ipv4Addr], options: &Options, runtime: &tokio::runtime::Runtime, results: &mut Results, key: &str) {
    let before = system::memory(&system.process_ids());
    let started = Instant::now();
    let opened = runtime.block_on(idle::open(system.ports(), system.domain(), sources, IDLE_ACCOUNTS, count));
    let opening = started.elapsed();
    std::thread::sleep(Duration::from_secs(if options.full { SETTLE } else { 1 }));
    let after = system::memory(&system.process_ids());
    let n = opened.sessions.len();
    eprintln!("bench: {} idle sessions on {} in {:.0} s", n, system.name(), opening.as_secs_f64());
    if let Some(why) = &opened.stopped {
        let note = format!("{}: {n} of {count} idle sessions opened; stopped because {why}", system.name());
        assert!(key == "idle_max", "{note}\n{}", system.failure_context());
        results.notes.push(note);
    }
    if n > 0 {
        results.add(key, system.name(), after.saturating_sub(before) as f64 / n as f64 / 1024.0);
    }
    if key == "idle_max" {
        results.add("idle_max_sessions", system.name(), n as f64);
    }
    // Closing many sessions takes the system a moment; the next figure starts afterwards.
    drop(opened);
    std::thread::sleep(Duration::from_secs(if options.full { 5 } else { 1 }));
}

fn write_report(options: &Options, results: &Results) -> String {
    let mut out = String::from(include_str!("../report-intro.md"));
    let mut section = |title: &str, text: &str, metrics: &[Metric]| {
        out.push_str(&format!("\n## {title}\n\n{text}\n\n{}", results.table(metrics)));
    };
    let metric = |key: &'static str, label: &str, unit: &'static str| Metric { key, label: label.to_string(), unit, goal: None };
    let at_least_5x: fn(f64, Option<f64>) -> bool = |f, r| r.is_some_and(|r| f >= 5.0 * r);
    let under_10: fn(f64, Option<f64>) -> bool = |f, _| f < 10.0;
    let within_20_kib: fn(f64, Option<f64>) -> bool = |f, _| f <= 20.0;
    let within_5_percent: fn(f64, Option<f64>) -> bool = |f, _| f <= 5.0;
    let third: fn(f64, Option<f64>) -> bool = |f, r| r.is_some_and(|r| f <= r / 3.0);
    section(
        "(a) Submit → stored → IDLE wake-up",
        &format!(
            "{} senders, each submitting {} encrypted messages of {} bytes one after another (TLS, AUTH PLAIN, MAIL/RCPT/DATA \
             pipelined) to its own recipient, whose session idles on INBOX over TLS. Latency: from the start of a submission to the \
             recipient's `* N EXISTS`; with all senders busy it is mostly waiting in line (senders ÷ throughput), so it is \
             also measured with 2 pairs. CPU: all processes of the system, per message.",
            options.pairs,
            options.messages,
            results.median("message_bytes", FERRYMAIL).unwrap_or(0.0)
        ),
        &[
            Metric { goal: Some(("≥ 5× reference", at_least_5x)), ..metric("throughput", "messages per second", "msg/s") },
            metric("p50", "latency p50", "ms"),
            Metric { goal: Some(("< 10 ms", under_10)), ..metric("p99", "latency p99", "ms") },
            metric("submit_p50", "of that: submission until `250`, p50", "ms"),
            metric("submit_p99", "of that: submission until `250`, p99", "ms"),
            metric("cpu_per_message", "CPU time per message", "µs"),
            metric("light_p50", "latency p50 at a light load (2 pairs)", "ms"),
            Metric { goal: Some(("< 10 ms", under_10)), ..metric("light_p99", "latency p99 at a light load (2 pairs)", "ms") },
        ],
    );
    let mut idle: Vec<Metric> = options
        .levels
        .iter()
        .map(|level| {
            let key: &'static str = Box::leak(format!("idle_{level}").into_boxed_str());
            Metric { goal: Some(("≤ 20 KiB", within_20_kib)), ..metric(key, &format!("memory per session at {level} sessions"), "KiB") }
        })
        .collect();
    if options.max_sessions > 0 {
        idle.push(metric("idle_max_sessions", &format!("sessions opened of {} tried (once)", options.max_sessions), ""));
        idle.push(Metric { goal: Some(("≤ 20 KiB", within_20_kib)), ..metric("idle_max", "memory per session at that many (once)", "KiB") });
    }
    section(
        "(b) Idle IMAP IDLE sessions over TLS",
        &format!(
            "Sessions as the app leaves them: TLS 1.3, logged in, INBOX selected, IDLE; spread over {} accounts. Memory: proportional \
             set size (PSS) of all the system's processes after {SETTLE} s (Dovecot hibernates idle sessions after 30 s), less \
             before, per session.",
            IDLE_ACCOUNTS.len()
        ),
        &idle,
    );
    section(
        "(c) The policy chain's share",
        "The default chain's cost for one submission's hooks (MAIL FROM, RCPT TO, the message checks; 4 KiB encrypted message), \
         measured alone on the idle machine as the foundation benchmark does, set against ferrymail's CPU time per message in \
         figure (a). Below it, the time the relay itself counted in policy calls during figure (a) \
         (`ferrymail_policy_call_microseconds_total`): wall time, which on this oversubscribed 2-core machine includes waiting \
         for a core, so an upper bound. The reference has no equivalent (its filtermail is left out).",
        &[
            metric("policy_chain", "policy chain per message, alone", "µs"),
            Metric { goal: Some(("≤ 5 %", within_5_percent)), ..metric("policy_share", "share of ferrymail's CPU time per message", "%") },
            metric("policy_in_relay", "policy calls per message in the relay under load (wall)", "µs"),
            metric("policy_in_relay_share", "that, against the relay's CPU time", "%"),
        ],
    );
    section(
        "(d) Delta Chat scenarios",
        &format!(
            "The scenarios of chatmail's benchmark with the real Delta Chat core (deltachat-rpc-server from .venv), {} rounds per run; \
             the spread is over all rounds.",
            options.rounds
        ),
        &[
            Metric { goal: Some(("≤ ⅓ reference", third)), ..metric("dc_setup", "account setup until idle", "s") },
            Metric { goal: Some(("≤ ⅓ reference", third)), ..metric("dc_ping_pong", "ping-pong", "s") },
            Metric { goal: Some(("≤ ⅓ reference", third)), ..metric("dc_send10_receive10", "send 10 / receive 10", "s") },
        ],
    );
    section(
        "(e) Start and rule changes",
        "Start: from launching the system until IMAP and submission accept connections (ferrymail's compiled policies cached \
         from an earlier start). Rule change under load: 4 senders submitting without pause and 100 idle sessions while the \
         rules are swapped (ferrymail: `ferrymail policy reload`; the reference: `postfix reload` + `doveadm reload`); failed \
         submissions and idle sessions that no longer answer are counted over the 3 s around it.",
        &[
            metric("start", "start until serving", "ms"),
            metric("swap", "rule change takes", "ms"),
            metric("swap_transactions", "submissions during it", ""),
            metric("swap_failed", "failed submissions or connections", ""),
            metric("swap_dropped", "idle sessions dropped (of 100)", ""),
        ],
    );
    if !results.notes.is_empty() {
        out.push_str("\n## Notes from this run\n\n");
        for note in &results.notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out
}

/// Raise the open-file limit as far as allowed (100 000 sessions are 100 000 sockets here and
/// as many in the system under test, which inherits the limit); the limit now in force.
fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|n| n.trim().parse().ok()).unwrap_or(1 << 20);
    if setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: Some(wanted) }).is_err() {
        let current = getrlimit(Resource::Nofile);
        let _ = setrlimit(Resource::Nofile, Rlimit { current: current.maximum, maximum: current.maximum });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A loopback network of our own, 127.0.N.0/24, claimed by holding 127.0.N.1:9 (as the tests
/// do), so that a bench and tests on the same machine do not collide.
struct Network {
    n: u8,
    _claim: std::net::TcpListener,
}

impl Network {
    fn claim() -> Network {
        for n in 10..=250u8 {
            if let Ok(claim) = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, n, 1), 9)) {
                return Network { n, _claim: claim };
            }
        }
        panic!("no free loopback network 127.0.N.0/24");
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.n, host)
    }
}
