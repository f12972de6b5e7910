//! The per-packet path in pieces (issue #4, point 1): datagram demux, the
//! per-subscriber rewrite, SRTP protect, fan-out of one packet to N
//! subscribers, the caches a packet passes through, and the forwarding of
//! one video to ten subscribers with one encoding and with simulcast
//! (issue #16, point 9; see `simulcast_forwarding`).
//! `cargo bench -p noom-benches --bench per_packet`.

use bytes::Bytes;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use noom_client::simulcast_publish::{vp8_payload, SimulcastLayer, Vp8Picture, LAYERS};
use noom_sfu::forward_bench::ForwardBench;
use noom_sfu::{classify, stun_local_ufrag, KeyframeCache, PacketCache, RtpMunger, RtpRewriter};
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::time::{Duration, Instant};

fn video_packet(seq: u16) -> rtp::Packet {
    let mut header = rtp::Header {
        version: 2,
        payload_type: 96,
        sequence_number: seq,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
        marker: seq.is_multiple_of(4),
        extension: true,
        extension_profile: 0xBEDE,
        ..Default::default()
    };
    for (id, len) in [(2u8, 1usize), (3, 2), (4, 3)] {
        header.extensions.push(rtp::header::Extension {
            id,
            payload: Bytes::from(vec![0x55; len]),
        });
    }
    let mut payload = vec![0u8; 1_150];
    payload[0] = 0x90; // VP8 descriptor, start of partition
    rtp::Packet {
        header,
        payload: Bytes::from(payload),
    }
}

fn stun_request() -> Vec<u8> {
    let username = b"serverufrag12345:clientufrag";
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&[0x00, 0x06, 0, username.len() as u8]);
    m.extend_from_slice(username);
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn rewriter() -> RtpRewriter {
    RtpRewriter {
        ssrc: 0xCAFE_BABE,
        payload_type: 98,
        extension_ids: vec![(2, 5)],
        transport_cc_id: None,
    }
}

fn demux(c: &mut Criterion) {
    let stun = stun_request();
    let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
    c.bench_function("demux/classify+ufrag (STUN)", |b| {
        b.iter(|| {
            let kind = classify(black_box(&stun));
            (kind, stun_local_ufrag(black_box(&stun)))
        })
    });
    c.bench_function("demux/classify (RTP)", |b| {
        b.iter(|| classify(black_box(&rtp)))
    });
}

fn rewrite(c: &mut Criterion) {
    let packet = video_packet(1000);
    let rewriter = rewriter();
    let mut munger = RtpMunger::new(90_000);
    let now = Instant::now();
    let mut seq = 0u16;
    c.bench_function("rewrite/one subscriber (clone + munge + rewrite)", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let mut out = black_box(&packet).clone();
            if let Some((s, ts)) = munger.map(seq, out.header.timestamp, now) {
                out.header.sequence_number = s;
                out.header.timestamp = ts;
            }
            rewriter.rewrite(&mut out);
            out
        })
    });
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out/clone + munge + rewrite");
    for n in [2usize, 5, 10, 25, 50] {
        let packet = video_packet(1000);
        let rewriters: Vec<RtpRewriter> = (0..n).map(|_| rewriter()).collect();
        let mut mungers: Vec<RtpMunger> = (0..n).map(|_| RtpMunger::new(90_000)).collect();
        let now = Instant::now();
        let mut seq = 0u16;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                for (r, m) in rewriters.iter().zip(mungers.iter_mut()) {
                    let mut out = packet.clone();
                    if let Some((s, ts)) = m.map(seq, out.header.timestamp, now) {
                        out.header.sequence_number = s;
                        out.header.timestamp = ts;
                    }
                    r.rewrite(&mut out);
                    black_box(out);
                }
            })
        });
    }
    group.finish();
}

fn srtp_context(profile: ProtectionProfile) -> Context {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("srtp context")
}

/// A 1,200-byte RTP packet on the wire before SRTP (header, extensions,
/// payload).
fn packet_1200(seq: u16) -> rtp::Packet {
    let mut p = video_packet(seq);
    let headers = p.marshal_size() - p.payload.len();
    let mut payload = vec![0u8; 1_200 - headers];
    payload[0] = 0x90;
    p.payload = Bytes::from(payload);
    p
}

fn srtp(c: &mut Criterion) {
    let packet = packet_1200(1);
    assert_eq!(packet.marshal_size(), 1_200);
    let plain = packet.marshal().expect("marshal");
    c.bench_function("rtp/marshal 1200 B", |b| {
        b.iter(|| black_box(&packet).marshal().expect("marshal"))
    });
    for (name, profile) in [
        ("AES-128-GCM", ProtectionProfile::AeadAes128Gcm),
        (
            "AES-128-CM-HMAC-SHA1-80",
            ProtectionProfile::Aes128CmHmacSha1_80,
        ),
    ] {
        let mut ctx = srtp_context(profile);
        let mut header = packet.header.clone();
        c.bench_function(&format!("srtp/protect 1200 B ({name})"), |b| {
            b.iter(|| {
                header.sequence_number = header.sequence_number.wrapping_add(1);
                ctx.encrypt_rtp_with_header(black_box(&plain), &header)
                    .expect("protect")
            })
        });
    }
}

/// Per subscriber, everything a forwarding SFU must do short of the
/// system call: clone, munge, rewrite, marshal, SRTP protect.
fn fan_out_protected(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out/+ marshal + protect (AES-128-GCM)");
    for n in [2usize, 10, 50] {
        let packet = packet_1200(1000);
        let rewriters: Vec<RtpRewriter> = (0..n).map(|_| rewriter()).collect();
        let mut mungers: Vec<RtpMunger> = (0..n).map(|_| RtpMunger::new(90_000)).collect();
        let mut contexts: Vec<Context> = (0..n)
            .map(|_| srtp_context(ProtectionProfile::AeadAes128Gcm))
            .collect();
        let now = Instant::now();
        let mut seq = 0u16;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                for ((r, m), ctx) in rewriters.iter().zip(mungers.iter_mut()).zip(&mut contexts) {
                    let mut out = packet.clone();
                    if let Some((s, ts)) = m.map(seq, out.header.timestamp, now) {
                        out.header.sequence_number = s;
                        out.header.timestamp = ts;
                    }
                    r.rewrite(&mut out);
                    let plain = out.marshal().expect("marshal");
                    black_box(
                        ctx.encrypt_rtp_with_header(&plain, &out.header)
                            .expect("protect"),
                    );
                }
            })
        });
    }
    group.finish();
}

fn caches(c: &mut Criterion) {
    let packets: Vec<rtp::Packet> = (0..1024).map(video_packet).collect();
    let mut cache = PacketCache::default();
    let mut i = 0usize;
    c.bench_function("cache/packet insert + NACK lookup", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            cache.insert(&packets[i]);
            cache
                .get(black_box(
                    packets[(i + 1000) % packets.len()].header.sequence_number,
                ))
                .is_some()
        })
    });
    let mut keyframes = KeyframeCache::default();
    c.bench_function("cache/keyframe observe", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            keyframes.observe(black_box(&packets[i]));
        })
    });
}

/// One encoding of the synthetic camera: packets per delta frame and per
/// keyframe, payload bytes, and its numbering.
struct Encoding {
    layer: SimulcastLayer,
    ssrc: u32,
    delta_packets: u32,
    key_packets: u32,
    payload: usize,
    seq: u16,
    ts: u32,
    picture_id: u16,
}

/// Two seconds of a 30 fps camera, as the publisher sends them: the
/// encodings of one frame one after the other, a keyframe on all of them
/// first (every 2 s, as the load generator's publishers).
struct Camera {
    encodings: Vec<Encoding>,
}

const FRAMES_PER_BATCH: u32 = 60;

impl Camera {
    /// `which`: indices into `LAYERS`. Frame sizes of the load generator's
    /// rates: q one 585-byte packet a frame, h two, f six of 1,160 bytes.
    fn new(which: &[usize]) -> Self {
        let shape = [(1, 585), (2, 1_040), (6, 1_160)];
        Camera {
            encodings: which
                .iter()
                .map(|&i| Encoding {
                    layer: LAYERS[i],
                    ssrc: 0xA000 + i as u32,
                    delta_packets: shape[i].0,
                    key_packets: shape[i].0 * 3,
                    payload: shape[i].1,
                    seq: 1_000 * i as u16,
                    ts: 7_000 * i as u32,
                    picture_id: 100 * i as u16,
                })
                .collect(),
        }
    }

    fn batch(&mut self) -> Vec<rtp::Packet> {
        let mut out = Vec::new();
        for frame in 0..FRAMES_PER_BATCH {
            let key = frame == 0;
            for e in &mut self.encodings {
                e.ts = e.ts.wrapping_add(3_000);
                e.picture_id = (e.picture_id + 1) & 0x7fff;
                let count = if key { e.key_packets } else { e.delta_packets };
                for i in 0..count {
                    let pic = Vp8Picture {
                        picture_id: e.picture_id,
                        tl0_pic_idx: e.picture_id as u8,
                        first_of_frame: i == 0,
                        key,
                    };
                    out.push(rtp::Packet {
                        header: rtp::Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: e.seq,
                            timestamp: e.ts,
                            ssrc: e.ssrc,
                            marker: i + 1 == count,
                            ..Default::default()
                        },
                        payload: Bytes::from(vp8_payload(e.payload, pic, &e.layer, e.ssrc, e.seq)),
                    });
                    e.seq = e.seq.wrapping_add(1);
                }
            }
        }
        out
    }
}

/// A forwarding case: its name, the encodings published (indices into
/// `LAYERS`), and the height subscriber `i` asks for in iteration `n`.
type Case = (
    &'static str,
    &'static [usize],
    fn(usize, u32) -> Option<u32>,
);

/// One video to ten subscribers through the router's forwarding steps
/// (`noom_sfu::forward_bench`: caches, layer selection, munging, VP8
/// descriptor rewrite, marshal, SRTP protect), two seconds of the camera
/// per iteration; the throughput counts datagrams sent, so time per
/// element is the cost per forwarded packet.
///
/// - single: one encoding (the 1280x720 one), everyone gets it;
/// - simulcast, all on f: the server receives q, h and f and forwards f;
/// - simulcast, q/h/f: subscriber i shows the video at the size of
///   encoding i mod 3;
/// - simulcast, switching: every subscriber changes between h and f at
///   every keyframe (the descriptor rewrite and timestamp mapping of a
///   switch, once per subscriber per iteration).
fn simulcast_forwarding(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10;
    let mut group = c.benchmark_group("forward 1 video to 10 (per datagram)");
    let cases: [Case; 4] = [
        ("single encoding", &[2], |_, _| None),
        ("simulcast, all on f", &[0, 1, 2], |_, _| None),
        ("simulcast, q/h/f", &[0, 1, 2], |i, _| {
            Some(u32::from(LAYERS[i % 3].height))
        }),
        (
            "simulcast, h<->f switch every keyframe",
            &[0, 1, 2],
            |_, n| Some(if n % 2 == 0 { 360 } else { 720 }),
        ),
    ];
    for (name, which, wanted) in cases {
        let rids: Vec<(&str, u32)> = which
            .iter()
            .map(|&i| {
                (
                    if which.len() == 1 { "" } else { LAYERS[i].rid },
                    0xA000 + i as u32,
                )
            })
            .collect();
        let mut bench = ForwardBench::new(&rids, SUBSCRIBERS);
        // A/B of the outgoing SRTP: rtc-srtp's context against ours.
        if std::env::var_os("NOOM_BENCH_RTC_SRTP").is_some() {
            bench.use_rtc_srtp();
        }
        let mut camera = Camera::new(which);
        let mut n = 0u32;
        let run = |bench: &mut ForwardBench, batch: &[rtp::Packet], n: u32| {
            for i in 0..SUBSCRIBERS {
                bench.set_wanted_height(i, wanted(i, n));
            }
            let now = Instant::now();
            batch.iter().map(|p| bench.forward(p, now)).sum::<u64>()
        };
        // Two batches to learn the sizes and settle, then the datagrams of
        // two (the switching case alternates between h and f) to size the
        // throughput of one.
        for _ in 0..2 {
            n += 1;
            run(&mut bench, &camera.batch(), n);
        }
        let mut datagrams = 0;
        for _ in 0..2 {
            n += 1;
            datagrams += run(&mut bench, &camera.batch(), n);
        }
        let datagrams = datagrams / 2;
        group.throughput(Throughput::Elements(datagrams));
        group.bench_function(name, |b| {
            b.iter_batched(
                || camera.batch(),
                |batch| {
                    n += 1;
                    black_box(run(&mut bench, &batch, n))
                },
                BatchSize::LargeInput,
            )
        });
        println!(
            "{name}: {datagrams} datagrams from {} publisher packets per iteration, {} layer switches in all",
            camera.batch().len(),
            bench.layer_switches()
        );
    }
    group.finish();
}

/// One video's publisher datagrams read and forwarded to 2 and to 10
/// subscribers (`noom_sfu::forward_bench::ForwardBench::receive`: SRTP
/// check and decrypt, parse, the forwarding steps above, the publisher's
/// feedback generators), each packet with a transport-wide sequence number
/// as browsers send them; the throughput counts publisher datagrams, so
/// time per element is the cost of one datagram in. The 1280x720 encoding
/// of the camera above, two seconds per iteration.
fn receive_and_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("receive 1 video (per publisher datagram)");
    for subscribers in [2usize, 10] {
        let mut bench = ForwardBench::new(&[("", 0xA002)], subscribers);
        bench.set_transport_cc(Some(3));
        // A/B of the SRTP: rtc-srtp's contexts against ours, both ways or
        // for the publisher's datagrams only.
        if std::env::var_os("NOOM_BENCH_RTC_SRTP").is_some() {
            bench.use_rtc_srtp();
        } else if std::env::var_os("NOOM_BENCH_RTC_SRTP_IN").is_some() {
            bench.read_with_rtc_srtp();
        }
        let mut camera = Camera::new(&[2]);
        let mut publisher = ForwardBench::publisher();
        let mut sealed = move || -> Vec<Vec<u8>> {
            camera
                .batch()
                .into_iter()
                .map(|packet| publisher.seal(packet))
                .collect()
        };
        let mut n = 0u64;
        let run = |bench: &mut ForwardBench, batch: &[Vec<u8>], n: u64| {
            // Time advances a batch's two seconds per iteration.
            let now = Instant::now() + Duration::from_secs(2 * n);
            batch.iter().map(|d| bench.receive(d, now)).sum::<u64>()
        };
        for _ in 0..2 {
            n += 1;
            run(&mut bench, &sealed(), n);
        }
        let first = sealed();
        group.throughput(Throughput::Elements(first.len() as u64));
        n += 1;
        assert!(run(&mut bench, &first, n) > 0, "nothing forwarded");
        group.bench_function(format!("to {subscribers}"), |b| {
            b.iter_batched(
                &mut sealed,
                |batch| {
                    n += 1;
                    black_box(run(&mut bench, &batch, n))
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    demux,
    rewrite,
    srtp,
    fan_out,
    fan_out_protected,
    caches,
    simulcast_forwarding,
    receive_and_forward
);
criterion_main!(benches);
