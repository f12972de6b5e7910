//! Diagnostics of RTCP feedback about our published tracks: an interceptor
//! that delivers inbound RTCP to the application, and a task counting the
//! PLIs and NACKs that reach a local track. Installed only with
//! `MediaOptions::rtcp_to_app`; kept public for the same reason as
//! [`crate::socket_tap`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

/// Beyond the built-in interceptor slots, as the server's own tap.
pub const RTCP_TAP_SLOT: usize = 14_000;

/// Marks every inbound RTCP packet `DeliverToApplication`, so feedback about
/// our published tracks (PLI, NACK) reaches `TrackLocal::poll`.
#[derive(Default)]
pub struct RtcpToApp {
    reads: VecDeque<rtc::interceptor::TaggedPacket>,
    writes: VecDeque<rtc::interceptor::TaggedPacket>,
}

impl rtc::sansio::Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()>
    for RtcpToApp
{
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, rtc::interceptor::Packet::Rtcp(_)) {
            msg.message
                .add(rtc::interceptor::Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: std::time::Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl rtc::interceptor::Interceptor for RtcpToApp {
    fn bind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
}

/// PLIs and NACK packets received about one SSRC of ours.
#[derive(Default)]
pub struct FeedbackCounts {
    pub plis: AtomicU64,
    pub nacks: AtomicU64,
}

/// Counts the PLIs and NACKs that reach one of our published tracks;
/// `wake` runs after each batch. Runs until aborted.
pub async fn count_local_rtcp(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    counts: Arc<FeedbackCounts>,
    wake: impl Fn() + Send + 'static,
) {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    use webrtc::media_stream::track_local::TrackLocalEvent;
    loop {
        // `poll` returns None at once until the track is bound.
        let Some(event) = track.poll().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        #[allow(irrefutable_let_patterns)]
        let TrackLocalEvent::OnRtcpPacket(packets) = event
        else {
            continue;
        };
        for p in packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                if pli.media_ssrc == ssrc {
                    counts.plis.fetch_add(1, Ordering::SeqCst);
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                if nack.media_ssrc == ssrc {
                    counts.nacks.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        wake();
    }
}
