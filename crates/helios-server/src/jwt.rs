//! Connection tokens: JWTs checked with a shared secret (HS256) or a public
//! key (RS256, ES256, ...). The claims give the user (`sub`), the room
//! patterns (`rooms`, or `channels`) and the expiry (`exp`).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use helios::{Auth, AuthRejection};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::settings::{AuthSettings, JwtKey};

/// Checks tokens against one key.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    rooms_claim: String,
}

impl Verifier {
    /// Loads the key.
    ///
    /// # Errors
    /// A message naming the config key when the key or algorithm is bad.
    pub(crate) fn new(s: &AuthSettings) -> Result<Self, String> {
        let alg = Algorithm::from_str(&s.algorithm).map_err(|_| {
            format!(
                "invalid configuration: auth.jwt_algorithm: {:?} is not a JWT algorithm",
                s.algorithm
            )
        })?;
        let key = match &s.key {
            JwtKey::Secret(secret) => DecodingKey::from_secret(secret.as_bytes()),
            JwtKey::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "invalid configuration: auth.jwt_public_key: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                let parsed = match alg {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                parsed.map_err(|e| {
                    format!(
                        "invalid configuration: auth.jwt_public_key: {} is not a {:?} public key in PEM: {e}",
                        path.display(),
                        alg
                    )
                })?
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        // A required audience or issuer must be present, not just right
        // when present (jsonwebtoken checks only what the token carries).
        let mut required = vec!["sub"];
        required.extend(s.audience.as_ref().map(|_| "aud"));
        required.extend(s.issuer.as_ref().map(|_| "iss"));
        validation.set_required_spec_claims(&required);
        match &s.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &s.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key,
            validation,
            rooms_claim: s.rooms_claim.clone(),
        })
    }

    /// Checks a token and turns its claims into an [`Auth`].
    ///
    /// # Errors
    /// [`AuthRejection::Unauthorized`] saying why (expired, bad signature,
    /// wrong algorithm — `alg: none` included —, malformed).
    pub(crate) fn verify(&self, token: &str) -> Result<Auth, AuthRejection> {
        let data =
            jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::InvalidSignature => "bad token signature".to_owned(),
                    ErrorKind::InvalidAlgorithm => "token algorithm not accepted".to_owned(),
                    ErrorKind::MissingRequiredClaim(c) => format!("token has no {c:?} claim"),
                    ErrorKind::InvalidAudience => "token audience not accepted".to_owned(),
                    ErrorKind::InvalidIssuer => "token issuer not accepted".to_owned(),
                    ErrorKind::ImmatureSignature => "token not valid yet".to_owned(),
                    _ => format!("invalid token ({e})"),
                };
                AuthRejection::Unauthorized(why)
            })?;
        let claims = data.claims;
        let Some(sub) = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(AuthRejection::Unauthorized(
                "token `sub` must be a non-empty string".to_owned(),
            ));
        };
        let mut auth = Auth::user(sub);
        let rooms = claims
            .get(&self.rooms_claim)
            .or_else(|| claims.get("channels"))
            .map(room_list)
            .unwrap_or_default();
        auth = auth.rooms(rooms);
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            auth = auth.expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(exp));
        }
        Ok(auth.claims(claims))
    }
}

/// A rooms claim: an array of patterns, or one space-separated string.
fn room_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}
