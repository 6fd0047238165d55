//! GETQUOTAROOT and GETQUOTA: one storage root per account, `"User quota"`, in KiB.

use imap_codec::imap_types::core::{AString, Tag, Vec1};
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;

use crate::imap::respond;
use crate::imap::session::Session;

pub const ROOT: &str = "User quota";

impl Session {
    pub(in crate::imap) async fn get_quota_root(&mut self, tag: &Tag<'static>, mailbox: &Mailbox<'static>) {
        let root = AString::try_from(ROOT).expect("a constant, valid string");
        self.out.data(Data::QuotaRoot { mailbox: mailbox.clone(), roots: vec![root] });
        // Every QUOTAROOT needs its QUOTA line: the app expects both.
        self.quota_line().await;
        self.out.ok(tag, None, respond::DONE);
    }

    pub(in crate::imap) async fn get_quota(&mut self, tag: &Tag<'static>, root: &AString<'static>) {
        if root.as_ref() != ROOT.as_bytes() {
            return self.out.no(tag, None, "No such quota root");
        }
        self.quota_line().await;
        self.out.ok(tag, None, respond::DONE);
    }

    async fn quota_line(&mut self) {
        let Some(address) = self.account.as_ref().map(|a| a.address.clone()) else { return };
        let store = self.relay.store.clone();
        let used = store.run(move |s| s.account(&address)).await.ok().flatten().map_or(0, |a| a.used_bytes);
        let limit = self.relay.config.max_mailbox_size.0;
        let quota = QuotaGet::new(Resource::Storage, used / 1024, limit / 1024);
        let root = AString::try_from(ROOT).expect("a constant, valid string");
        self.out.data(Data::Quota { root, quotas: Vec1::from(quota) });
    }
}
