//! Bandwidth estimation toward each subscriber and the allocation of its
//! estimate among the tracks it receives.
//!
//! Forwarded packets leave through the router's fast path, outside rtc's
//! interceptors, so the transport-wide sequence numbers, the send history
//! and the estimator are Noom's own (rtc 0.21.1's GCC interceptor is not
//! usable piecewise: its parts are crate-private). Everything here is
//! sans-IO: time is a parameter and every decision is unit-tested.

mod acknowledged_rate;
pub mod allocator;
mod delay_based;
mod estimator;
mod loss_based;
mod prober;
mod rate_control;
mod retransmit_budget;
mod send_history;
mod twcc_feedback;

pub use delay_based::Usage;
pub use estimator::{BweStats, SendSideBwe};
pub use prober::{Prober, PACE_INTERVAL};
pub use retransmit_budget::RetransmitBudget;
