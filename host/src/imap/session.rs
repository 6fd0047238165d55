//! One IMAP connection: read commands (imap-codec's fragmentizer takes care of literals),
//! answer them in order, and in IDLE wait for changes to the account. The commands themselves
//! live in `cmd/`, one file per group; this file holds the loop and the session's state.

use std::sync::Arc;
use std::time::Duration;

use imap_codec::fragmentizer::{DecodeMessageError, FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, NString, Tag};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::decode::Decoder;
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};

use super::Kind;
use super::io::Io;
use super::respond::{self, Out, capabilities};
use super::cmd::list::Selection;
use super::selected::{Change, Selected};
use crate::inflight::Held;
use crate::net::Stream;
use crate::notify::Watch;
use crate::serve::Relay;
use crate::store::Account;
use crate::tls::Port;

/// How often an idling client hears from us (the app wants a word within 5 minutes).
const IDLE_KEEPALIVE: Duration = Duration::from_secs(120);
/// Commands other than APPEND are small.
const MAX_COMMAND: u32 = 64 * 1024;
/// Before login a client may not make the relay buffer more than this.
const MAX_UNAUTHENTICATED_INPUT: usize = 16 * 1024;

pub struct Session {
    pub(super) relay: Arc<Relay>,
    kind: Kind,
    pub(super) io: Io,
    fragmentizer: Fragmentizer,
    pub(super) out: Out,
    pub(super) account: Option<Account>,
    pub(super) selected: Option<Selected>,
    watch: Option<Watch>,
    mode: Mode,
    /// The client enabled CONDSTORE (or used a CONDSTORE feature): FETCH answers carry MODSEQ.
    pub(super) condstore: bool,
    logout: bool,
    start_tls: bool,
    start_compression: bool,
    /// Bytes received since a message was last complete.
    unprocessed: usize,
    /// How many of those the current message may take: a command line's worth, plus the
    /// literals the relay agreed to read (APPEND's message).
    allowed: usize,
    /// The session must have logged in by then.
    login_deadline: tokio::time::Instant,
    /// What the current message's literals hold of the budget for messages in memory: what
    /// of them has arrived, and a step ahead.
    held: Held,
}

enum Mode {
    Command,
    /// AUTHENTICATE PLAIN waiting for its data line.
    Authenticate(Tag<'static>),
    Idle(Tag<'static>),
}

/// A command reader that takes literals up to the largest message (APPEND).
fn fragmentizer(relay: &Relay) -> Fragmentizer {
    let max = relay.config.max_message_size.0.min(u64::from(u32::MAX) - MAX_COMMAND as u64) as u32 + MAX_COMMAND;
    Fragmentizer::new(max)
}

impl Session {
    pub fn new(relay: Arc<Relay>, kind: Kind, stream: Stream) -> Session {
        Session {
            login_deadline: tokio::time::Instant::now() + relay.config.timeouts.login(),
            fragmentizer: fragmentizer(&relay),
            relay,
            kind,
            io: Io::new(stream),
            out: Out::default(),
            account: None,
            selected: None,
            watch: None,
            mode: Mode::Command,
            condstore: false,
            logout: false,
            start_tls: false,
            start_compression: false,
            unprocessed: 0,
            allowed: MAX_UNAUTHENTICATED_INPUT,
            held: Held::none(),
        }
    }


    pub async fn run(mut self) {
        if self.kind == Kind::Imaps && !self.io.stream.is_tls() && self.io.stream.upgrade(self.relay.tls.acceptor(Port::Imap)).await.is_err() {
            return;
        }
        let caps = capabilities(self.io.stream.is_tls(), false);
        self.out.untagged_ok(Some(Code::Capability(caps)), respond::GREETING);
        // Small on purpose: it lives as long as the session, most of it idle.
        let mut buf = vec![0u8; 2048];
        loop {
            self.process().await;
            if self.flush().await.is_err() || self.logout {
                break;
            }
            if self.start_tls {
                // Bytes pipelined after STARTTLS were sent in plaintext: they go with the old
                // fragmentizer and never count as commands.
                self.start_tls = false;
                self.fragmentizer = fragmentizer(&self.relay);
                if self.io.stream.upgrade(self.relay.tls.acceptor(Port::Imap)).await.is_err() {
                    break;
                }
                continue;
            }
            if self.start_compression {
                self.start_compression = false;
                self.fragmentizer = fragmentizer(&self.relay);
                self.io.start_compression();
            }
            let read = if matches!(self.mode, Mode::Idle(_)) {
                self.read_idling(&mut buf).await
            } else {
                match tokio::time::timeout(self.read_timeout(), self.io.read(&mut buf)).await {
                    Ok(read) => read.ok(),
                    Err(_) => {
                        self.out.bye(respond::AUTOLOGOUT);
                        let _ = self.flush().await;
                        break;
                    }
                }
            };
            match read {
                Some(n) if n > 0 => {
                    self.unprocessed += n;
                    if self.unprocessed > self.allowed {
                        self.out.bye(respond::TOO_LONG);
                        let _ = self.flush().await;
                        break;
                    }
                    if !self.hold_received() {
                        self.relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "imap")]);
                        self.out.bye(respond::BUSY);
                        let _ = self.flush().await;
                        break;
                    }
                    self.fragmentizer.enqueue_bytes(&buf[..n]);
                }
                _ => break,
            }
        }
        self.io.stream.close().await;
    }

    /// How long to wait for the next command: the autologout timer, and before login no
    /// longer than what is left of the time to log in.
    fn read_timeout(&self) -> Duration {
        let autologout = self.relay.config.timeouts.imap();
        match self.account {
            Some(_) => autologout,
            None => autologout.min(self.login_deadline.saturating_duration_since(tokio::time::Instant::now())),
        }
    }

    /// Wait in IDLE for input, announcing changes and sending keepalives meanwhile. An IDLE
    /// lasts at most the autologout time (RFC 2177: clients re-issue it within 29 minutes).
    async fn read_idling(&mut self, buf: &mut [u8]) -> Option<usize> {
        let autologout = tokio::time::Instant::now() + self.relay.config.timeouts.imap();
        loop {
            enum Woken {
                Read(std::io::Result<usize>),
                Changed,
                Keepalive,
                Autologout,
            }
            let woken = {
                let watch = self.watch.as_mut();
                tokio::select! {
                    read = self.io.read(buf) => Woken::Read(read),
                    () = async { match watch { Some(w) => w.changed().await, None => std::future::pending().await } } => Woken::Changed,
                    () = tokio::time::sleep(IDLE_KEEPALIVE) => Woken::Keepalive,
                    () = tokio::time::sleep_until(autologout) => Woken::Autologout,
                }
            };
            match woken {
                Woken::Read(read) => return read.ok(),
                Woken::Changed => {
                    self.sync_selected().await;
                    if self.logout {
                        let _ = self.flush().await;
                        return None;
                    }
                }
                Woken::Keepalive => self.out.untagged_ok(None, respond::STILL_HERE),
                Woken::Autologout => {
                    self.out.bye(respond::AUTOLOGOUT);
                    let _ = self.flush().await;
                    return None;
                }
            }
            if self.flush().await.is_err() {
                return None;
            }
        }
    }

    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.bytes.is_empty() {
            let bytes = std::mem::take(&mut self.out.bytes);
            self.io.write_all(bytes).await?;
        }
        Ok(())
    }

    /// Handle every complete message the fragmentizer holds.
    async fn process(&mut self) {
        while let Some(info) = self.fragmentizer.progress() {
            if let FragmentInfo::Line { announcement: Some(LiteralAnnouncement { mode, length }), .. } = info {
                self.literal_announced(mode, length).await;
                continue;
            }
            if !self.fragmentizer.is_message_complete() {
                continue;
            }
            self.unprocessed = 0;
            self.allowed = self.base_allowance();
            // Given back once the command is done (below), whatever it did.
            let _held = std::mem::replace(&mut self.held, Held::none());
            match &self.mode {
                Mode::Command => {
                    let decoded = self.fragmentizer.decode_message(&CommandCodec::default()).map(|c| c.into_static());
                    match decoded {
                        Ok(command) => self.command(command).await,
                        Err(error) => {
                            let message = describe(&error);
                            self.undecodable(message).await;
                        }
                    }
                    // A login changes what the next command may make the session buffer.
                    self.allowed = self.base_allowance();
                    if self.start_tls || self.start_compression || self.logout {
                        return;
                    }
                }
                Mode::Idle(tag) => {
                    let tag = tag.clone();
                    self.mode = Mode::Command;
                    let done = self.fragmentizer.decode_message(&IdleDoneCodec::default()).is_ok()
                        || self.fragmentizer.message_bytes().trim_ascii().eq_ignore_ascii_case(b"DONE");
                    match done {
                        true => self.out.ok(&tag, None, "IDLE terminated"),
                        false => self.out.bad(Some(&tag), None, "Expected DONE"),
                    }
                }
                Mode::Authenticate(tag) => {
                    let tag = tag.clone();
                    self.mode = Mode::Command;
                    let data = self.fragmentizer.decode_message(&AuthenticateDataCodec::default()).map(|d| d.into_static()).ok();
                    let data = data.or_else(|| {
                        // AUTHENTICATE's data is bounded as any input before login.
                        let tidied = super::lenient::normalized(self.fragmentizer.message_bytes())?;
                        AuthenticateDataCodec::default().decode(&tidied).ok().map(|(_, d)| d.into_static())
                    });
                    self.authenticate_data(tag, data).await;
                }
            }
        }
    }

    /// A command imap-codec could not decode: tidied as Dovecot would take it (bare LFs, stray
    /// spaces), or LIST-EXTENDED, which imap-codec does not parse; otherwise BAD.
    async fn undecodable(&mut self, message: &'static str) {
        // Only what fits a command line is tidied (a copy of it): never an APPEND's message.
        let bytes = self.fragmentizer.message_bytes();
        let tidied = if bytes.len() <= MAX_COMMAND as usize { super::lenient::normalized(bytes) } else { None };
        if let Some(command) = tidied.as_deref().and_then(decode_command) {
            return self.command(command).await;
        }
        let bytes = tidied.as_deref().unwrap_or(self.fragmentizer.message_bytes());
        match super::cmd::list::extended_list(bytes) {
            Some((command, selection)) => self.list_extended(command, selection).await,
            None => {
                let tag = self.fragmentizer.decode_tag().map(|t| t.into_static());
                self.out.bad(tag.as_ref(), None, message);
            }
        }
    }

    /// What a message may make the relay buffer before any literal is agreed to.
    fn base_allowance(&self) -> usize {
        if self.account.is_some() { MAX_COMMAND as usize } else { MAX_UNAUTHENTICATED_INPUT }
    }

    /// A literal is announced: agree to read it, or refuse. Only APPEND's may be as large as
    /// a message; any other command, literals included, fits in [`MAX_COMMAND`] (before
    /// login, [`MAX_UNAUTHENTICATED_INPUT`]). A synchronizing literal that is too large is
    /// refused with `BAD [TOOBIG]` before the client sends it; a non-synchronizing one is on
    /// its way already and would have to be buffered to be parsed past: the session ends.
    async fn literal_announced(&mut self, mode: LiteralMode, length: u32) {
        let so_far = self.fragmentizer.message_bytes().len();
        let limit = match self.account {
            Some(_) if is_append(self.fragmentizer.message_bytes()) => self.relay.config.max_message_size.0,
            Some(_) => MAX_COMMAND.saturating_sub(so_far as u32).into(),
            // Before login the literal is within the input the session may buffer at all.
            None => 0,
        };
        let fits = u64::from(length) <= limit || (self.account.is_none() && so_far + length as usize <= self.allowed);
        if !fits {
            return self.refuse_literal(mode, false, respond::LITERAL_TOO_LARGE);
        }
        if self.account.is_some() && limit > MAX_COMMAND as u64 {
            // A message: it must fit in the budget for messages in memory now, and is held
            // from it as it arrives (see [`Session::hold_received`]).
            if !self.relay.in_flight.fits(u64::from(length)) {
                self.relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "imap")]);
                return self.refuse_literal(mode, true, respond::BUSY);
            }
            self.allowed += length as usize;
        }
        if mode == LiteralMode::Sync && matches!(self.mode, Mode::Command) {
            self.out.continuation("Ready for literal data");
            if self.flush().await.is_err() {
                self.logout = true;
            }
        }
    }

    /// Refuse the literal just announced: a synchronizing one, which the client waits to send,
    /// with a tagged `BAD [TOOBIG]` (too large) or `NO [LIMIT]` (`busy`: no memory for it now);
    /// a non-synchronizing one, on its way already, by ending the session.
    fn refuse_literal(&mut self, mode: LiteralMode, busy: bool, text: &str) {
        if mode == LiteralMode::NonSync {
            self.out.bye(text);
            self.logout = true;
            return;
        }
        let tag = self.fragmentizer.decode_tag().map(|t| t.into_static());
        match (busy, &tag) {
            (true, Some(tag)) => self.out.no(tag, Some(respond::code("LIMIT")), text),
            // Without a tag there is no NO to send: the client still hears why.
            (true, None) => self.out.bad(None, Some(respond::code("LIMIT")), text),
            (false, _) => self.out.bad(tag.as_ref(), Some(Code::TooBig), text),
        }
        self.fragmentizer.skip_message();
        self.unprocessed = 0;
        self.allowed = self.base_allowance();
        self.held = Held::none();
    }

    /// Hold from the budget what has arrived of APPEND's literals, a step ahead: a client
    /// that announces a message and sends nothing holds nothing. False when the budget is
    /// spent meanwhile: the literal cannot be read past, so the session ends.
    fn hold_received(&mut self) -> bool {
        let base = self.base_allowance();
        if self.unprocessed <= base {
            return true;
        }
        let received = (self.unprocessed - base) as u64;
        if received <= self.held.bytes() {
            return true;
        }
        let wanted = (received + crate::inflight::FIRST_STEP).min(self.allowed.saturating_sub(base) as u64);
        self.held.try_grow(&self.relay.in_flight, wanted)
    }

    async fn command(&mut self, command: Command<'static>) {
        let tag = command.tag;
        match command.body {
            CommandBody::Capability => {
                let caps = capabilities(self.io.stream.is_tls(), self.account.is_some());
                self.out.data(Data::Capability(caps));
                self.out.ok(&tag, None, respond::DONE);
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync_selected().await;
                self.out.ok(&tag, None, respond::DONE);
            }
            CommandBody::Logout => {
                self.out.bye(respond::LOGOUT);
                self.out.ok(&tag, None, respond::DONE);
                self.logout = true;
            }
            CommandBody::StartTLS => {
                if self.io.stream.is_tls() {
                    self.out.bad(Some(&tag), None, "TLS is already active");
                } else {
                    self.out.ok(&tag, None, "Begin TLS negotiation now");
                    self.start_tls = true;
                }
            }
            CommandBody::Id { .. } => {
                self.out.data(Data::Id { parameters: Some(vec![(istring("name"), NString(Some(istring("ferrymail"))))]) });
                self.out.ok(&tag, None, respond::DONE);
            }
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(&tag, &user, &password).await;
            }
            CommandBody::Authenticate { mechanism, initial_response } => {
                self.authenticate(tag, mechanism, initial_response.map(|r| r.declassify().to_vec())).await;
            }
            body if self.account.is_none() => {
                let _ = body;
                self.out.no(&tag, None, respond::NOT_AUTHENTICATED);
            }
            CommandBody::Idle => {
                self.sync_selected().await;
                self.out.continuation("idling");
                self.mode = Mode::Idle(tag);
            }
            CommandBody::Compress { .. } => {
                if self.io.is_compressed() {
                    self.out.no(&tag, Some(Code::CompressionActive), "Compression is already active");
                } else {
                    // The OK goes out uncompressed; everything after it is compressed.
                    self.out.ok(&tag, None, "DEFLATE active");
                    self.start_compression = true;
                }
            }
            body => self.authenticated(tag, body).await,
        }
    }

    /// Commands for a logged-in session, by group.
    async fn authenticated(&mut self, tag: Tag<'static>, body: CommandBody<'static>) {
        use CommandBody as C;
        match body {
            C::Enable { capabilities } => self.enable(&tag, capabilities),
            C::Namespace => self.namespace(&tag),
            C::Select { mailbox, parameters } => self.select(&tag, &mailbox, false, &parameters).await,
            C::Examine { mailbox, parameters } => self.select(&tag, &mailbox, true, &parameters).await,
            C::Create { mailbox } => self.create(&tag, &mailbox).await,
            C::Delete { mailbox } => self.delete(&tag, &mailbox).await,
            C::Rename { from, to } => self.rename(&tag, &from, &to).await,
            C::Subscribe { mailbox } => self.subscribe(&tag, &mailbox, true).await,
            C::Unsubscribe { mailbox } => self.subscribe(&tag, &mailbox, false).await,
            C::List { reference, mailbox_wildcard } => self.list(&tag, &reference, &mailbox_wildcard, Selection::default()).await,
            C::Lsub { reference, mailbox_wildcard } => {
                self.list(&tag, &reference, &mailbox_wildcard, Selection { lsub: true, ..Selection::default() }).await
            }
            C::Status { mailbox, item_names } => self.status(&tag, &mailbox, &item_names).await,
            C::Append { mailbox, flags, date, message } => self.append(&tag, &mailbox, &flags, date, message).await,
            C::GetQuota { root } => self.get_quota(&tag, &root).await,
            C::GetQuotaRoot { mailbox } => self.get_quota_root(&tag, &mailbox).await,
            C::SetQuota { .. } => self.out.no(&tag, None, "Quotas are set by the operator"),
            C::GetMetadata { options: _, mailbox, entries } => self.get_metadata(&tag, &mailbox, &entries).await,
            C::SetMetadata { mailbox, entry_values } => self.set_metadata(&tag, &mailbox, &entry_values).await,
            body if self.selected.is_none() => {
                let _ = body;
                self.out.no(&tag, None, respond::NOT_SELECTED);
            }
            C::Close => self.close(&tag, true).await,
            C::Unselect => self.close(&tag, false).await,
            C::Expunge => self.expunge(&tag, None).await,
            C::ExpungeUid { sequence_set } => self.expunge(&tag, Some(&sequence_set)).await,
            C::Search { charset, criteria, uid } => self.search(&tag, charset.as_ref(), &criteria, uid).await,
            C::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                self.fetch(&tag, &sequence_set, macro_or_item_names, uid, &modifiers).await
            }
            C::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                self.store_flags(&tag, &sequence_set, kind, response, &flags, uid, &modifiers).await
            }
            C::Copy { sequence_set, mailbox, uid } => self.copy(&tag, &sequence_set, &mailbox, uid, false).await,
            C::Move { sequence_set, mailbox, uid } => self.copy(&tag, &sequence_set, &mailbox, uid, true).await,
            _ => self.out.bad(Some(&tag), None, "Command not supported"),
        }
    }

    /// The next line is AUTHENTICATE's data, not a command.
    pub(super) fn await_authenticate_data(&mut self, tag: Tag<'static>) {
        self.mode = Mode::Authenticate(tag);
    }

    /// Start watching the logged-in account for changes made elsewhere.
    pub(super) fn logged_in(&mut self, account: Account) {
        self.watch = Some(self.relay.notifier.watch(account.id));
        self.account = Some(account);
    }

    /// Tell other sessions of this account that something changed.
    pub(super) fn announce(&self) {
        if let Some(account) = &self.account {
            self.relay.notifier.notify(account.id);
        }
    }

    /// Bring the selected mailbox up to date and announce what changed.
    ///
    /// Deliveries are the common case and cheap: they only add messages, each bumping the
    /// mailbox's modseq by one, so reading the new ones suffices. Anything else (flags,
    /// expunges) makes the session read the whole mailbox again.
    pub(super) async fn sync_selected(&mut self) {
        if let Some(watch) = self.watch.as_mut() {
            watch.mark_seen();
        }
        let (Some(account), Some(selected)) = (&self.account, &self.selected) else { return };
        let (account, mailbox_id, validity, read_only) = (account.clone(), selected.mailbox_id, selected.uidvalidity, selected.read_only);
        let (known_next, known_modseq) = (selected.uidnext, selected.highest_modseq);
        let store = self.relay.store.clone();
        let now = store
            .run(move |s| -> Result<Option<(Update, crate::store::Mailbox, u32)>, crate::store::StoreError> {
                let account_id = account.id;
                // Deleted (and perhaps another created under its name: ids are never reused,
                // and the UIDVALIDITY check holds even for a database from before that).
                let Some(mailbox) = s.mailbox_by_id(account_id, mailbox_id)?.filter(|m| m.uidvalidity == validity) else {
                    return Ok(None);
                };
                if mailbox.uidnext == known_next && mailbox.highest_modseq == known_modseq {
                    return Ok(Some((Update::Unchanged, mailbox, known_next)));
                }
                // New messages are recent to the first session that hears of them.
                let recent_from = match read_only || mailbox.uidnext <= known_next {
                    true => mailbox.uidnext,
                    false => s.claim_recent(&account, mailbox_id, mailbox.uidnext)?.max(known_next),
                };
                // Messages stored after the mailbox record was read wait for the next sync, which
                // claims them: the session's view stays that of one moment.
                let before_next = |entries: Vec<(u32, crate::store::MessageEntry)>| -> Vec<(u32, crate::store::MessageEntry)> {
                    entries.into_iter().filter(|(uid, _)| *uid < mailbox.uidnext).collect()
                };
                let new = before_next(s.messages_from(account_id, mailbox_id, known_next)?);
                if mailbox.highest_modseq.saturating_sub(known_modseq) == new.len() as u64 {
                    return Ok(Some((Update::Appended(new), mailbox, recent_from)));
                }
                Ok(Some((Update::Full(before_next(s.messages(account_id, mailbox_id)?)), mailbox, recent_from)))
            })
            .await;
        let (update, mailbox, recent_from) = match now {
            Ok(Some(now)) => now,
            // The session cannot go on in a mailbox that is gone: Dovecot's way out.
            Ok(None) => {
                self.selected = None;
                self.out.bye(respond::MAILBOX_DELETED);
                self.logout = true;
                return;
            }
            Err(e) => return tracing::warn!("IMAP could not bring a selected mailbox up to date: {e}"),
        };
        let Some(selected) = self.selected.as_mut() else { return };
        // New messages this session claimed: RECENT follows EXISTS.
        let claimed = recent_from < mailbox.uidnext;
        selected.add_recent(recent_from, mailbox.uidnext);
        let changes = match update {
            Update::Unchanged => Vec::new(),
            Update::Appended(new) => selected.append(&mailbox, new),
            Update::Full(entries) => selected.sync(&mailbox, entries),
        };
        let recent = if claimed { selected.recent_count() } else { 0 };
        for change in changes {
            match change {
                Change::Expunge(seq) => self.out.expunge(seq),
                Change::Exists(n) => {
                    self.out.exists(n);
                    if claimed {
                        self.out.data(Data::Recent(recent));
                    }
                }
                Change::Flags(index) => self.flags_update(index, false),
                Change::Keywords => self.announce_flags(),
            }
        }
    }
}

/// What a session has to learn about its selected mailbox.
enum Update {
    Unchanged,
    Appended(Vec<(u32, crate::store::MessageEntry)>),
    Full(Vec<(u32, crate::store::MessageEntry)>),
}

pub(super) fn istring(s: &'static str) -> imap_codec::imap_types::core::IString<'static> {
    imap_codec::imap_types::core::IString::try_from(s).expect("a constant, valid string")
}

fn describe(error: &DecodeMessageError<'_, CommandCodec>) -> &'static str {
    match error {
        DecodeMessageError::MessageTooLong { .. } => respond::TOO_LONG,
        DecodeMessageError::MessagePoisoned { .. } => respond::LITERAL_TOO_LARGE,
        _ => respond::BAD_COMMAND,
    }
}

/// Whether a command's first line so far is an APPEND (`tag APPEND ...`).
fn is_append(line: &[u8]) -> bool {
    let mut words = line.split(|&b| b == b' ');
    words.next();
    words.next().is_some_and(|command| command.eq_ignore_ascii_case(b"APPEND"))
}

/// Decode a command from raw bytes (for commands rewritten before decoding).
pub(super) fn decode_command(bytes: &[u8]) -> Option<Command<'static>> {
    CommandCodec::default().decode(bytes).ok().map(|(_, c)| c.into_static())
}
