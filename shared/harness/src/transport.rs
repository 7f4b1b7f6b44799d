//! `fedistill bench transport`: time to move 1/10/100 MB over the mutually authenticated link (roster
//! lookup, fedistill frames with a size cap) next to a plain quinn transfer of the same bytes (server
//! certificate only, no client auth, no framing), measured in the same run. Build with --release.

use anyhow::Context;
use fedistill_coordinator::transport::{FederationFiles, Server, ServerOptions};
use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use fedistill_shared::crypto::{FederationId, ParticipantId};
use fedistill_shared::ml::Progress;
use fedistill_shared::provision::{self, pki, Ca};
use fedistill_shared::tls;
use fedistill_shared::wire::{encode_header, FrameKind};
use fedistill_transport::{quic_client_config, quic_server_config, read_frame, write_frame, QuicTuning};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `fedistill bench transport`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TransportOptions {
    /// Transfer sizes in MB (10^6 bytes), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub sizes_mb: Vec<usize>,
    /// Transfers per size and transport; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Also print each line as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One benchmark line.
#[derive(Debug, Serialize)]
struct Line {
    bytes: usize,
    plain_ms: f64,
    mtls_ms: f64,
    plain_mb_per_s: f64,
    mtls_mb_per_s: f64,
    /// mTLS time divided by plain time (the target is at most 1.5 for 10 MB).
    ratio: f64,
}

const KIND: FrameKind = FrameKind(250);
const READ_TIMEOUT: Duration = Duration::from_secs(300);

fn payload(n: usize) -> Vec<u8> {
    // Fixed xorshift stream: deterministic and incompressible enough (QUIC does not compress anyway).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the suite and prints one line per size.
pub fn run(args: &TransportOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    anyhow::ensure!(args.repeats > 0, "--repeats must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // Progress over the grid (sizes x repeats) on stderr: a bar on a terminal, plain lines otherwise.
    let progress = Progress::auto();
    let lines = rt.block_on(bench(args, &progress))?;
    println!(
        "{:>10} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "bytes", "plain ms", "mTLS ms", "plain MB/s", "mTLS MB/s", "ratio"
    );
    for l in &lines {
        println!(
            "{:>10} {:>10.1} {:>10.1} {:>12.1} {:>12.1} {:>7.2}x",
            l.bytes, l.plain_ms, l.mtls_ms, l.plain_mb_per_s, l.mtls_mb_per_s, l.ratio
        );
    }
    if args.json {
        for l in &lines {
            println!("{}", serde_json::to_string(l).context("serializing a bench line")?);
        }
    }
    Ok(())
}

async fn bench(args: &TransportOptions, progress: &Progress) -> anyhow::Result<Vec<Line>> {
    let max = args.sizes_mb.iter().copied().max().unwrap_or(1) * 1_000_000;
    let tmp = TempDir(std::env::temp_dir().join(format!("fedistill-bench-transport-{}", std::process::id())));
    let dir = tmp.0.join("fed");
    let tuning = QuicTuning::default();

    // mTLS side: a real federation with one participant.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("reserving a port")?;
    let port = socket.local_addr()?.port();
    let fed = FederationId::new("bench").context("federation id")?;
    let now = provision::now_utc();
    provision::init(&dir, &fed, &[format!("127.0.0.1:{port}")], None, now).context("provisioning")?;
    let kit_dir =
        provision::add_participant(&dir, &ParticipantId::new("bench-node"), now).context("adding participant")?;
    let files = FederationFiles::from_federation_dir(&dir)?;
    let opts = ServerOptions {
        tuning: tuning.clone(),
        ..ServerOptions::default()
    };
    let server = Server::bind_socket(socket, &files, opts)?;
    tokio::spawn(async move {
        while let Some(Ok(peer)) = server.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = peer.conn.accept_bi().await {
                    if read_frame(&mut recv, max, READ_TIMEOUT).await.is_ok() {
                        let _ = send.write_all(b"k").await;
                        let _ = send.finish();
                    }
                }
            });
        }
    });
    let kit = Kit::load(&kit_dir)?;
    let mtls = connect(
        &kit,
        &ConnectOptions {
            tuning: tuning.clone(),
            ..Default::default()
        },
    )
    .await?;

    // Plain side: server certificate only, no client certificate, no framing.
    let plain_addr = plain_server(&dir, &tuning, max).await?;
    let plain = plain_client(&dir, &tuning, plain_addr).await?;

    let mut lines = Vec::new();
    let total = (args.sizes_mb.len() * args.repeats) as u64;
    let mut done = 0u64;
    progress.start("transport", total);
    for &mb in &args.sizes_mb {
        let n = mb * 1_000_000;
        let data = payload(n);
        let mut framed = encode_header(KIND, n)?.to_vec();
        framed.extend_from_slice(&data);
        // Warm-up (congestion window, allocator) for both, not measured.
        transfer(&plain, &data).await?;
        transfer(&mtls, &framed).await?;
        let (mut p, mut m) = (Vec::new(), Vec::new());
        for i in 0..args.repeats {
            // Alternate the order so neither side always runs second.
            if i % 2 == 0 {
                p.push(transfer(&plain, &data).await?);
                m.push(transfer(&mtls, &framed).await?);
            } else {
                m.push(transfer(&mtls, &framed).await?);
                p.push(transfer(&plain, &data).await?);
            }
            done += 1;
            progress.advance(
                "transport",
                done,
                total,
                &format!("{mb} MB, transfer {} of {} per transport", i + 1, args.repeats),
            );
        }
        let (plain_s, mtls_s) = (median(p), median(m));
        lines.push(Line {
            bytes: n,
            plain_ms: plain_s * 1e3,
            mtls_ms: mtls_s * 1e3,
            plain_mb_per_s: n as f64 / 1e6 / plain_s,
            mtls_mb_per_s: n as f64 / 1e6 / mtls_s,
            ratio: mtls_s / plain_s,
        });
    }
    progress.finish("transport", &format!("{} sizes", lines.len()));
    mtls.close(0u32.into(), b"done");
    plain.close(0u32.into(), b"done");
    Ok(lines)
}

/// Sends `bytes` on a new stream and waits for the one-byte acknowledgement; returns seconds.
async fn transfer(conn: &quinn::Connection, bytes: &[u8]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, bytes).await?;
    send.finish()?;
    let ack = recv.read_to_end(1).await.context("reading the acknowledgement")?;
    anyhow::ensure!(ack == b"k", "transfer not acknowledged");
    Ok(start.elapsed().as_secs_f64())
}

fn plain_cert() -> anyhow::Result<(String, String, String)> {
    let now = provision::now_utc();
    let (ca_cert, ca_key) = pki::create_ca("plain", now)?;
    let ca = Ca::from_pem(&ca_cert.pem, &ca_key, "plain")?;
    let key = pki::generate_tls_key()?;
    let cert = ca.issue_server(&["127.0.0.1".to_string()], &key, now)?;
    Ok((ca_cert.pem, cert.pem, key.serialize_pem()))
}

async fn plain_server(dir: &Path, tuning: &QuicTuning, max: usize) -> anyhow::Result<SocketAddr> {
    let (ca, cert, key) = plain_cert()?;
    std::fs::create_dir_all(dir.join("plain"))?;
    std::fs::write(dir.join("plain/ca.pem"), &ca)?;
    let cfg = quic_server_config(
        tls::dangerous::server_config_no_client_auth(cert.as_bytes(), key.as_bytes())?,
        tuning,
    )?;
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse()?)?;
    let addr = ep.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let Ok(conn) = incoming.await else { continue };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    // Same receive strategy as read_frame (one buffer, read in place) so the comparison
                    // measures TLS identity and framing, not allocation patterns.
                    // One spare byte so a full buffer still sees the end of the stream.
                    let mut buf = vec![0u8; max + 1];
                    let mut filled = 0;
                    let complete = loop {
                        if filled == buf.len() {
                            break false;
                        }
                        match recv.read(&mut buf[filled..]).await {
                            Ok(Some(n)) => filled += n,
                            Ok(None) => break true,
                            Err(_) => break false,
                        }
                    };
                    if complete {
                        let _ = send.write_all(b"k").await;
                        let _ = send.finish();
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn plain_client(dir: &Path, tuning: &QuicTuning, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
    let ca = std::fs::read(dir.join("plain/ca.pem"))?;
    let cfg = quic_client_config(tls::dangerous::client_config_no_client_auth(&ca)?, tuning)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(cfg);
    Ok(ep.connect(addr, "127.0.0.1")?.await?)
}
