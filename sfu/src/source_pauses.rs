//! Pauses in what a publisher sends: the longest waits between the
//! pictures of one encoding a receiver can decode, as they arrived at the
//! server (`Layer::observe_video` leaves out the pictures a receiver holds
//! back, see `decodable_pictures.rs`).
//!
//! A subscriber's freeze is the server's only if the publisher kept
//! sending. Chromium's VP8 encoder skips one to three frames after a
//! keyframe on a busy machine (measured 2026-12-03 with the
//! `noom_sfu::incoming_pictures` trace: 16 of 19 pauses of 87-151 ms in 20
//! runs of `tests/browser/simulcast.test.mjs` under a busy core came
//! 40-240 ms after a keyframe), and every layer switch asks for one; a
//! camera switch pauses the source too. The admin API lists these pauses
//! (`source_pauses`), so an operator, and the browser tests, can tell a
//! publisher's freeze from one the server made.
//!
//! Time is an input (the arrival of each packet); nothing here is on a
//! timer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A wait between two pictures at least this long is kept: longer than
/// a frame interval at 15 frames/s and more.
pub const REPORTED: Duration = Duration::from_millis(80);
/// The most recent pauses kept per encoding (bounded memory, whatever the
/// publisher does).
pub const KEPT: usize = 16;

/// One pause: when the picture after it arrived, and how long it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePause {
    pub ended: Instant,
    pub length: Duration,
}

/// The pauses of one encoding, newest last.
#[derive(Debug, Clone, Default)]
pub struct SourcePauses {
    /// The newest picture seen: when its first packet arrived, and its RTP
    /// timestamp.
    newest: Option<(Instant, u32)>,
    recent: VecDeque<SourcePause>,
}

impl SourcePauses {
    /// A packet with RTP timestamp `timestamp` arrived at `at`. A picture
    /// starts with the first packet of a newer timestamp; late packets
    /// (retransmissions, reordering) of older pictures change nothing.
    pub fn on_packet(&mut self, timestamp: u32, at: Instant) {
        if let Some((since, newest)) = self.newest {
            let ahead = timestamp.wrapping_sub(newest);
            if ahead == 0 || ahead >= 1 << 31 {
                return;
            }
            let length = at.saturating_duration_since(since);
            if length >= REPORTED {
                if self.recent.len() == KEPT {
                    self.recent.pop_front();
                }
                self.recent.push_back(SourcePause { ended: at, length });
            }
        }
        self.newest = Some((at, timestamp));
    }

    /// The kept pauses, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &SourcePause> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pictures_at_the_frame_rate_are_no_pause() {
        let t0 = Instant::now();
        let mut pauses = SourcePauses::default();
        for i in 0..30u32 {
            // Three packets per picture, 50 ms apart.
            for p in 0..3 {
                pauses.on_packet(i * 4500, t0 + ms(u64::from(i) * 50 + p));
            }
        }
        assert_eq!(pauses.recent().count(), 0);
    }

    #[test]
    fn a_skipped_frame_is_a_pause_from_picture_to_picture() {
        let t0 = Instant::now();
        let mut pauses = SourcePauses::default();
        pauses.on_packet(0, t0);
        pauses.on_packet(0, t0 + ms(10)); // The same picture's last packet.
        pauses.on_packet(4500, t0 + ms(50));
        pauses.on_packet(18_000, t0 + ms(200)); // Two frames skipped.
        let kept: Vec<_> = pauses.recent().copied().collect();
        assert_eq!(
            kept,
            vec![SourcePause {
                ended: t0 + ms(200),
                length: ms(150)
            }]
        );
    }

    #[test]
    fn a_late_packet_of_an_old_picture_changes_nothing() {
        let t0 = Instant::now();
        let mut pauses = SourcePauses::default();
        pauses.on_packet(9000, t0);
        pauses.on_packet(4500, t0 + ms(120)); // A retransmission.
        pauses.on_packet(13_500, t0 + ms(150));
        // 150 ms since the picture at 9000, not 30 ms since the late one.
        assert_eq!(pauses.recent().next().map(|p| p.length), Some(ms(150)));
        // Across the wrap of RTP timestamps.
        let mut wrapping = SourcePauses::default();
        wrapping.on_packet(u32::MAX - 100, t0);
        wrapping.on_packet(4400, t0 + ms(50));
        wrapping.on_packet(u32::MAX - 100, t0 + ms(300));
        assert_eq!(wrapping.recent().count(), 0);
    }

    #[test]
    fn only_the_newest_pauses_are_kept() {
        let t0 = Instant::now();
        let mut pauses = SourcePauses::default();
        for i in 0..(KEPT as u32 + 5) {
            pauses.on_packet(i * 9000, t0 + ms(u64::from(i) * 100));
        }
        assert_eq!(pauses.recent().count(), KEPT);
        assert_eq!(
            pauses.recent().last().map(|p| p.ended),
            Some(t0 + ms((KEPT as u64 + 4) * 100))
        );
    }
}
