//! A DNS server for tests: dnsmasq (Debian's dnsmasq-base) answering for `*.test` names only,
//! on a loopback port of its own, with the records a test gives it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestDns {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A port for the DNS server, free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The records that make `domain` a mail domain served at `ip` with the given DKIM record.
pub fn mail_domain(domain: &str, ip: std::net::Ipv4Addr, selector: &str, dkim_record: &str) -> Vec<String> {
    vec![
        format!("host-record={domain},{ip}"),
        format!("mx-host={domain},{domain},10"),
        format!("txt-record={selector}._domainkey.{domain},\"{dkim_record}\""),
    ]
}

/// The zone fragment `ferrymail dns` prints, as dnsmasq records, the A record pointing at `ip`
/// (no AAAA: the tests use IPv4).
pub fn records_from_zone(zone: &str, ip: std::net::Ipv4Addr) -> Vec<String> {
    let mut records = Vec::new();
    for line in zone.lines().filter(|l| !l.starts_with(';')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, kind, value) = (fields[0].trim_end_matches('.'), fields[3], &fields[4..]);
        let target = |s: &str| s.trim_end_matches('.').to_string();
        records.push(match kind {
            "A" => format!("host-record={name},{ip}"),
            "AAAA" => continue,
            "MX" => format!("mx-host={name},{},{}", target(value[1]), value[0]),
            "TXT" => format!("txt-record={name},{}", value.join(" ").replace("\" \"", "\",\"")),
            "CNAME" => format!("cname={name},{}", target(value[0])),
            "SRV" => format!("srv-host={name},{},{},{},{}", target(value[3]), value[2], value[0], value[1]),
            other => panic!("unexpected record type {other}"),
        });
    }
    records
}

impl TestDns {
    pub fn start(port: u16, records: &[String]) -> TestDns {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("dnsmasq.conf");
        std::fs::write(&conf, records.join("\n") + "\n").unwrap();
        let child = Command::new("dnsmasq")
            .args(["--no-daemon", "--no-hosts", "--no-resolv", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg("--local=/test/")
            .arg("--local-ttl=1")
            .arg("--user=root")
            .arg(format!("--conf-file={}", conf.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is needed for federation tests (scripts/setup installs dnsmasq-base)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestDns { child, port, _dir: dir }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
