//! What travels inside one relayed connection (a [`RelayFrame`]'s body):
//! the client's frames from the front node (which holds the WebSocket) to
//! the host node (which runs the session, where the room is), and the
//! session's messages back.
//!
//! The same types carry an in-process attachment (the room is on the front
//! node), so a front treats both alike.
//!
//! [`RelayFrame`]: super::relay::RelayFrame

use crate::session::{ClientFrame, Ending, Identity};
use serde::{Deserialize, Serialize};

/// Front -> host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToHost {
    /// First frame of a stream: start a session for the client of `front`,
    /// rejoining `rejoin` at once if given.
    Open {
        front: String,
        rejoin: Option<Identity>,
    },
    /// One frame of the client's, in order.
    Frame { frame: ClientFrame },
}

/// Host -> front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToFront {
    /// A message for the client.
    Text { text: String },
    /// The participant's identity changed (None: back in the lobby).
    Identity { identity: Option<Identity> },
    /// The session ended; the last message of a stream.
    End { ending: Ending },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Handoff;

    #[test]
    fn messages_survive_json() {
        let identity = Identity {
            room: "r".into(),
            name: "Ann".into(),
            audio_muted: true,
            video_muted: false,
            ice_ufrags: vec!["u1".into()],
        };
        let to_host = [
            ToHost::Open {
                front: "a".into(),
                rejoin: Some(identity.clone()),
            },
            ToHost::Frame {
                frame: ClientFrame::Text {
                    text: "{\"type\":\"rooms\"}".into(),
                },
            },
            ToHost::Frame {
                frame: ClientFrame::Gone,
            },
        ];
        for message in to_host {
            let json = serde_json::to_value(&message).unwrap();
            assert_eq!(serde_json::from_value::<ToHost>(json).unwrap(), message);
        }
        let to_front = [
            ToFront::Text { text: "hi".into() },
            ToFront::Identity {
                identity: Some(identity.clone()),
            },
            ToFront::End {
                ending: Ending::Handoff(Handoff {
                    node: "b".into(),
                    room: "r".into(),
                    processed: 3,
                    rejoin: Some(identity),
                }),
            },
            ToFront::End {
                ending: Ending::Close {
                    code: 1009,
                    reason: "too big".into(),
                },
            },
            ToFront::End {
                ending: Ending::LastWord { text: "{}".into() },
            },
        ];
        for message in to_front {
            let json = serde_json::to_value(&message).unwrap();
            assert_eq!(serde_json::from_value::<ToFront>(json).unwrap(), message);
        }
    }
}
