//! Issue 5, media plane continuity, with real WebRTC clients (async `webrtc`
//! 0.21.1):
//!
//! 1. A publisher restarts its media (`restart_media`, protocol extension):
//!    a NEW peer connection with NEW SSRCs. Its subscribers are not
//!    renegotiated, keep one track per kind with the same SSRC, and see
//!    sequence numbers and timestamps continue across the switch.
//! 2. A late joiner gets the publisher's latest keyframe from the server's
//!    keyframe cache at once (long before the publisher's next periodic
//!    keyframe), and no delta frame before a keyframe.
//!
//! The test publisher (support `publish_video`) sends a VP8 keyframe first and
//! then every 60 frames (2 s) and ignores keyframe requests, so a keyframe
//! that reaches a new subscriber early can only come from the cache.
//! Timing figures are logged (`RUST_LOG=info`, `--nocapture`), not asserted
//! against targets; the browser benchmark measures those.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use support::{
    start_server, start_server_with, with_deadline, MediaKind, MediaOptions, PacketRecord,
    TestClient, MEDIA_TIMEOUT,
};
use tokio::time::Instant;

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

/// Largest step between consecutive (new highest) sequence numbers a
/// subscriber may see across a source switch.
const MAX_SEQ_STEP: u16 = 50;

/// One forwarded m-section of an SDP: kind, msid `(stream, track)`, SSRCs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForwardedSection {
    kind: String,
    mid: String,
    msid: (String, String),
    ssrcs: BTreeSet<u32>,
}

/// The live m-sections of `sdp` whose msid stream is `stream`.
fn sections_of(sdp: &str, stream: &str) -> Vec<ForwardedSection> {
    let mut out = Vec::new();
    for block in sdp.split("\nm=").skip(1) {
        let mut lines = block.lines().map(|l| l.trim_end_matches('\r'));
        let head = lines.next().unwrap_or("");
        let kind = head.split_whitespace().next().unwrap_or("").to_owned();
        let port = head.split_whitespace().nth(1).unwrap_or("0");
        let (mut mid, mut msid, mut ssrcs, mut inactive) =
            (String::new(), None, BTreeSet::new(), false);
        for l in lines {
            if let Some(m) = l.strip_prefix("a=mid:") {
                mid = m.trim().to_owned();
            } else if let Some(m) = l.strip_prefix("a=msid:") {
                let mut p = m.split_whitespace();
                msid = Some((
                    p.next().unwrap_or("").to_owned(),
                    p.next().unwrap_or("").to_owned(),
                ));
            } else if let Some(s) = l.strip_prefix("a=ssrc:") {
                if let Some(n) = s.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    ssrcs.insert(n);
                }
            } else if l == "a=inactive" {
                inactive = true;
            }
        }
        if port == "0" || inactive {
            continue;
        }
        if let Some(msid) = msid.filter(|(s, _)| s == stream) {
            out.push(ForwardedSection {
                kind,
                mid,
                msid,
                ssrcs,
            });
        }
    }
    out.sort();
    out
}

/// What a subscriber saw of one track's numbering.
#[derive(Debug, Default)]
struct Continuity {
    packets: usize,
    /// Packets older than the highest seen (reordered or retransmitted).
    late: usize,
    max_seq_step: u16,
    /// `(index, previous ts, ts)` where a new highest packet's timestamp was
    /// older than its predecessor's.
    ts_backwards: Vec<(usize, u32, u32)>,
    ssrcs: BTreeSet<u32>,
}

fn continuity(log: &[PacketRecord]) -> Continuity {
    let mut c = Continuity {
        packets: log.len(),
        ..Default::default()
    };
    let mut highest: Option<(u16, u32)> = None;
    for (i, p) in log.iter().enumerate() {
        c.ssrcs.insert(p.ssrc);
        let Some((seq, ts)) = highest else {
            highest = Some((p.seq, p.ts));
            continue;
        };
        let step = p.seq.wrapping_sub(seq) as i16;
        if step <= 0 {
            c.late += 1;
            continue;
        }
        c.max_seq_step = c.max_seq_step.max(step as u16);
        if (p.ts.wrapping_sub(ts) as i32) < 0 {
            c.ts_backwards.push((i, ts, p.ts));
        }
        highest = Some((p.seq, p.ts));
    }
    c
}

/// The step (sequence, timestamp, wall time) between the last packet that
/// arrived before `at` and the first one after it.
fn step_at(log: &[PacketRecord], at: Instant) -> Option<(i32, i64, Duration)> {
    let i = log.iter().position(|p| p.at >= at)?;
    let (a, b) = (log.get(i.checked_sub(1)?)?, &log[i]);
    Some((
        i32::from(b.seq.wrapping_sub(a.seq) as i16),
        i64::from(b.ts.wrapping_sub(a.ts) as i32),
        b.at.saturating_duration_since(a.at),
    ))
}

/// The largest wall-clock gap between consecutive packets within
/// `[from, from + window]`.
fn max_arrival_gap(log: &[PacketRecord], from: Instant, window: Duration) -> Duration {
    log.windows(2)
        .filter(|w| w[1].at >= from && w[0].at <= from + window)
        .map(|w| w[1].at.saturating_duration_since(w[0].at))
        .max()
        .unwrap_or_default()
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> i64 {
    if a >= b {
        (a - b).as_millis() as i64
    } else {
        -((b - a).as_millis() as i64)
    }
}

fn offers_received(c: &TestClient) -> Vec<Value> {
    c.history_where(|m| m["type"] == "offer")
}

async fn join_room(c: &mut TestClient, room: &str, opts: MediaOptions) -> Result<String> {
    let name = c.label.clone();
    let joined = c.join_with_media_opts(room, &name, opts).await?;
    Ok(joined.you)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_restart_keeps_subscribers_tracks_and_numbering() -> Result<()> {
    with_deadline("publisher_restart", Duration::from_secs(180), async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let room = "restart-media";
        let mut a = TestClient::connect(addr, "A").await?;
        let mut b = TestClient::connect(addr, "B").await?;
        let mut c = TestClient::connect(addr, "C").await?;
        let a_id = join_room(&mut a, room, MediaOptions::default()).await?;
        let _b_id = join_room(&mut b, room, MediaOptions::default()).await?;
        let _c_id = join_room(&mut c, room, MediaOptions::default()).await?;
        for s in [&a, &b, &c] {
            s.wait_for_tracks(4, MEDIA_TIMEOUT).await?;
        }
        let subs = [&mut b, &mut c];
        // Steady state: a second of A's media at each subscriber, and the
        // negotiation that carries A's tracks is done.
        let mut before = Vec::new();
        for s in subs.iter() {
            for kind in KINDS {
                let n = s.packets_from(&a_id, kind);
                s.wait_packets_above(&a_id, kind, n + 40, MEDIA_TIMEOUT)
                    .await?;
            }
            let sdp = s.last_offer_sdp().context("subscriber has an offer")?;
            let sections = sections_of(&sdp, &a_id);
            ensure!(
                sections.len() == 2 && sections.iter().all(|m| m.ssrcs.len() == 1),
                "{}: expected one audio and one video section for A, each with one SSRC: {sections:?}",
                s.label
            );
            let ssrc_of = |kind: MediaKind| -> Result<u32> {
                let t = s.tracks_from(&a_id, kind);
                ensure!(t.len() == 1, "{}: one {kind:?} track from A: {t:?}", s.label);
                t[0].ssrc.context("track SSRC")
            };
            before.push((
                sections,
                offers_received(s).len(),
                ssrc_of(MediaKind::Audio)?,
                ssrc_of(MediaKind::Video)?,
            ));
        }
        let old_local = a.local_ssrcs().context("A's SSRCs")?;

        // A loses its network: a new peer connection, new tracks, new SSRCs.
        let restart_at = Instant::now();
        a.restart_media(MediaOptions {
            rtcp_to_app: true,
            ..Default::default()
        })
        .await?;
        let restart_ok = restart_at.elapsed();
        let new_local = a.local_ssrcs().context("A's new SSRCs")?;
        ensure!(
            new_local.0 != old_local.0 && new_local.1 != old_local.1,
            "the restarted peer connection must publish new SSRCs: {old_local:?} -> {new_local:?}"
        );
        // The new connection receives B and C again.
        a.wait_for_tracks(4, MEDIA_TIMEOUT).await?;
        let a_connected = a.connected_at().context("A connected")?;
        // "On any switch the server requests a keyframe at once": the new
        // connection's video gets a PLI.
        a.wait_media(
            "a keyframe request (PLI) at A's new connection",
            Duration::from_secs(10),
            |x| x.publisher_feedback().0 >= 1,
        )
        .await?;
        let pli_after = a_connected.elapsed();

        let counts_after_restart: Vec<[u64; 2]> = subs
            .iter()
            .map(|s| KINDS.map(|k| s.packets_from(&a_id, k)))
            .collect();
        for (s, counts) in subs.iter().zip(&counts_after_restart) {
            // 1.5 s of the new connection's media (audio 50/s, video ~60/s).
            for (kind, n) in KINDS.into_iter().zip(counts) {
                s.wait_packets_above(&a_id, kind, n + 80, MEDIA_TIMEOUT)
                    .await
                    .with_context(|| format!("{}: A's {kind:?} after the restart", s.label))?;
            }
        }

        for (s, (sections, offers, audio_ssrc, video_ssrc)) in subs.iter().zip(&before) {
            // No renegotiation for A's tracks; if an offer came anyway, A's
            // sections are unchanged.
            let later = &offers_received(s)[*offers..];
            tracing::info!(
                "{}: {} offer(s) after A's restart (expected none)",
                s.label,
                later.len()
            );
            for o in later {
                let now = sections_of(o["sdp"].as_str().unwrap_or(""), &a_id);
                ensure!(
                    &now == sections,
                    "{}: an offer after A's restart changed A's m-sections:\n before {sections:?}\n after  {now:?}",
                    s.label
                );
            }
            for (kind, ssrc) in [(MediaKind::Audio, *audio_ssrc), (MediaKind::Video, *video_ssrc)] {
                let tracks = s.tracks_from(&a_id, kind);
                ensure!(
                    tracks.len() == 1 && !tracks[0].ended,
                    "{}: A's {kind:?} must stay one live track across the restart: {tracks:?}",
                    s.label
                );
                let log = s.track_log(&a_id, kind);
                let cont = continuity(&log);
                let step = step_at(&log, restart_at);
                let gap = max_arrival_gap(&log, restart_at, Duration::from_secs(10));
                tracing::info!(
                    "{}: A's {kind:?}: {} packets, ssrcs {:?}, max seq step {}, late {}, \
                     step across the restart (seq, ts, wall) {step:?}, \
                     longest arrival gap after the restart {gap:?}",
                    s.label,
                    cont.packets,
                    cont.ssrcs,
                    cont.max_seq_step,
                    cont.late
                );
                ensure!(
                    cont.ssrcs == BTreeSet::from([ssrc]) && tracks[0].ssrc == Some(ssrc),
                    "{}: A's {kind:?} SSRC changed across the restart: was {ssrc}, saw {:?}",
                    s.label,
                    cont.ssrcs
                );
                ensure!(
                    cont.max_seq_step < MAX_SEQ_STEP,
                    "{}: A's {kind:?} sequence numbers jumped by {} (limit {MAX_SEQ_STEP}); \
                     step across the restart {step:?}",
                    s.label,
                    cont.max_seq_step
                );
                ensure!(
                    cont.ts_backwards.is_empty(),
                    "{}: A's {kind:?} timestamps went backwards at (index, before, after) {:?}",
                    s.label,
                    &cont.ts_backwards[..cont.ts_backwards.len().min(5)]
                );
                let after = log.iter().filter(|p| p.at > restart_at).count();
                ensure!(
                    after >= 80,
                    "{}: only {after} of A's {kind:?} packets after the restart",
                    s.label
                );
            }
        }
        tracing::info!(
            "restart_media ok after {restart_ok:?}; PLI at the new connection within {pli_after:?} of it connecting"
        );
        a.close().await;
        b.close().await;
        c.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_the_cached_keyframe_at_once() -> Result<()> {
    with_deadline("late_joiner_keyframe_cache", Duration::from_secs(120), async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let room = "keyframe-cache";
        let mut a = TestClient::connect(addr, "A").await?;
        let a_id = join_room(&mut a, room, MediaOptions::default()).await?;
        // A has published a keyframe and the next one (2 s later): D joins
        // right after it, so A's next periodic keyframe is ~2 s away.
        a.wait_media(
            "A to publish its second keyframe",
            MEDIA_TIMEOUT,
            |x| x.keyframes_sent().len() >= 2,
        )
        .await?;
        let mut d = TestClient::connect(addr, "D").await?;
        let join_at = Instant::now();
        join_room(&mut d, room, MediaOptions::default()).await?;
        // The cached keyframe (3 packets), then A's next keyframe's start.
        d.wait_media(
            "D to receive 4 of A's video packets",
            MEDIA_TIMEOUT,
            |x| x.packets_from(&a_id, MediaKind::Video) >= 4,
        )
        .await?;
        let log = d.track_log(&a_id, MediaKind::Video);
        let sent = a.keyframes_sent();
        let d_connected = d.connected_at().context("D connected")?;
        let first = log[0];
        let describe = || {
            format!(
                "D's first packets (seq, ts, key, marker, +ms since D connected): {:?}; A's keyframes (seq, ts, +ms since D connected): {:?}",
                log.iter()
                    .take(8)
                    .map(|p| (
                        p.seq,
                        p.ts,
                        p.keyframe_start,
                        p.marker,
                        p.at.saturating_duration_since(d_connected).as_millis()
                    ))
                    .collect::<Vec<_>>(),
                sent.iter()
                    .map(|k| (
                        k.seq,
                        k.ts,
                        signed_ms(k.at, d_connected)
                    ))
                    .collect::<Vec<_>>()
            )
        };
        ensure!(
            first.keyframe_start,
            "the first of A's video packets at D must start a VP8 keyframe; {}",
            describe()
        );
        let k = sent
            .iter()
            .position(|k| k.ts == first.ts)
            .with_context(|| format!("D's first frame is none of A's keyframes; {}", describe()))?;
        let (key, next_sent) = (sent[k], sent.get(k + 1).copied());
        ensure!(
            key.at < d_connected,
            "D's first keyframe was sent by A after D connected, so it was forwarded live, \
             not served from the keyframe cache; {}",
            describe()
        );
        let next_due = key.at + Duration::from_secs(2);
        ensure!(
            first.at < next_due && next_sent.is_none_or(|n| first.at < n.at),
            "D's first keyframe arrived only when A's next keyframe was due; {}",
            describe()
        );
        // The whole cached frame, in order, then nothing but a keyframe:
        // deltas following a frame D never got are withheld.
        let frame_len = log.iter().take_while(|p| p.ts == first.ts).count();
        ensure!(
            frame_len == 3 && log[frame_len - 1].marker,
            "D's first frame should be A's complete 3-packet keyframe; {}",
            describe()
        );
        ensure!(
            (1..frame_len).all(|i| log[i].seq == first.seq.wrapping_add(i as u16)),
            "the cached keyframe's packets arrive in order; {}",
            describe()
        );
        let next = log[frame_len];
        ensure!(
            next.keyframe_start,
            "after the cached keyframe D must get no delta frame before a keyframe; {}",
            describe()
        );
        ensure!(
            next.seq == log[frame_len - 1].seq.wrapping_add(1)
                && (next.ts.wrapping_sub(first.ts) as i32) > 0,
            "the next keyframe continues D's numbering; {}",
            describe()
        );
        tracing::info!(
            "late joiner: join -> first keyframe {:?}; D connected -> first keyframe {:?}; \
             A's next keyframe was due {:?} after D's first one",
            first.at.saturating_duration_since(join_at),
            first.at.saturating_duration_since(d_connected),
            next_due.saturating_duration_since(first.at)
        );
        a.close().await;
        d.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Control for the test above: with `keyframes.cache = false` the same late
/// joiner's first keyframe is a live one, sent by A after D connected (so the
/// test above does tell the cache from its absence), and D still gets no
/// delta frame before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_without_keyframe_cache_waits_for_a_live_keyframe() -> Result<()> {
    with_deadline("late_joiner_no_cache", Duration::from_secs(120), async {
        let server = start_server_with(|cfg| cfg.keyframes.cache = false).await?;
        let addr = server.http_addr();
        let room = "no-keyframe-cache";
        let mut a = TestClient::connect(addr, "A").await?;
        let a_id = join_room(&mut a, room, MediaOptions::default()).await?;
        a.wait_media(
            "A to publish its second keyframe",
            MEDIA_TIMEOUT,
            |x| x.keyframes_sent().len() >= 2,
        )
        .await?;
        let mut d = TestClient::connect(addr, "D").await?;
        let join_at = Instant::now();
        join_room(&mut d, room, MediaOptions::default()).await?;
        d.wait_media(
            "D to receive A's video",
            MEDIA_TIMEOUT,
            |x| x.packets_from(&a_id, MediaKind::Video) >= 1,
        )
        .await?;
        let log = d.track_log(&a_id, MediaKind::Video);
        let sent = a.keyframes_sent();
        let d_connected = d.connected_at().context("D connected")?;
        let first = log[0];
        ensure!(
            first.keyframe_start,
            "without the cache too, D's first packet of A's video starts a keyframe: {:?}",
            &log[..log.len().min(4)]
        );
        let key = sent
            .iter()
            .find(|k| k.ts == first.ts)
            .context("D's first frame is one of A's keyframes")?;
        ensure!(
            key.at >= d_connected,
            "with keyframes.cache = false, D's first keyframe should be live (sent after D \
             connected), but A sent it {} ms before",
            signed_ms(d_connected, key.at)
        );
        tracing::info!(
            "late joiner without the cache: join -> first keyframe {:?}; D connected -> first keyframe {:?}",
            first.at.saturating_duration_since(join_at),
            first.at.saturating_duration_since(d_connected)
        );
        a.close().await;
        d.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
