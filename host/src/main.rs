//! The `ferrymail` command line. Only argument handling lives here; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use ferrymail::check::{self, CheckRequest};
use ferrymail::clock::Clock;
use ferrymail::config::Config;
use ferrymail::control;
use ferrymail::dkim::Dkim;
use ferrymail::dns::Dns;
use ferrymail::metrics::Metrics;
use ferrymail::policy::{Direction, Policies, Services, Verdict};
use ferrymail::records;
use ferrymail::serve::Relay;
use ferrymail::store::Store;

const DEFAULT_CONFIG: &str = "/etc/ferrymail/ferrymail.toml";

#[derive(Parser)]
#[command(name = "ferrymail", version, about = "A chatmail relay whose rules run as WebAssembly policy components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// The config file: TOML, or a chatmail relay's chatmail.ini.
        #[arg(long, short, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the DNS records to publish for the relay's domain, as a zone file fragment.
    ///
    /// Generates the DKIM key (in data_dir) if the relay has not yet. With --check, looks
    /// every record up instead and reports what is missing or wrong (exit 1 then).
    Dns {
        #[arg(long, short, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Compare with what DNS answers (the system resolver, or `dns_resolver`).
        #[arg(long)]
        check: bool,
    },
    /// Set up a new relay: a commented config file, the data directory with the DKIM key and,
    /// for a `_` domain, a self-signed certificate.
    Init {
        /// The relay's mail domain (may come from --from-ini instead).
        domain: Option<String>,
        /// Take the settings of an existing chatmail relay's chatmail.ini.
        #[arg(long, value_name = "CHATMAIL_INI")]
        from_ini: Option<PathBuf>,
        /// Where to write the config.
        #[arg(long, short, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long, default_value = "/var/lib/ferrymail")]
        data_dir: PathBuf,
        /// Replace an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// List, show and delete accounts.
    Account {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Look at and act on the outbound queue.
    Queue {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Run retention now: expired messages, the quota trim and inactive accounts, as the
    /// retention policy decides (the relay also does this daily).
    Expire {
        #[command(flatten)]
        config: ConfigArg,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// The storage report: bytes, messages by size, accounts active lately, queues.
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// In the Prometheus text format.
        #[arg(long)]
        prometheus: bool,
    },
    /// Whether the relay runs, and its accounts, queues and policies. Exits 3 when it does not run.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Inspect, reload and try out the policy bundle.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

/// The config file: TOML, or a chatmail relay's chatmail.ini.
#[derive(clap::Args)]
struct ConfigArg {
    // Global: accepted after the subcommand too (`ferrymail account list --config ...`).
    #[arg(long, short, global = true, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Every account with its creation day, last login day and storage.
    List,
    /// One account: storage, mailboxes, push tokens.
    Show { address: String },
    /// Delete an account with all its mail and data (a later login creates it afresh).
    Delete { address: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Every queued message: id, age, attempts, next attempt, sender, recipients, last error.
    List,
    /// Make every queued message due now.
    Flush,
    /// Drop a queued message without a bounce.
    Delete { id: u64 },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// List the policies of the running relay (or, when none runs, of the config).
    List {
        #[arg(long, short, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make the running relay load its bundle again (re-reading the config file).
    Reload {
        #[arg(long, short, env = "FERRYMAIL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the bundle's hooks on one message as the server would, without a server.
    ///
    /// Prints `accept`, `reject <code> <text>` or `defer <code> <text>` on the first line,
    /// then the header edits; exits 0 for accept and 1 otherwise.
    Check {
        /// Config whose bundle and settings to use (default: the built-in bundle, defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum)]
        direction: CheckDirection,
        /// Envelope sender; "" is the null sender. Outgoing, also the logged-in user.
        #[arg(long)]
        from: String,
        /// Envelope recipient (repeat for more).
        #[arg(long = "to", required = true)]
        to: Vec<String>,
        /// Treat a DKIM signature of this domain as verified (incoming; repeatable).
        #[arg(long = "dkim-pass")]
        dkim_pass: Vec<String>,
        /// The message, as an .eml file.
        message: PathBuf,
    },
    /// Create a policy crate NAME that builds and passes its own tests out of the box.
    ///
    /// It carries this relay's SDK and contract (in NAME/ferrymail/); then
    /// `cargo test` and `cargo build --target wasm32-wasip2 --release` in it.
    New {
        /// The policy's name: a-z, 0-9 and '-' (also the crate's name).
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckDirection {
    Outgoing,
    Incoming,
}

/// What is never logged, whatever RUST_LOG says: the TURN crates log peers' addresses; and
/// rustls warns once per connection of a client that sends an IP address as SNI, as many mail
/// clients do, naming the address. That connection goes on, served with the relay's
/// certificate: nothing for an operator to fix. Every other rustls message still shows.
struct Quiet;

impl<S> tracing_subscriber::layer::Filter<S> for Quiet {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        let crate_name = meta.target().split("::").next().unwrap_or_default();
        !matches!(crate_name, "turn" | "stun" | "webrtc_util")
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        // rustls logs through `log`: such events carry their real target and text as fields.
        if event.metadata().target() != "log" || *event.metadata().level() != tracing::Level::WARN {
            return true;
        }
        let mut fields = LogFields::default();
        event.record(&mut fields);
        !(fields.target == "rustls::msgs::handshake" && fields.message.contains("IP address presented as hostname"))
    }
}

#[derive(Default)]
struct LogFields {
    target: String,
    message: String,
}

impl tracing::field::Visit for LogFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "log.target" {
            self.target = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

fn main() -> ExitCode {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into());
    let quiet = Quiet;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(output.with_filter(quiet.and(filter))).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let loaded = load_config(&config)?;
            let path = config.clone();
            let relay = tokio::task::spawn_blocking(move || Relay::open(loaded, Some(&path))).await??;
            relay.run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns { config, check } => {
            let config = load_config(&config)?;
            let dns = Dns::new(config.dns_resolver).map_err(anyhow::Error::msg)?;
            let dkim = {
                let (config, dns) = (config.clone(), dns.clone());
                let dir = config.data_dir.join("dkim");
                tokio::task::spawn_blocking(move || Dkim::load_or_generate(&dir, &config.mail_domain, &config.dkim_selector, &dns))
                    .await??
            };
            let caa = ferrymail::acme::caa_record(&config);
            let records = records::records(&config, dkim.dns_record(), caa.as_deref());
            if !check {
                print!("{}", records::zone(&config.mail_domain, &records));
                return Ok(ExitCode::SUCCESS);
            }
            let checks = records::check(&dns, &records).await;
            let (report, complete) = records::report(&records, &checks);
            print!("{report}");
            Ok(if complete { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Init { domain, from_ini, config, data_dir, force } => {
            let init = ferrymail::init::Init { domain, from_ini, config, data_dir, force };
            print!("{}", tokio::task::spawn_blocking(move || ferrymail::init::init(&init)).await??);
            Ok(ExitCode::SUCCESS)
        }
        Command::Account { config, command } => {
            let request = match command {
                AccountCommand::List => "account list".to_string(),
                AccountCommand::Show { address } => format!("account show {}", one_word(&address)?),
                AccountCommand::Delete { address } => format!("account delete {}", one_word(&address)?),
            };
            operate(&config.config, &request).await
        }
        Command::Queue { config, command } => {
            let request = match command {
                QueueCommand::List => "queue list".to_string(),
                QueueCommand::Flush => "queue flush".to_string(),
                QueueCommand::Delete { id } => format!("queue delete {id}"),
            };
            operate(&config.config, &request).await
        }
        Command::Expire { config, dry_run } => operate(&config.config, if dry_run { "expire --dry-run" } else { "expire" }).await,
        Command::Report { config, prometheus } => {
            operate(&config.config, if prometheus { "report --prometheus" } else { "report" }).await
        }
        Command::Status { config } => operate(&config.config, "status").await,
        Command::Policy { command: PolicyCommand::Reload { config } } => {
            let config = load_config(&config)?;
            let listing = control::request(&config.data_dir, "reload").await?;
            println!("reloaded:\n{listing}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command: PolicyCommand::List { config } } => {
            let config = load_config(&config)?;
            match control::request(&config.data_dir, "policies").await {
                Ok(listing) => print!("{listing}"),
                Err(_) => {
                    eprintln!("(no running relay answers; listing the bundle of the config file)");
                    let policies = offline_policies(config).await?;
                    print!("{}", control::render_policies(&policies.summary()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command: PolicyCommand::New { name, path } } => {
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            let wasm = ferrymail::scaffold::new_policy(&name, &dir)?;
            println!("created policy `{name}` in {}", dir.display());
            println!("  cd {} && cargo test", dir.display());
            println!("  cargo build --target wasm32-wasip2 --release   # {}", wasm.display());
            println!("then list it in the bundle ([[policy]] path = \"...\") and run `ferrymail policy reload`");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command: PolicyCommand::Check { config, direction, from, to, dkim_pass, message } } => {
            let config = match config {
                Some(path) => load_config(&path)?,
                None => Config::default(),
            };
            let message = std::fs::read(&message).with_context(|| format!("cannot read {}", message.display()))?;
            let policies = offline_policies(config.clone()).await?;
            let direction = match direction {
                CheckDirection::Outgoing => Direction::Outgoing,
                CheckDirection::Incoming => Direction::Incoming,
            };
            let request = CheckRequest { direction, mail_from: from, rcpt_to: to, dkim_pass, message };
            let decision = check::check(&policies, &config, request).await;
            print!("{}", check::report(&decision));
            Ok(if matches!(decision.verdict, Verdict::Accept) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// Ask the running relay; with none running, open its data here and do the same.
async fn operate(path: &Path, request: &str) -> Result<ExitCode> {
    let config = load_config(path)?;
    match control::request(&config.data_dir, request).await {
        Ok(answer) => {
            print!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(control::RequestError::Failed(reason)) => bail!("{reason}"),
        Err(control::RequestError::NotRunning { .. }) => {
            let data_dir = config.data_dir.display().to_string();
            // Only an existing relay's data, and only as its user: files created here as
            // another user (root, say) could keep the relay from starting.
            if !config.data_dir.join("db").is_dir() {
                if request == "status" {
                    print!("not running ({data_dir})\ndomain: {}\nno relay data yet\n", config.mail_domain);
                    return Ok(ExitCode::from(3));
                }
                bail!("no relay runs, and {data_dir} holds no relay data (is --config right?)");
            }
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(&config.data_dir)?.uid();
            if owner != rustix::process::geteuid().as_raw() {
                bail!("no relay runs; to work on {data_dir} directly, run this as its owner (uid {owner})");
            }
            let path = path.to_path_buf();
            let relay = tokio::task::spawn_blocking(move || Relay::open(config, Some(&path)))
                .await?
                .with_context(|| format!("no relay runs on {data_dir}, and its data cannot be opened here"))?;
            let answer = ferrymail::operator::execute(&Arc::new(relay), request).await.map_err(anyhow::Error::msg)?;
            if request == "status" {
                print!("not running ({data_dir})\n{answer}");
                return Ok(ExitCode::from(3));
            }
            print!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Requests to the control socket are words: an argument must be one.
fn one_word(text: &str) -> Result<&str> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        bail!("`{text}` is not an address");
    }
    Ok(text)
}

fn load_config(path: &Path) -> Result<Config> {
    let loaded = Config::load(path)?;
    for key in &loaded.unknown_keys {
        tracing::warn!("{}: unknown config key `{key}` (ignored)", path.display());
    }
    if loaded.config.mail_domain.is_empty() {
        bail!("{}: `mail_domain` is not set", path.display());
    }
    Ok(loaded.config)
}

/// The config's bundle, loaded in this process with an in-memory store (policy state of a
/// running relay is not touched).
async fn offline_policies(config: Config) -> Result<Policies> {
    tokio::task::spawn_blocking(move || -> Result<Policies> {
        let services = Services { store: Store::open_in_memory()?, clock: Clock::default(), metrics: Arc::new(Metrics::default()) };
        let cache = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ferrymail/policy-cache"));
        Ok(Policies::load(&config, None, services, cache)?)
    })
    .await?
}
