//! What crosses the network in a benchmark experiment, and how it is counted. `WireExchange` builds the
//! real signed wire messages of a round (RoundOpen and AggregateLabels from the coordinator, SoftLabels
//! from each participant; FedAvg's global model down and each client's model up, signed and framed the
//! same way), and either counts their frame bytes or, with a `Link`, moves every frame over a real
//! mutually authenticated QUIC connection per participant (a provisioned federation on loopback) and
//! counts the UDP bytes quinn reports, so both methods pay exactly the same transport.

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use fedistill_coordinator::transport::{FederationFiles, Server, ServerOptions};
use fedistill_participant::transport::{connect, ConnectOptions, Kit};
use fedistill_shared::crypto::{
    Digest, FederationId, ParticipantId, RoundId, Signed, SignedMessage, Signer, SigningIdentity,
};
use fedistill_shared::protocol::{round_open_message, softlabels, AggregationRule, Encoding};
use fedistill_shared::provision;
use fedistill_shared::wire::messages::{
    AggregateLabels, SoftLabels, ToCoordinator, ToParticipant, KIND_TO_COORDINATOR, KIND_TO_PARTICIPANT,
};
use fedistill_shared::wire::{decode_header, encode_frame, encode_header, FrameKind};
use fedistill_transport::{read_frame, write_frame, QuicTuning};

/// FedAvg's model transfer (global model down, client model up): the safetensors bytes, signed like
/// every other message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelWeights {
    /// The round.
    pub round: RoundId,
    /// safetensors bytes of the model.
    #[serde(with = "fedistill_shared::wire::frame::bytes")]
    pub safetensors: Vec<u8>,
}

impl SignedMessage for ModelWeights {
    const DOMAIN: &'static str = "fedistill/bench-model-weights";
}

/// Frame kind of [`ModelWeights`] (benchmark only; not part of the protocol).
const KIND_MODEL: FrameKind = FrameKind(240);
const MAX_FRAME: usize = 256 << 20;
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Frame kinds of the link's own pull request and upload acknowledgement.
const KIND_PULL: FrameKind = FrameKind(241);
const KIND_ACK: FrameKind = FrameKind(242);

fn raw_frame(kind: FrameKind, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut f = encode_header(kind, payload.len())?.to_vec();
    f.extend_from_slice(payload);
    Ok(f)
}

fn is_kind(frame: &[u8], kind: FrameKind) -> bool {
    decode_header(frame, MAX_FRAME).map(|h| h.kind == kind).unwrap_or(false)
}

/// Moves an experiment's messages and counts the bytes.
pub trait Exchange {
    /// Round `round` opens on `ids`; every participant uploads its rows of `uploads` encoded with
    /// `encoding`; returns the rows as the coordinator decodes them.
    fn labels_up(
        &mut self,
        round: u64,
        ids: &[u64],
        uploads: &[Vec<f32>],
        classes: usize,
        encoding: Encoding,
    ) -> anyhow::Result<Vec<Vec<f32>>>;
    /// The coordinator sends the consensus, packed with `encoding` (its `aggregate_encoding`), to every
    /// participant; returns it as they decode it.
    fn labels_down(
        &mut self,
        round: u64,
        rule: AggregationRule,
        consensus: &[f32],
        rows: usize,
        classes: usize,
        encoding: Encoding,
    ) -> anyhow::Result<Vec<f32>>;
    /// The server sends the global model to `clients` clients; returns the bytes they receive.
    fn model_down(&mut self, round: u64, safetensors: &[u8], clients: usize) -> anyhow::Result<Vec<u8>>;
    /// Every client uploads its model; returns what the server receives.
    fn models_up(&mut self, round: u64, models: &[Vec<u8>]) -> anyhow::Result<Vec<Vec<u8>>>;
    /// Bytes since the last reset.
    fn bytes(&self) -> u64;
    /// Starts counting from zero (between methods).
    fn reset(&mut self);
}

/// The real messages, counted at the frame level or carried over a [`Link`].
pub struct WireExchange {
    federation: FederationId,
    coordinator: SigningIdentity,
    participants: Vec<(ParticipantId, SigningIdentity)>,
    seq: u64,
    frame_bytes: u64,
    link: Option<Link>,
    public_digest: Digest,
}

impl WireExchange {
    /// `participants` signers with deterministic keys; `link` carries the frames when given.
    pub fn new(participants: usize, link: Option<Link>) -> anyhow::Result<Self> {
        let key = |i: u8| SigningIdentity::from_seed([i; 32]);
        Ok(WireExchange {
            federation: FederationId::new("bench").context("federation id")?,
            coordinator: key(0),
            participants: (0..participants)
                .map(|p| (ParticipantId::new(format!("p{p:03}")), key((p % 250) as u8 + 1)))
                .collect(),
            seq: 0,
            frame_bytes: 0,
            link,
            public_digest: Digest::of(b"bench public set"),
        })
    }

    fn sign<T: SignedMessage>(&mut self, signer: Option<usize>, round: u64, msg: &T) -> anyhow::Result<Signed<T>> {
        self.seq += 1;
        let (who, id) = match signer {
            None => (Signer::Coordinator, &self.coordinator),
            Some(p) => (
                Signer::Participant(self.participants[p].0.clone()),
                &self.participants[p].1,
            ),
        };
        Ok(Signed::sign(
            id,
            who,
            self.federation.clone(),
            RoundId(round),
            self.seq,
            msg,
        )?)
    }

    /// Sends a coordinator frame to participant `p`; returns the bytes it received.
    fn down(&mut self, p: usize, frame: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        self.frame_bytes += frame.len() as u64;
        match &mut self.link {
            Some(l) => l.down(p, frame),
            None => Ok(frame),
        }
    }

    /// Sends participant `p`'s frame to the coordinator; returns what the coordinator received.
    fn up(&mut self, p: usize, frame: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        self.frame_bytes += frame.len() as u64;
        match &mut self.link {
            Some(l) => l.up(p, frame),
            None => Ok(frame),
        }
    }
}

fn payload_of<T: serde::de::DeserializeOwned>(frame: &[u8]) -> anyhow::Result<T> {
    Ok(fedistill_shared::wire::decode_frame::<T>(frame, MAX_FRAME)?.value)
}

impl Exchange for WireExchange {
    fn labels_up(
        &mut self,
        round: u64,
        ids: &[u64],
        uploads: &[Vec<f32>],
        classes: usize,
        encoding: Encoding,
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        let rows = ids.len();
        // The coordinator's own assembly of an opening, over the experiment's rows.
        let open = round_open_message(
            RoundId(round),
            0,
            self.public_digest,
            ids.to_vec(),
            2.0,
            AggregationRule::Mean,
            60_000,
            uploads.len() as u32,
            classes as u32,
            None,
        );
        let signed_open = self.sign(None, round, &open)?;
        let open_frame = encode_frame(KIND_TO_PARTICIPANT, &ToParticipant::Open(signed_open))?;
        let mut out = Vec::with_capacity(uploads.len());
        for (p, probs) in uploads.iter().enumerate() {
            let received = self.down(p, open_frame.clone())?;
            let ToParticipant::Open(o) = payload_of::<ToParticipant>(&received)? else {
                anyhow::bail!("participant {p} received something other than the round opening");
            };
            let body = softlabels::soft_labels_message(o.round, self.public_digest, ids, probs, classes, encoding, 0)?;
            let signed = self.sign(Some(p), round, &body)?;
            let frame = encode_frame(KIND_TO_COORDINATOR, &ToCoordinator::SoftLabels(signed))?;
            let got = self.up(p, frame)?;
            let ToCoordinator::SoftLabels(s) = payload_of::<ToCoordinator>(&got)? else {
                anyhow::bail!("the coordinator received something other than soft labels from {p}");
            };
            let body: SoftLabels = fedistill_shared::wire::decode_payload(&s.payload)?;
            out.push(softlabels::decode(&body.payload, rows, classes, body.encoding)?);
        }
        Ok(out)
    }

    fn labels_down(
        &mut self,
        round: u64,
        rule: AggregationRule,
        consensus: &[f32],
        rows: usize,
        classes: usize,
        encoding: Encoding,
    ) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(consensus.len() == rows * classes, "consensus is not {rows} x {classes}");
        let agg = fedistill_shared::protocol::aggregate_labels_message(
            RoundId(round),
            rule,
            self.participants.iter().map(|(id, _)| id.clone()).collect(),
            Vec::new(),
            consensus,
            classes,
            encoding,
            // A C2SP checkpoint note of the coordinator's log is about this long.
            "x".repeat(180),
        )?;
        let signed = self.sign(None, round, &agg)?;
        let frame = encode_frame(KIND_TO_PARTICIPANT, &ToParticipant::Aggregate(signed))?;
        let mut last = Vec::new();
        for p in 0..self.participants.len() {
            let got = self.down(p, frame.clone())?;
            let ToParticipant::Aggregate(a) = payload_of::<ToParticipant>(&got)? else {
                anyhow::bail!("participant {p} received something other than the aggregate");
            };
            let body: AggregateLabels = fedistill_shared::wire::decode_payload(&a.payload)?;
            last = softlabels::decode(&body.probabilities, rows, classes, body.encoding)?;
        }
        Ok(last)
    }

    fn model_down(&mut self, round: u64, safetensors: &[u8], clients: usize) -> anyhow::Result<Vec<u8>> {
        let msg = ModelWeights {
            round: RoundId(round),
            safetensors: safetensors.to_vec(),
        };
        let signed = self.sign(None, round, &msg)?;
        let frame = encode_frame(KIND_MODEL, &signed)?;
        let mut last = Vec::new();
        for p in 0..clients {
            let got = self.down(p, frame.clone())?;
            let s: Signed<ModelWeights> = payload_of(&got)?;
            last = fedistill_shared::wire::decode_payload::<ModelWeights>(&s.payload)?.safetensors;
        }
        Ok(last)
    }

    fn models_up(&mut self, round: u64, models: &[Vec<u8>]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(models.len());
        for (p, m) in models.iter().enumerate() {
            let msg = ModelWeights {
                round: RoundId(round),
                safetensors: m.clone(),
            };
            let signed = self.sign(Some(p), round, &msg)?;
            let got = self.up(p, encode_frame(KIND_MODEL, &signed)?)?;
            let s: Signed<ModelWeights> = payload_of(&got)?;
            out.push(fedistill_shared::wire::decode_payload::<ModelWeights>(&s.payload)?.safetensors);
        }
        Ok(out)
    }

    fn bytes(&self) -> u64 {
        match &self.link {
            Some(l) => l.wire_bytes().saturating_sub(l.baseline),
            None => self.frame_bytes,
        }
    }

    fn reset(&mut self) {
        self.frame_bytes = 0;
        if let Some(l) = &mut self.link {
            l.baseline = l.wire_bytes();
        }
    }
}

/// One mutually authenticated QUIC connection per participant to an in-process coordinator endpoint,
/// all on loopback, from a federation provisioned in a temporary directory.
pub struct Link {
    rt: tokio::runtime::Runtime,
    conns: Vec<quinn::Connection>,
    /// Frames the coordinator will hand to each participant on its next pull.
    outbox: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    /// Frames the coordinator received, per participant.
    inbox: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    baseline: u64,
    dir: std::path::PathBuf,
}

impl Drop for Link {
    fn drop(&mut self) {
        for c in &self.conns {
            c.close(0u32.into(), b"done");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Link {
    /// Provisions a federation of `participants` and connects each of them.
    pub fn start(participants: usize) -> anyhow::Result<Link> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let dir = std::env::temp_dir().join(format!(
            "fedistill-bench-link-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let outbox = Arc::new(Mutex::new(vec![None; participants]));
        let inbox = Arc::new(Mutex::new(vec![None; participants]));
        let conns = rt.block_on(Self::connect_all(&dir, participants, outbox.clone(), inbox.clone()))?;
        Ok(Link {
            rt,
            conns,
            outbox,
            inbox,
            baseline: 0,
            dir,
        })
    }

    async fn connect_all(
        dir: &std::path::Path,
        participants: usize,
        outbox: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
        inbox: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    ) -> anyhow::Result<Vec<quinn::Connection>> {
        let fed_dir = dir.join("fed");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("reserving a port")?;
        let port = socket.local_addr()?.port();
        let fed = FederationId::new("bench").context("federation id")?;
        let now = provision::now_utc();
        provision::init(&fed_dir, &fed, &[format!("127.0.0.1:{port}")], None, now).context("provisioning")?;
        let mut kits = Vec::with_capacity(participants);
        for p in 0..participants {
            let id = ParticipantId::new(format!("p{p:03}"));
            kits.push((
                id.clone(),
                provision::add_participant(&fed_dir, &id, now).context("adding a participant")?,
            ));
        }
        let files = FederationFiles::from_federation_dir(&fed_dir)?;
        let tuning = QuicTuning::default();
        let server = Server::bind_socket(
            socket,
            &files,
            ServerOptions {
                tuning: tuning.clone(),
                ..ServerOptions::default()
            },
        )?;
        let names: Vec<ParticipantId> = kits.iter().map(|(id, _)| id.clone()).collect();
        tokio::spawn(async move {
            while let Some(Ok(peer)) = server.accept().await {
                let Some(index) = names.iter().position(|n| *n == peer.participant) else {
                    continue;
                };
                let (outbox, inbox) = (outbox.clone(), inbox.clone());
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = peer.conn.accept_bi().await {
                        let Ok(frame) = read_frame(&mut recv, MAX_FRAME, READ_TIMEOUT).await else {
                            continue;
                        };
                        // A pull frame asks for the participant's outbox; anything else is an upload.
                        if is_kind(&frame, KIND_PULL) {
                            let out = outbox.lock().await[index].take().unwrap_or_default();
                            let _ = write_frame(&mut send, &out).await;
                        } else {
                            inbox.lock().await[index] = Some(frame);
                            if let Ok(ack) = raw_frame(KIND_ACK, b"k") {
                                let _ = write_frame(&mut send, &ack).await;
                            }
                        }
                        let _ = send.finish();
                    }
                });
            }
        });
        let mut conns = Vec::with_capacity(participants);
        for (_, kit_dir) in &kits {
            let kit = Kit::load(kit_dir)?;
            conns.push(
                connect(
                    &kit,
                    &ConnectOptions {
                        tuning: tuning.clone(),
                        ..Default::default()
                    },
                )
                .await?,
            );
        }
        Ok(conns)
    }

    fn roundtrip(&self, p: usize, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        let conn = self.conns.get(p).context("no such participant")?.clone();
        let request = request.to_vec();
        self.rt.block_on(async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            write_frame(&mut send, &request).await?;
            send.finish()?;
            Ok(read_frame(&mut recv, MAX_FRAME, READ_TIMEOUT).await?)
        })
    }

    fn down(&mut self, p: usize, frame: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        {
            let outbox = self.outbox.clone();
            self.rt.block_on(async move { outbox.lock().await[p] = Some(frame) });
        }
        self.roundtrip(p, &raw_frame(KIND_PULL, b"P")?)
    }

    fn up(&mut self, p: usize, frame: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let ack = self.roundtrip(p, &frame)?;
        anyhow::ensure!(is_kind(&ack, KIND_ACK), "upload of participant {p} not acknowledged");
        let inbox = self.inbox.clone();
        self.rt
            .block_on(async move { inbox.lock().await[p].take() })
            .context("the coordinator side holds no upload")
    }

    /// UDP bytes sent and received by every participant connection (QUIC and TLS overhead included).
    pub fn wire_bytes(&self) -> u64 {
        self.conns
            .iter()
            .map(|c| {
                let s = c.stats();
                s.udp_tx.bytes + s.udp_rx.bytes
            })
            .sum()
    }
}
