//! The per-packet path in pieces (issue #4, point 1): datagram demux, the
//! per-subscriber rewrite, SRTP protect, fan-out of one packet to N
//! subscribers, and the caches a packet passes through.
//! `cargo bench -p noom-benches --bench per_packet`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use noom_sfu::{classify, stun_local_ufrag, KeyframeCache, PacketCache, RtpMunger, RtpRewriter};
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::time::Instant;

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

criterion_group!(
    benches,
    demux,
    rewrite,
    srtp,
    fan_out,
    fan_out_protected,
    caches
);
criterion_main!(benches);
