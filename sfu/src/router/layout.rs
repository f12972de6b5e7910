//! What each subscriber asks to see of each video: the `layout` message
//! (tile sizes, hidden tiles) and, for the bandwidth allocator, a cap on the
//! encoding or a pause per video. Both only set a down track's
//! `LayerSelector`; the switch itself happens on the packet path, at the
//! next keyframe of the chosen encoding (which the packet path asks for).

use super::*;
use crate::command::VideoLayout;

impl Router {
    /// A subscriber's `layout`: every video it receives gets the size it
    /// names (width 0: hidden), or no size limit when not named.
    /// Participants it does not receive are ignored.
    pub(super) fn apply_layout(&mut self, subscriber: ConnKey, videos: &[VideoLayout]) {
        let Router { peers, tracks, .. } = self;
        let Some(sub) = peers.get(&subscriber) else {
            return;
        };
        for key in sub.subscribed.values() {
            let Some(track) = tracks.get_mut(key).filter(|t| t.is_video()) else {
                continue;
            };
            let Some(publisher) = peers.get(&track.publisher).map(|p| &p.participant) else {
                continue;
            };
            let wanted = videos.iter().rev().find(|v| &v.publisher == publisher);
            let Some(dt) = track
                .down_tracks
                .iter_mut()
                .find(|d| d.subscriber == subscriber)
            else {
                continue;
            };
            dt.selector.hidden = wanted.is_some_and(|v| v.width == 0);
            dt.selector.wanted_height = wanted.filter(|v| v.width > 0).map(|v| v.height);
            tracing::debug!(
                subscriber = %sub.participant,
                %publisher,
                hidden = dt.selector.hidden,
                height = ?dt.selector.wanted_height,
                "layout"
            );
        }
    }

    /// For the bandwidth allocator: the highest encoding (0 = lowest)
    /// `subscriber` may get of video `key`, `None` for no cap, and whether
    /// to send none of it (`paused`). Audio is never paused.
    pub(super) fn limit_video(
        &mut self,
        subscriber: ConnKey,
        key: TrackKey,
        max_layer: Option<usize>,
        paused: bool,
        urgent: bool,
    ) {
        let Some(track) = self.tracks.get_mut(&key).filter(|t| t.is_video()) else {
            return;
        };
        if let Some(dt) = track
            .down_tracks
            .iter_mut()
            .find(|d| d.subscriber == subscriber)
        {
            dt.selector.max_layer = max_layer;
            dt.selector.paused = paused;
            dt.selector.cap_urgent = urgent;
        }
    }
}
