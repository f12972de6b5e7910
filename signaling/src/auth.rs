//! Join tokens: HS256 JWTs naming the room, the participant name and an
//! expiry, checked with the `jsonwebtoken` crate.

use crate::protocol::{ErrorCode, Refusal};
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinClaims {
    pub room: String,
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Issues a token for `room` and `name` valid for `ttl_secs`.
pub fn issue(secret: &str, room: &str, name: &str, ttl_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = JoinClaims {
        room: room.to_owned(),
        name: name.to_owned(),
        exp: now + ttl_secs,
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Checks a join against its token: signature, expiry, room and name.
pub fn check(secret: &str, token: Option<&str>, room: &str, name: &str) -> Result<(), Refusal> {
    let token = token.ok_or_else(|| {
        Refusal::new(ErrorCode::Unauthorized, "this server requires a join token")
    })?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 5;
    validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
    let data = decode::<JoinClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| Refusal::new(ErrorCode::Unauthorized, format!("invalid join token: {e}")))?;
    if data.claims.room != room || data.claims.name != name {
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            "the join token is for another room or name",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_tokens_only() {
        let token = issue("s3cret", "standup", "alice", 60);
        assert!(check("s3cret", Some(&token), "standup", "alice").is_ok());
        let code = |r: Result<(), Refusal>| r.unwrap_err().code;
        assert_eq!(
            code(check("s3cret", None, "standup", "alice")),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(check("other", Some(&token), "standup", "alice")),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(check("s3cret", Some(&token), "standup", "bob")),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(check("s3cret", Some(&token), "retro", "alice")),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(check("s3cret", Some("garbage"), "standup", "alice")),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn refuses_expired_tokens() {
        let claims = JoinClaims {
            room: "r".into(),
            name: "n".into(),
            exp: 1_000,
        };
        let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")).unwrap();
        assert!(check("k", Some(&token), "r", "n").is_err());
    }
}
