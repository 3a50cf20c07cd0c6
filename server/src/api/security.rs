//! Devices' DTLS credentials: `GET|PUT|DELETE /api/security/clients[/{endpoint}]`, and
//! the bulk file the binary loads at start (`--security-file`).
//!
//! A key is never given back once set: answers say whether one is set and its
//! fingerprint (the first 8 bytes of its SHA-256, in hex), enough to tell two keys apart
//! in an audit, useless to an attacker.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::store::{StoreError, StoredSecurity};

/// Longest PSK identity accepted (OpenSSL's limit is 128 bytes plus a NUL).
pub const MAX_IDENTITY_LEN: usize = 128;
/// Shortest pre-shared key accepted: 64 bits; LwM2M deployments use 128 or more.
pub const MIN_KEY_LEN: usize = 8;
/// Longest pre-shared key accepted (OpenSSL's `PSK_MAX_PSK_LEN` is 256; LwM2M keys are 16
/// to 32 bytes).
pub const MAX_KEY_LEN: usize = 64;

/// Pre-shared key credentials as an operator sets them.
#[derive(Debug, Clone, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PskInput {
    /// The PSK identity the device presents, as text (most devices use their endpoint
    /// name or `urn:imei:...`).
    pub identity: String,
    /// The key, in hex.
    pub key: String,
}

/// A device's credentials as an operator sets them: a PSK, permission to use a
/// certificate (one that chains to the trust store, with the endpoint as its CN), or both.
#[derive(Debug, Clone, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityInput {
    #[serde(default)]
    pub psk: Option<PskInput>,
    #[serde(default)]
    pub x509: bool,
}

/// One entry of a bulk file: an endpoint and its credentials.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityFileEntry {
    pub endpoint: String,
    #[serde(default)]
    pub psk: Option<PskInput>,
    #[serde(default)]
    pub x509: bool,
}

/// Pre-shared key credentials as the API shows them: never the key.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct PskOutput {
    pub identity: String,
    /// First 8 bytes of the key's SHA-256, hex.
    pub key_fingerprint: String,
}

/// A device's credentials as the API shows them.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SecurityJson {
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk: Option<PskOutput>,
    /// Whether the device may authenticate with a certificate.
    pub x509: bool,
    pub updated_at_unix_ms: u64,
}

/// Every device's credentials.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SecurityList {
    pub clients: Vec<SecurityJson>,
}

pub(crate) fn fingerprint(key: &[u8]) -> String {
    let digest = openssl::sha::sha256(key);
    crate::hex::encode(digest.get(..8).unwrap_or_default())
}

/// Checks an operator's credentials and makes the record to store.
pub fn to_stored(
    endpoint: &str,
    psk: Option<&PskInput>,
    x509: bool,
) -> Result<StoredSecurity, ApiError> {
    let bad = |d: String| ApiError::bad_request("bad_body", d);
    if endpoint.is_empty() || endpoint.len() > crate::registry::MAX_ENDPOINT_LEN {
        return Err(bad(format!(
            "an endpoint name is 1 to {} bytes",
            crate::registry::MAX_ENDPOINT_LEN
        )));
    }
    let Some(psk) = psk else {
        if !x509 {
            return Err(bad("credentials are a psk, \"x509\": true, or both".into()));
        }
        return Ok(StoredSecurity {
            endpoint: endpoint.to_string(),
            psk_identity: None,
            psk_key: None,
            x509,
            updated_at_unix_ms: super::unix_ms(),
        });
    };
    let id = psk.identity.as_bytes();
    if id.is_empty() || id.len() > MAX_IDENTITY_LEN || psk.identity.contains('\0') {
        return Err(bad(format!(
            "psk.identity is 1 to {MAX_IDENTITY_LEN} bytes of text without NUL"
        )));
    }
    let key = Some(psk.key.trim())
        .filter(|k| !k.is_empty())
        .and_then(crate::hex::decode)
        .ok_or_else(|| bad("psk.key is an even number of hex digits".into()))?;
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
        return Err(bad(format!(
            "psk.key is {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes, not {}",
            key.len()
        )));
    }
    Ok(StoredSecurity {
        endpoint: endpoint.to_string(),
        psk_identity: Some(id.to_vec()),
        psk_key: Some(key),
        x509,
        updated_at_unix_ms: super::unix_ms(),
    })
}

fn to_json(s: &StoredSecurity) -> SecurityJson {
    SecurityJson {
        endpoint: s.endpoint.clone(),
        psk: s.psk_identity.as_ref().map(|id| PskOutput {
            identity: String::from_utf8_lossy(id).into_owned(),
            key_fingerprint: s.psk_key.as_deref().map(fingerprint).unwrap_or_default(),
        }),
        x509: s.x509,
        updated_at_unix_ms: s.updated_at_unix_ms,
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::IdentityTaken(ep) => ApiError::new(
            StatusCode::CONFLICT,
            "identity_taken",
            format!("this PSK identity belongs to endpoint {ep:?}"),
        ),
        StoreError::InvalidKey { .. } => ApiError::bad_request("bad_body", e.to_string()),
        e => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("credentials not stored: {e}"),
        ),
    }
}

/// Every device's credentials (keys masked).
#[utoipa::path(
    get,
    path = "/api/security/clients",
    tag = "security",
    responses(
        (status = 200, description = "all credentials, by endpoint", body = SecurityList),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<ApiState>) -> Result<Json<SecurityList>, ApiError> {
    let all = state.handle.list_security().await.map_err(store_error)?;
    Ok(Json(SecurityList {
        clients: all.iter().map(to_json).collect(),
    }))
}

/// One device's credentials (key masked).
#[utoipa::path(
    get,
    path = "/api/security/clients/{endpoint}",
    tag = "security",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "the credentials", body = SecurityJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no credentials for this endpoint", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<SecurityJson>, ApiError> {
    state
        .handle
        .security(&endpoint)
        .await
        .map_err(store_error)?
        .map(|s| Json(to_json(&s)))
        .ok_or_else(|| no_credentials(&endpoint))
}

fn no_credentials(endpoint: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_credentials",
        format!("no credentials for endpoint {endpoint:?}"),
    )
}

/// Sets a device's credentials, replacing what it had. From then on the endpoint may only
/// register over DTLS, as this identity.
#[utoipa::path(
    put,
    path = "/api/security/clients/{endpoint}",
    tag = "security",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    request_body(content = SecurityInput, description = "`{\"psk\": {\"identity\": \"dev-1\", \"key\": \"000102...\"}}`, `{\"x509\": true}`, or both"),
    responses(
        (status = 200, description = "set; the key is not shown back", body = SecurityJson),
        (status = 400, description = "bad body", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 409, description = "another endpoint has this PSK identity", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
    body: Bytes,
) -> Result<Json<SecurityJson>, ApiError> {
    let input: SecurityInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("body is not valid: {e}")))?;
    let stored = to_stored(&endpoint, input.psk.as_ref(), input.x509)?;
    state
        .handle
        .put_security(stored.clone())
        .await
        .map_err(store_error)?;
    tracing::info!(%endpoint, "DTLS credentials set");
    Ok(Json(to_json(&stored)))
}

/// Removes a device's credentials: its next handshake fails, and it may register over
/// plain CoAP again. Its current DTLS session, if any, lives on until it ends.
#[utoipa::path(
    delete,
    path = "/api/security/clients/{endpoint}",
    tag = "security",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "removed; what it was", body = SecurityJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "no credentials for this endpoint", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<SecurityJson>, ApiError> {
    state
        .handle
        .delete_security(&endpoint)
        .await
        .map_err(store_error)?
        .map(|s| Json(to_json(&s)))
        .ok_or_else(|| no_credentials(&endpoint))
}

/// Reads a bulk file (a JSON array of `{"endpoint", "psk": {"identity", "key"}}`) and
/// checks every entry: the whole file is refused if one entry is bad or two share an
/// endpoint or identity, so a typo never leaves half a fleet provisioned.
pub fn read_file(text: &str) -> Result<Vec<StoredSecurity>, String> {
    let entries: Vec<SecurityFileEntry> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON array of entries: {e}"))?;
    let mut out = Vec::with_capacity(entries.len());
    let mut endpoints = std::collections::HashSet::new();
    let mut identities = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let s = to_stored(&e.endpoint, e.psk.as_ref(), e.x509)
            .map_err(|err| format!("entry {i} ({:?}): {}", e.endpoint, err.body.detail))?;
        if !endpoints.insert(e.endpoint.clone()) {
            return Err(format!(
                "entry {i}: endpoint {:?} appears twice",
                e.endpoint
            ));
        }
        if let Some(p) = e
            .psk
            .as_ref()
            .filter(|p| !identities.insert(p.identity.clone()))
        {
            return Err(format!(
                "entry {i}: identity {:?} appears twice",
                p.identity
            ));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(identity: &str, key: &str) -> PskInput {
        PskInput {
            identity: identity.into(),
            key: key.into(),
        }
    }

    #[test]
    fn credentials_are_checked() {
        let s = to_stored(
            "dev-1",
            Some(&psk("dev-1", "000102030405060708090a0b0c0d0e0f")),
            false,
        )
        .expect("ok");
        assert_eq!(s.psk_key.as_deref().map(<[u8]>::len), Some(16));
        for (ep, p) in [
            ("", psk("a", "00")),
            ("dev", psk("", "00")),
            ("dev", psk("a\0b", "00")),
            ("dev", psk("a", "")),
            ("dev", psk("a", "0")),
            ("dev", psk("a", "zz")),
            ("dev", psk("a", "00112233445566")),
            ("dev", psk("a", &"00".repeat(65))),
            ("dev", psk(&"x".repeat(129), "00")),
        ] {
            assert!(to_stored(ep, Some(&p), false).is_err(), "{ep:?} {p:?}");
        }
        assert!(to_stored("dev", None, false).is_err(), "nothing at all");
        let x = to_stored("dev", None, true).expect("certificate only");
        assert!(x.x509 && x.psk_identity.is_none());
    }

    #[test]
    fn the_key_never_shows() {
        let s = to_stored("dev-1", Some(&psk("dev-1", "0011223344556677")), false).expect("ok");
        let j = serde_json::to_string(&to_json(&s)).expect("json");
        assert!(!j.contains("0011223344556677"), "{j}");
        assert!(j.contains("key_fingerprint"));
    }

    #[test]
    fn a_bulk_file_is_taken_whole_or_not_at_all() {
        let good = r#"[{"endpoint": "a", "psk": {"identity": "id-a", "key": "0011223344556677"}},
                       {"endpoint": "b", "psk": {"identity": "id-b", "key": "2233445566778899"}}]"#;
        assert_eq!(read_file(good).expect("good").len(), 2);
        for bad in [
            r#"{"endpoint": "a"}"#,
            r#"[{"endpoint": "a", "psk": {"identity": "id-a", "key": "xx"}}]"#,
            r#"[{"endpoint": "a", "psk": {"identity": "i", "key": "00"}},
                {"endpoint": "a", "psk": {"identity": "j", "key": "00"}}]"#,
            r#"[{"endpoint": "a", "psk": {"identity": "i", "key": "00"}},
                {"endpoint": "b", "psk": {"identity": "i", "key": "00"}}]"#,
            r#"[{"endpoint": "a", "psk": {"identity": "i", "key": "00"}, "extra": 1}]"#,
        ] {
            assert!(read_file(bad).is_err(), "{bad}");
        }
    }
}
