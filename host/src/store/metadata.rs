//! Per-account metadata (IMAP METADATA entries such as push device tokens). Account id 0
//! holds server-wide entries.

use rocksdb::WriteBatch;

use super::{Key, Result, Store, cf};

impl Store {
    pub fn metadata(&self, account_id: u64, key: &str) -> Result<Option<String>> {
        let raw = self.db().get_cf(self.cf(cf::METADATA), Key::new().u64(account_id).str(key).0)?;
        Ok(raw.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Set an entry, or remove it with `None`.
    pub fn set_metadata(&self, account_id: u64, key: &str, value: Option<&str>) -> Result<()> {
        let mut batch = WriteBatch::default();
        let k = Key::new().u64(account_id).str(key).0;
        match value {
            Some(v) => batch.put_cf(self.cf(cf::METADATA), k, v.as_bytes()),
            None => batch.delete_cf(self.cf(cf::METADATA), k),
        }
        self.write(batch, false)
    }

    /// All entries of an account whose key starts with `prefix`.
    pub fn metadata_with_prefix(&self, account_id: u64, prefix: &str) -> Result<Vec<(String, String)>> {
        let start = Key::new().u64(account_id).str(prefix).0;
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf::METADATA), &start) {
            let (key, value) = item?;
            if !key.starts_with(&start) {
                break;
            }
            out.push((String::from_utf8_lossy(&key[8..]).into_owned(), String::from_utf8_lossy(&value).into_owned()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_list_remove() {
        let store = Store::open_in_memory().unwrap();
        store.set_metadata(7, "/private/devicetoken/a", Some("t1")).unwrap();
        store.set_metadata(7, "/private/devicetoken/b", Some("t2")).unwrap();
        store.set_metadata(8, "/private/devicetoken/c", Some("other account")).unwrap();
        assert_eq!(store.metadata(7, "/private/devicetoken/a").unwrap().as_deref(), Some("t1"));
        let tokens = store.metadata_with_prefix(7, "/private/devicetoken/").unwrap();
        assert_eq!(tokens.len(), 2);
        store.set_metadata(7, "/private/devicetoken/a", None).unwrap();
        assert!(store.metadata(7, "/private/devicetoken/a").unwrap().is_none());
    }
}
