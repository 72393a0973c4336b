//! An interceptor that lets RTCP sender reports through to the application.
//!
//! webrtc-rs's interceptor chain stops inbound RTCP before the application unless an interceptor
//! marks it `DeliverToApplication`. We need sender reports (they tie each speaker's RTP clock to
//! the sender's wall clock, for timeline sync), so this marks exactly those and nothing else.
//! It sits in the `IntervalPli` slot, which an audio-only chain never uses, above the report
//! interceptors so they still see every packet first.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Marks inbound RTCP compounds that contain a sender report for delivery.
#[derive(Default)]
pub(crate) struct SenderReportTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet
            && pkts.iter().any(|p| {
                p.as_any()
                    .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                    .is_some()
            })
            && !msg.message.has(&Attribute::DeliverToApplication)
        {
            msg.message.attributes.push(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_event(&mut self, _evt: ()) -> Result<(), Error> {
        Ok(())
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    fn close(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl Interceptor for SenderReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The interceptor chain both ends use: RTCP receiver and sender reports, and the tap above.
pub(crate) fn registry() -> rtc::interceptor::Registry {
    rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports(
        rtc::interceptor::Registry::new(),
    )
    .with(
        rtc::interceptor::Slot::IntervalPli,
        SenderReportTap::default(),
    )
}
