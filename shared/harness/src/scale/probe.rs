//! Measurement probes of `fedistill bench scale` (and `bench load`, for the peak memory of `fedistill data
//! check`): the coordinator's CPU time and memory from /proc, its
//! /status page over plain HTTP, free loopback ports, and the two baselines the round latency is compared
//! with: the plain QUIC transfer of the round's bytes and one plain durable SQLite commit of its payloads.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fedistill_shared::provision::{self, pki, Ca};
use fedistill_shared::tls;
use fedistill_transport::{quic_client_config, quic_server_config, QuicTuning};

/// CPU time and memory of a process from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcSample {
    pub(crate) cpu_s: f64,
    pub(crate) hwm_kib: u64,
    pub(crate) rss_kib: u64,
}

impl ProcSample {
    pub(crate) fn read(pid: u32, clk_tck: f64) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        Self::parse(&stat, &status, clk_tck)
    }

    /// `stat`: utime and stime are fields 14 and 15 (proc(5)), counted after the `(comm)` field, which may
    /// itself hold spaces and parentheses. `status`: the `VmHWM:` and `VmRSS:` lines, in kB.
    fn parse(stat: &str, status: &str, clk_tck: f64) -> anyhow::Result<Self> {
        let after_comm = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat has no (comm) field"))?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // fields[0] is field 3 (state), so field k is fields[k - 3].
        let tick = |k: usize| -> anyhow::Result<u64> {
            fields
                .get(k - 3)
                .ok_or_else(|| anyhow::anyhow!("/proc/PID/stat has no field {k}"))?
                .parse::<u64>()
                .with_context(|| format!("/proc/PID/stat field {k}"))
        };
        let kib = |key: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .ok_or_else(|| anyhow::anyhow!("/proc/PID/status has no {key} line"))?;
            line[key.len()..]
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow::anyhow!("{key} has no value"))?
                .parse::<u64>()
                .with_context(|| format!("{key} value"))
        };
        Ok(Self {
            cpu_s: (tick(14)? + tick(15)?) as f64 / clk_tck,
            hwm_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
        })
    }
}

/// USER_HZ, the unit of /proc/PID/stat times (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// The parts of the coordinator's `/status` JSON the bench reads.
#[derive(Debug, Deserialize)]
pub(super) struct Status {
    pub(super) history: Vec<StatusRound>,
}

#[derive(Debug, Deserialize)]
pub(super) struct StatusRound {
    pub(super) round: u64,
    pub(super) contributors: Vec<String>,
    pub(super) absent: Vec<String>,
    pub(super) seconds: f64,
    /// Signed soft-label bytes the coordinator accepted in the round.
    pub(super) bytes_up: u64,
    /// Seconds per phase (`collect`, `assemble`, `commit`, `send`).
    #[serde(default)]
    pub(super) phases: std::collections::BTreeMap<String, f64>,
}

/// GET /status on the coordinator's local HTTP port (HTTP/1.1, `Connection: close`).
pub(super) async fn get_status(port: u16) -> anyhow::Result<Status> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("GET /status timed out")??;
    let text = String::from_utf8(buf).context("/status is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("/status: no HTTP body"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "/status answered {:?}",
        head.lines().next().unwrap_or("")
    );
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).context("decoding /status")
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunked body"))?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        ensure!(rest.len() >= n + 2, "truncated chunk");
        out.push_str(
            rest.get(..n)
                .ok_or_else(|| anyhow::anyhow!("chunk splits a character"))?,
        );
        body = &rest[n + 2..];
    }
}

pub(super) fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

pub(super) fn free_tcp_port() -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?.port())
}

/// The raw-transfer baseline: a plain quinn server on loopback with only a server certificate (no client
/// authentication, roster, signatures or framing). A request is an 8-byte little-endian count D followed by
/// the upload bytes; the server reads the whole upload, then answers with D bytes.
pub(super) struct RawServer {
    endpoint: quinn::Endpoint,
    ca_pem: String,
    tuning: QuicTuning,
}

/// Largest download the baseline server sends (far above any configuration here).
const RAW_MAX: usize = 1 << 30;

impl RawServer {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let now = provision::now_utc();
        let (ca_cert, ca_key) = pki::create_ca("plain", now)?;
        let ca = Ca::from_pem(&ca_cert.pem, &ca_key, "plain")?;
        let key = pki::generate_tls_key()?;
        let cert = ca.issue_server(&["127.0.0.1".to_string()], &key, now)?;
        let tuning = QuicTuning::default();
        let cfg = quic_server_config(
            tls::dangerous::server_config_no_client_auth(cert.pem.as_bytes(), key.serialize_pem().as_bytes())?,
            &tuning,
        )?;
        let endpoint = raw_endpoint(Some(cfg))?;
        let server = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let Ok(conn) = incoming.await else { continue };
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(req) = recv.read_to_end(RAW_MAX + 8).await else {
                            continue;
                        };
                        let Some(d) = req.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                            continue;
                        };
                        let d = (u64::from_le_bytes(d) as usize).min(RAW_MAX);
                        let _ = send.write_all(&vec![0x5a; d]).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            ca_pem: ca_cert.pem,
            tuning,
        })
    }

    pub(super) async fn connect(&self) -> anyhow::Result<quinn::Connection> {
        let cfg = quic_client_config(
            tls::dangerous::client_config_no_client_auth(self.ca_pem.as_bytes())?,
            &self.tuning,
        )?;
        let mut ep = raw_endpoint(None)?;
        ep.set_default_client_config(cfg);
        Ok(ep.connect(self.endpoint.local_addr()?, "127.0.0.1")?.await?)
    }

    pub(super) fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// A loopback endpoint of the baseline (a server with `server`), its socket buffers as wide as the
/// coordinator's, so the baseline loses no datagram the coordinator would not.
fn raw_endpoint(server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    fedistill_coordinator::transport::widen_socket_buffers(&socket);
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )?)
}

/// Moves `up` bytes to the baseline server and `down` bytes back on one new stream; returns seconds.
pub(super) async fn raw_transfer(conn: &quinn::Connection, up: u64, down: u64) -> anyhow::Result<f64> {
    let mut upload = Vec::with_capacity(8 + up as usize);
    upload.extend_from_slice(&down.to_le_bytes());
    upload.resize(8 + up as usize, 0xa5);
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&upload).await?;
    send.finish()?;
    let got = recv
        .read_to_end(RAW_MAX)
        .await
        .context("reading the baseline download")?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        got.len() as u64 == down,
        "baseline download of {} bytes, expected {down}",
        got.len()
    );
    Ok(seconds)
}

/// The commit baseline: one SQLite transaction that writes `blobs` payloads of `blob_bytes` each (a round's
/// soft labels) and is durable when it returns, timed `rounds` times after one warm-up, in a new database
/// in `dir` (on the disk of the coordinator's store) with the store's settings (WAL, `synchronous=FULL`). Each
/// transaction starts on an emptied WAL, so no commit includes SQLite copying the WAL into the database.
/// Returns milliseconds per transaction.
pub(super) fn sqlite_commit_ms(dir: &Path, blobs: usize, blob_bytes: usize, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let path = dir.join("commit-baseline.sqlite");
    let mut conn = rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "the commit baseline could not enable WAL ({mode})"
    );
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS payloads (digest BLOB PRIMARY KEY, data BLOB NOT NULL)")?;
    let mut ms = Vec::with_capacity(rounds);
    let mut key = 0u64;
    for i in 0..=rounds {
        // Fresh bytes each time (a counter in every 8 bytes), so nothing is a page SQLite already holds.
        let payloads: Vec<(Vec<u8>, Vec<u8>)> = (0..blobs)
            .map(|_| {
                key += 1;
                let data: Vec<u8> = (0..blob_bytes.div_ceil(8))
                    .flat_map(|j| (key << 20 | j as u64).to_le_bytes())
                    .take(blob_bytes)
                    .collect();
                (key.to_be_bytes().to_vec(), data)
            })
            .collect();
        let t = Instant::now();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO payloads (digest, data) VALUES (?1, ?2)")?;
            for (k, d) in &payloads {
                insert.execute(rusqlite::params![k, d])?;
            }
        }
        tx.commit()?;
        let elapsed = t.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            ms.push(elapsed);
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    drop(conn);
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("commit-baseline.sqlite{f}")));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_status_parse() {
        // A real /proc/PID/stat line shape with a comm holding a space and a parenthesis (proc(5)); fields
        // 14 and 15 are 250 and 50 ticks, so 3.0 s at 100 ticks/s.
        let stat = "4242 (fedi stil)l) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 100 200000000 3000";
        let status = "Name:\tfedistill\nVmPeak:\t  300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        let s = ProcSample::parse(stat, status, 100.0).expect("parse");
        assert_eq!(
            s,
            ProcSample {
                cpu_s: 3.0,
                hwm_kib: 51200,
                rss_kib: 40960
            }
        );
        let e = ProcSample::parse("4242 (x) S 1 2", status, 100.0).expect_err("short stat");
        assert!(format!("{e:#}").contains("no field 14"), "{e:#}");
        let e = ProcSample::parse(stat, "Name:\tx\n", 100.0).expect_err("no VmHWM");
        assert!(format!("{e:#}").contains("no VmHWM: line"), "{e:#}");
        // The live process: this test's own entry parses and shows some memory.
        let me = ProcSample::read(std::process::id(), clock_ticks_per_second()).expect("own /proc");
        assert!(me.hwm_kib >= me.rss_kib && me.rss_kib > 0, "{me:?}");
    }

    #[test]
    fn the_commit_baseline_times_each_durable_transaction_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ms = sqlite_commit_ms(dir.path(), 3, 5000, 4).expect("baseline");
        assert_eq!(ms.len(), 4);
        assert!(ms.iter().all(|v| v.is_finite() && *v > 0.0), "{ms:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "database removed"
        );
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").expect("chunked"),
            "hello world"
        );
        assert!(dechunk("5\r\nhel").is_err());
    }
}
