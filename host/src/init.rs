//! `ferrymail init`: a new relay's config file (the commented example, with the operator's
//! domain and, when switching from chatmail, the values of their chatmail.ini), its data
//! directory, DKIM key and, for a `_` domain, its self-signed certificate.

use std::path::{Path, PathBuf};

use crate::config::{Config, ini_to_toml};

const EXAMPLE: &str = include_str!("../../examples/ferrymail.toml");

pub struct Init {
    /// The mail domain; may come from the chatmail.ini instead.
    pub domain: Option<String>,
    pub from_ini: Option<PathBuf>,
    /// Where to write the config.
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// Overwrite an existing config file.
    pub force: bool,
}

/// Write the config, then create what the relay needs; returns what to do next, for the operator.
pub fn init(init: &Init) -> anyhow::Result<String> {
    use anyhow::{Context, bail};
    if init.config.exists() && !init.force {
        bail!("{} exists already (use --force to replace it)", init.config.display());
    }
    let mut settings = match &init.from_ini {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let toml = ini_to_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            toml.parse::<toml::Table>()?
        }
        None => toml::Table::new(),
    };
    if let Some(domain) = &init.domain {
        settings.insert("mail_domain".into(), domain.clone().into());
    }
    let domain = settings.get("mail_domain").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if domain.is_empty() {
        bail!("give the relay's mail domain (`ferrymail init chat.example.org`), or a chatmail.ini that has one");
    }
    settings.insert("data_dir".into(), init.data_dir.display().to_string().into());
    let text = fill_example(&settings);
    let config = Config::parse(&text).map_err(|e| anyhow::anyhow!("the new config would be invalid: {e}"))?.config;

    create_private_dir(&config.data_dir)?;
    let dns = crate::dns::Dns::new(config.dns_resolver).map_err(anyhow::Error::msg)?;
    crate::dkim::Dkim::load_or_generate(&config.data_dir.join("dkim"), &config.mail_domain, &config.dkim_selector, &dns)?;
    let mut next = format!("created {} with the DKIM key\n", config.data_dir.display());
    if config.is_self_signed() {
        crate::tls::Tls::load(&config)?;
        next += "generated a self-signed certificate (the domain starts with `_`)\n";
    } else {
        next += "the relay gets its certificate by ACME (Let's Encrypt) once the DNS records point at it;\n\
                 or set `tls_cert_file` and `tls_key_file` to certificate files and `acme = false`\n";
    }

    // Last, and whole or not at all: a config file means the rest is in place.
    if let Some(parent) = init.config.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temporary = init.config.with_extension("toml.new");
    std::fs::write(&temporary, &text).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &init.config).with_context(|| format!("cannot write {}", init.config.display()))?;
    next = format!("wrote {}\n{next}", init.config.display());
    let config_arg = init.config.display();
    next += &format!(
        "next: publish the DNS records `ferrymail dns --config {config_arg}` prints, fill in the privacy_* keys,\n\
         then start the relay: `ferrymail serve --config {config_arg}` (or examples/ferrymail.service)\n"
    );
    Ok(next)
}

/// The example config with `settings` in place of its defaults; settings it does not know
/// are kept at the end, commented out, so nothing from chatmail.ini silently disappears.
fn fill_example(settings: &toml::Table) -> String {
    let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
    // Top-level keys only: those before the first [section].
    let top_level = lines.iter().position(|l| l.starts_with('[')).unwrap_or(lines.len());
    let mut unused = Vec::new();
    for (key, value) in settings {
        let line = format!("{key} = {value}");
        let at = lines[..top_level].iter().position(|l| {
            let l = l.trim_start_matches("# ");
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
        });
        match at {
            Some(i) => lines[i] = line,
            None => unused.push(line),
        }
    }
    let mut text = lines.join("\n") + "\n";
    if !unused.is_empty() {
        text += "\n# Settings of the chatmail.ini that ferrymail does not use:\n";
        for line in unused {
            text += &format!("# {}\n", line.replace('\n', "\n# "));
        }
    }
    text
}

/// The data directory, readable by its owner only (also when it existed before).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |e: std::io::Error| anyhow::anyhow!("cannot create {}: {e}", dir.display());
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failed)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_their_lines_and_unknown_ones_are_kept_as_comments() {
        let settings: toml::Table =
            toml::from_str("mail_domain = \"c.org\"\nmax_mailbox_size = \"1G\"\nmtail_address = \"127.0.0.1\"").unwrap();
        let text = fill_example(&settings);
        let config = Config::parse(&text).unwrap();
        assert!(config.unknown_keys.is_empty());
        assert_eq!(config.config.mail_domain, "c.org");
        assert_eq!(config.config.max_mailbox_size.0, 1 << 30);
        assert!(text.contains("# mtail_address = \"127.0.0.1\""));
        assert!(text.contains("# Rate limit per sender"), "the comments stay");
    }
}
