//! Reading a transport-wide congestion feedback (draft-holmer-rmcat-
//! transport-wide-cc-extensions-01) into (sequence number, arrival time)
//! pairs. rtc parses the packet; this walks its status chunks and deltas.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};

/// Microseconds per unit of the 24-bit reference time.
const REFERENCE_TIME_UNIT_MICROS: i64 = 64_000;

/// One packet the feedback reports: its wire sequence number and, if it
/// arrived, when (microseconds on the receiver's clock, from the unwrapped
/// reference time: comparable across feedbacks of one connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u16,
    pub arrived_us: Option<i64>,
}

/// Unwraps the feedback's 24-bit reference time (it wraps every 12 days and
/// may start anywhere).
#[derive(Debug, Default)]
pub struct ReferenceTime {
    last: Option<(u32, i64)>,
}

impl ReferenceTime {
    fn unwrap(&mut self, wire: u32) -> i64 {
        let wire = wire & 0xFF_FFFF;
        let value = match self.last {
            None => wire as i64,
            Some((last_wire, last)) => {
                // Signed 24-bit difference.
                let diff = ((wire.wrapping_sub(last_wire) << 8) as i32 >> 8) as i64;
                last + diff
            }
        };
        self.last = Some((wire, value));
        value
    }
}

/// Appends what `feedback` reports to `out`, in sequence order.
pub fn arrivals(
    feedback: &TransportLayerCc,
    reference: &mut ReferenceTime,
    out: &mut Vec<Arrival>,
) {
    let mut arrived_us = reference.unwrap(feedback.reference_time) * REFERENCE_TIME_UNIT_MICROS;
    let mut deltas = feedback.recv_deltas.iter();
    let mut remaining = feedback.packet_status_count as usize;
    let mut seq = feedback.base_sequence_number;
    let mut push = |symbol: SymbolTypeTcc, out: &mut Vec<Arrival>| {
        let arrived = match symbol {
            SymbolTypeTcc::PacketReceivedSmallDelta | SymbolTypeTcc::PacketReceivedLargeDelta => {
                deltas.next().map(|d| {
                    arrived_us += d.delta;
                    arrived_us
                })
            }
            _ => None,
        };
        out.push(Arrival {
            seq,
            arrived_us: arrived,
        });
        seq = seq.wrapping_add(1);
    };
    for chunk in &feedback.packet_chunks {
        if remaining == 0 {
            break;
        }
        match chunk {
            PacketStatusChunk::RunLengthChunk(run) => {
                let n = (run.run_length as usize).min(remaining);
                for _ in 0..n {
                    push(run.packet_status_symbol, out);
                }
                remaining -= n;
            }
            PacketStatusChunk::StatusVectorChunk(vector) => {
                for symbol in vector.symbol_list.iter().take(remaining) {
                    push(*symbol, out);
                    remaining -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
    };

    fn delta(us: i64) -> RecvDelta {
        RecvDelta {
            type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
            delta: us,
        }
    }

    #[test]
    fn walks_run_length_and_vector_chunks() {
        let feedback = TransportLayerCc {
            base_sequence_number: 65_534,
            packet_status_count: 5,
            reference_time: 10,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                    run_length: 2,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    // Padded past the status count: the tail is ignored.
                    symbol_list: vec![
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                    ],
                }),
            ],
            recv_deltas: vec![delta(1000), delta(2500), delta(250)],
            ..Default::default()
        };
        let mut out = Vec::new();
        arrivals(&feedback, &mut ReferenceTime::default(), &mut out);
        let base = 10 * 64_000;
        assert_eq!(
            out,
            vec![
                Arrival {
                    seq: 65_534,
                    arrived_us: Some(base + 1000)
                },
                Arrival {
                    seq: 65_535,
                    arrived_us: Some(base + 3500)
                },
                Arrival {
                    seq: 0,
                    arrived_us: None
                },
                Arrival {
                    seq: 1,
                    arrived_us: Some(base + 3750)
                },
                Arrival {
                    seq: 2,
                    arrived_us: None
                },
            ]
        );
    }

    #[test]
    fn reference_time_unwraps_past_24_bits() {
        let mut reference = ReferenceTime::default();
        assert_eq!(reference.unwrap(0xFF_FFFE), 0xFF_FFFE);
        assert_eq!(reference.unwrap(1), 0xFF_FFFE + 3);
        assert_eq!(reference.unwrap(0), 0xFF_FFFE + 2);
    }
}
