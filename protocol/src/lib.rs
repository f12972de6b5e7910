//! The wire contract (`shared/contract/signaling.md`, version 1): parsing of
//! client messages into typed requests, and the server's messages.
//!
//! Parsing is two-step: first the envelope (`type`, `req`), so an error reply
//! can always echo `req`; then the fields of the named type.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    TooLarge,
    NotInRoom,
    AlreadyInRoom,
    RoomFull,
    Unauthorized,
    RateLimited,
    NegotiationFailed,
    NotFound,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::NotInRoom => "not_in_room",
            Self::AlreadyInRoom => "already_in_room",
            Self::RoomFull => "room_full",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::NegotiationFailed => "negotiation_failed",
            Self::NotFound => "not_found",
            Self::Internal => "internal",
        }
    }

    pub const ALL: [ErrorCode; 11] = [
        Self::BadRequest,
        Self::UnknownType,
        Self::TooLarge,
        Self::NotInRoom,
        Self::AlreadyInRoom,
        Self::RoomFull,
        Self::Unauthorized,
        Self::RateLimited,
        Self::NegotiationFailed,
        Self::NotFound,
        Self::Internal,
    ];
}

/// A refused request: the code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CandidateInit {
    pub candidate: String,
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_mline_index: Option<u16>,
    #[serde(rename = "usernameFragment", default)]
    pub username_fragment: Option<String>,
}

/// A client message, validated for shape (not yet for state).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Rooms,
    Join {
        room: String,
        name: String,
        token: Option<String>,
    },
    Leave,
    Name {
        name: String,
    },
    Mute {
        kind: MediaKind,
        muted: bool,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: Option<CandidateInit>,
    },
    Chat {
        text: String,
        to: Option<String>,
    },
    /// [ext] Replace this participant's peer connection (after a network
    /// change) while subscribers keep their tracks.
    RestartMedia,
    /// The size at which the client shows each remote video.
    Layout {
        videos: Vec<LayoutVideo>,
    },
}

/// One remote video's size on the client's screen (device pixels); width
/// 0: not shown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutVideo {
    pub participant: String,
    pub width: u32,
    pub height: u32,
}

/// More videos than any room holds is a broken client.
pub const MAX_LAYOUT_VIDEOS: usize = 256;
/// Larger than any screen (8K is 7680 wide).
pub const MAX_LAYOUT_PIXELS: u32 = 16384;

#[derive(Deserialize)]
struct LayoutFields {
    videos: Vec<LayoutVideo>,
}

#[derive(Deserialize)]
struct JoinFields {
    room: String,
    name: String,
    #[serde(default)]
    token: Option<String>,
}
#[derive(Deserialize)]
struct NameFields {
    name: String,
}
#[derive(Deserialize)]
struct MuteFields {
    kind: MediaKind,
    muted: bool,
}
#[derive(Deserialize)]
struct SdpFields {
    sdp: String,
}
#[derive(Deserialize)]
struct CandidateFields {
    candidate: Option<CandidateInit>,
}
#[derive(Deserialize)]
struct ChatFields {
    text: String,
    #[serde(default)]
    to: Option<String>,
}

/// A parsed envelope: the request (or why it is unusable) and the `req` to echo.
pub struct Incoming {
    pub req: Option<Value>,
    pub request: Result<Request, Refusal>,
}

fn fields<T: for<'de> Deserialize<'de>>(
    typ: &str,
    object: Map<String, Value>,
) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(object))
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("{typ}: {e}")))
}

/// Parses one text frame.
pub fn parse(text: &str) -> Incoming {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Incoming {
                req: None,
                request: Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("not valid JSON: {e}"),
                )),
            }
        }
    };
    let Value::Object(object) = value else {
        return Incoming {
            req: None,
            request: Err(Refusal::new(
                ErrorCode::BadRequest,
                "a message must be a JSON object",
            )),
        };
    };
    let req = object.get("req").cloned();
    let request = match &req {
        Some(Value::Number(_)) | Some(Value::String(_)) | None => parse_typed(object),
        Some(_) => Err(Refusal::new(
            ErrorCode::BadRequest,
            "`req` must be a number or a string",
        )),
    };
    Incoming { req, request }
}

fn parse_typed(object: Map<String, Value>) -> Result<Request, Refusal> {
    let typ = match object.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "`type` must be a string",
            ))
        }
        None => return Err(Refusal::new(ErrorCode::BadRequest, "missing `type`")),
    };
    Ok(match typ.as_str() {
        "rooms" => Request::Rooms,
        "leave" => Request::Leave,
        "restart_media" => Request::RestartMedia,
        "join" => {
            let f: JoinFields = fields(&typ, object)?;
            Request::Join {
                room: f.room,
                name: f.name,
                token: f.token,
            }
        }
        "name" => Request::Name {
            name: fields::<NameFields>(&typ, object)?.name,
        },
        "mute" => {
            let f: MuteFields = fields(&typ, object)?;
            Request::Mute {
                kind: f.kind,
                muted: f.muted,
            }
        }
        "offer" => Request::Offer {
            sdp: fields::<SdpFields>(&typ, object)?.sdp,
        },
        "answer" => Request::Answer {
            sdp: fields::<SdpFields>(&typ, object)?.sdp,
        },
        "candidate" => {
            if !object.contains_key("candidate") {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "candidate: missing field `candidate`",
                ));
            }
            Request::Candidate {
                candidate: fields::<CandidateFields>(&typ, object)?.candidate,
            }
        }
        "chat" => {
            let f: ChatFields = fields(&typ, object)?;
            Request::Chat {
                text: f.text,
                to: f.to,
            }
        }
        "layout" => {
            let f: LayoutFields = fields(&typ, object)?;
            check_layout(&f.videos)?;
            Request::Layout { videos: f.videos }
        }
        other => {
            return Err(Refusal::new(
                ErrorCode::UnknownType,
                format!("unknown message type {other:?}"),
            ))
        }
    })
}

/// Checks a room or participant name: 1 to 64 Unicode scalar values, no
/// control characters.
pub fn check_name(field: &str, value: &str) -> Result<(), Refusal> {
    let count = value.chars().count();
    if !(1..=64).contains(&count) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("{field} must be 1 to 64 characters, got {count}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Checks a layout's bounds (its shape is checked by parsing).
fn check_layout(videos: &[LayoutVideo]) -> Result<(), Refusal> {
    if videos.len() > MAX_LAYOUT_VIDEOS {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "layout: at most {MAX_LAYOUT_VIDEOS} videos, got {}",
                videos.len()
            ),
        ));
    }
    for v in videos {
        if v.width > MAX_LAYOUT_PIXELS || v.height > MAX_LAYOUT_PIXELS {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "layout: width and height must be 0 to {MAX_LAYOUT_PIXELS}, got {}x{} for {:?}",
                    v.width, v.height, v.participant
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a chat text: 1 to 4096 Unicode scalar values.
pub fn check_chat_text(text: &str) -> Result<(), Refusal> {
    let count = text.chars().count();
    if !(1..=4096).contains(&count) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("text must be 1 to 4096 characters, got {count}"),
        ));
    }
    Ok(())
}

/// A participant as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    pub name: String,
    pub participants: usize,
}

fn with_req(mut value: Value, req: &Option<Value>) -> String {
    if let (Some(req), Value::Object(map)) = (req, &mut value) {
        map.insert("req".to_owned(), req.clone());
    }
    value.to_string()
}

pub fn ok(req: &Option<Value>) -> String {
    with_req(json!({"type": "ok"}), req)
}

pub fn error(req: &Option<Value>, refusal: &Refusal) -> String {
    with_req(
        json!({"type": "error", "code": refusal.code.as_str(), "message": refusal.message}),
        req,
    )
}

pub fn rooms(req: &Option<Value>, rooms: &[RoomInfo]) -> String {
    with_req(json!({"type": "rooms", "rooms": rooms}), req)
}

pub fn joined(
    req: &Option<Value>,
    room: &str,
    you: &str,
    participants: &[ParticipantInfo],
    ice_servers: &Value,
) -> String {
    with_req(
        json!({"type": "joined", "room": room, "you": you, "participants": participants, "ice_servers": ice_servers}),
        req,
    )
}

pub fn participant_joined(p: &ParticipantInfo) -> String {
    json!({"type": "participant_joined", "participant": p}).to_string()
}

pub fn participant_left(id: &str) -> String {
    json!({"type": "participant_left", "id": id}).to_string()
}

pub fn participant_updated(p: &ParticipantInfo) -> String {
    json!({"type": "participant_updated", "participant": p}).to_string()
}

pub fn chat(from: &str, name: &str, text: &str, ts: u64, to: Option<&str>) -> String {
    let mut value = json!({"type": "chat", "from": from, "name": name, "text": text, "ts": ts});
    if let Some(to) = to {
        value["to"] = json!(to);
    }
    value.to_string()
}

pub fn offer(sdp: &str) -> String {
    json!({"type": "offer", "sdp": sdp}).to_string()
}

pub fn answer(req: &Option<Value>, sdp: &str) -> String {
    with_req(json!({"type": "answer", "sdp": sdp}), req)
}

/// The room's active speakers, loudest first (contract: "Adaptive media").
pub fn speakers(participants: &[String]) -> String {
    json!({"type": "speakers", "participants": participants}).to_string()
}

/// This client did not accept the codec of `publisher`'s track `track`
/// (e.g. `video/H264` for a VP8-only client): it gets none of its packets.
pub fn track_unsupported(publisher: &str, track: &str, mime_type: &str) -> String {
    let (kind, codec) = mime_type.split_once('/').unwrap_or(("", mime_type));
    json!({"type": "track_unsupported", "participant": publisher, "track": track,
        "kind": kind.to_ascii_lowercase(), "codec": codec})
    .to_string()
}

/// Which simulcast encodings (by rid) of this client's track `track` anyone
/// watches: the client may set `active: false` on the others and must
/// start them again when told (docs/protocol.md, Adaptive media).
pub fn encodings(track: &str, mid: Option<&str>, active: &[(String, bool)]) -> String {
    let active: Map<String, Value> = active
        .iter()
        .map(|(rid, on)| (rid.clone(), Value::Bool(*on)))
        .collect();
    let mut value = json!({"type": "encodings", "track": track, "active": active});
    if let Some(mid) = mid {
        value["mid"] = json!(mid);
    }
    value.to_string()
}

pub fn candidate(c: &noom_sfu::IceCandidate) -> String {
    json!({"type": "candidate", "candidate": {
        "candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index,
        "usernameFragment": c.username_fragment
    }})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text).request.unwrap_err().code
    }

    #[test]
    fn encodings_names_each_rid() {
        let text = encodings("cam", Some("1"), &[("q".into(), true), ("f".into(), false)]);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"type": "encodings", "track": "cam", "mid": "1",
                "active": {"q": true, "f": false}})
        );
        assert!(!encodings("cam", None, &[]).contains("mid"));
    }

    #[test]
    fn parses_and_bounds_layout() {
        let ok = parse(
            r#"{"type":"layout","req":3,"videos":[{"participant":"p1","width":320,"height":180},{"participant":"p2","width":0,"height":0}]}"#,
        );
        assert_eq!(
            ok.request.unwrap(),
            Request::Layout {
                videos: vec![
                    LayoutVideo {
                        participant: "p1".into(),
                        width: 320,
                        height: 180
                    },
                    LayoutVideo {
                        participant: "p2".into(),
                        width: 0,
                        height: 0
                    },
                ]
            }
        );
        assert_eq!(
            parse(r#"{"type":"layout","videos":[]}"#).request.unwrap(),
            Request::Layout { videos: vec![] }
        );
        for bad in [
            r#"{"type":"layout"}"#,
            r#"{"type":"layout","videos":{}}"#,
            r#"{"type":"layout","videos":[{"participant":"p","width":-1,"height":5}]}"#,
            r#"{"type":"layout","videos":[{"participant":"p","width":1.5,"height":5}]}"#,
            r#"{"type":"layout","videos":[{"participant":"p","height":5}]}"#,
            r#"{"type":"layout","videos":[{"participant":"p","width":20000,"height":5}]}"#,
            r#"{"type":"layout","videos":[{"participant":7,"width":2,"height":5}]}"#,
        ] {
            let refusal = parse(bad).request.unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadRequest, "{bad}");
            assert!(refusal.message.starts_with("layout"), "{}", refusal.message);
        }
        let many: Vec<String> = (0..=MAX_LAYOUT_VIDEOS)
            .map(|i| format!(r#"{{"participant":"p{i}","width":1,"height":1}}"#))
            .collect();
        let text = format!(r#"{{"type":"layout","videos":[{}]}}"#, many.join(","));
        assert_eq!(code(&text), ErrorCode::BadRequest);
    }

    #[test]
    fn classifies_unusable_messages() {
        assert_eq!(code("not json"), ErrorCode::BadRequest);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"req":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join","room":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"join","room":1,"name":"b"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"mute","kind":"smell","muted":true}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"type":"candidate"}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn keeps_req_for_errors_and_ignores_unknown_fields() {
        let incoming = parse(r#"{"type":"dance","req":"r1"}"#);
        assert_eq!(incoming.req, Some(json!("r1")));
        let incoming = parse(r#"{"type":"join","room":"a","name":"b","extra":true,"req":7}"#);
        assert_eq!(incoming.req, Some(json!(7)));
        assert!(matches!(incoming.request, Ok(Request::Join { .. })));
        let incoming = parse(r#"{"type":"candidate","candidate":null}"#);
        assert_eq!(incoming.request, Ok(Request::Candidate { candidate: None }));
    }

    #[test]
    fn names_count_scalar_values_and_refuse_controls() {
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", &"é".repeat(64)).is_ok());
        assert!(check_name("name", &"😀".repeat(65)).is_err());
        assert!(check_name("name", "a\u{7}b").is_err());
        assert!(check_name("name", "a\u{85}b").is_err());
        assert!(check_chat_text(&"x".repeat(4096)).is_ok());
        assert!(check_chat_text(&"x".repeat(4097)).is_err());
    }

    #[test]
    fn replies_echo_req() {
        let v: Value = serde_json::from_str(&ok(&Some(json!(3)))).unwrap();
        assert_eq!(v, json!({"type":"ok","req":3}));
        let r = Refusal::new(ErrorCode::NotFound, "nobody");
        let v: Value = serde_json::from_str(&error(&None, &r)).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"not_found","message":"nobody"})
        );
    }
}
