//! Bearer tokens and their two roles. Read-only tokens may use the safe methods (GET,
//! HEAD): inventory, values, events, metrics. Everything that changes a device or the
//! server needs an admin token.
//!
//! When the operator configured no admin token, one is generated on first start and kept
//! in the data directory (mode 0600), so a fresh install is never open and a restart does
//! not invalidate the scripts that already use it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiState;

/// File in the data directory holding the generated admin token.
pub const TOKEN_FILE: &str = "api-token";

/// What the middlewares check against: the tokens, and which routes are open.
#[derive(Clone, Debug)]
pub struct Access {
    pub tokens: Arc<Tokens>,
    pub open_metrics: bool,
    pub open_health: bool,
}

impl FromRef<ApiState> for Access {
    fn from_ref(s: &ApiState) -> Access {
        Access {
            tokens: s.tokens.clone(),
            open_metrics: s.settings.open_metrics,
            open_health: s.settings.open_health,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Admin,
}

/// The tokens the API accepts.
#[derive(Clone)]
pub struct Tokens {
    admin: Vec<Vec<u8>>,
    read: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.len())
            .field("read", &self.read.len())
            .finish()
    }
}

impl Tokens {
    pub fn new(admin: &[String], read: &[String]) -> Tokens {
        let bytes = |v: &[String]| v.iter().map(|t| t.as_bytes().to_vec()).collect();
        Tokens {
            admin: bytes(admin),
            read: bytes(read),
        }
    }

    /// The role of a presented token, comparing in constant time per candidate so the
    /// answer's timing does not reveal how much of a token was right.
    pub fn role(&self, presented: &[u8]) -> Option<Role> {
        let hit = |list: &[Vec<u8>]| {
            list.iter()
                .fold(false, |found, t| found | constant_time_eq(t, presented))
        };
        if hit(&self.admin) {
            Some(Role::Admin)
        } else if hit(&self.read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the generated token could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("API token file {path}: {source}")]
pub struct TokenFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Reads the generated admin token from `data_dir`, creating it (32 random bytes as hex)
/// on first start. Returns the token, its file and whether it was just created.
pub fn load_or_create_token(data_dir: &Path) -> Result<(String, PathBuf, bool), TokenFileError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |source| TokenFileError {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() >= crate::config::MIN_TOKEN_LEN
                && token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Ok((token, path, false));
            }
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a valid token; delete the file to have a new one generated",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let token = crate::hex::encode(&bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    Ok((token, path, true))
}

/// The token of a request, if it carries `Authorization: Bearer <token>`.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then_some(token)
        .filter(|t| !t.is_empty())
}

/// Role needed by a method: safe methods read, the rest change things.
fn needed(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Read
    } else {
        Role::Admin
    }
}

/// Middleware of `/api`: no valid token is 401, a read-only token on a changing method
/// is 403; in both cases the handler never runs, so nothing changes.
pub async fn require_token(State(state): State<Access>, request: Request, next: Next) -> Response {
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware of `/metrics` and `/healthz`: open unless configured otherwise.
pub async fn require_token_unless_open(
    State(state): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    let open = match request.uri().path() {
        "/metrics" => state.open_metrics,
        "/healthz" => state.open_health,
        _ => false,
    };
    if open {
        return next.run(request).await;
    }
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(state: &Access, request: &Request) -> Result<(), ApiError> {
    let Some(token) = bearer(request) else {
        return Err(ApiError::unauthorized(
            "this route needs an `Authorization: Bearer <token>` header",
        ));
    };
    match (state.tokens.role(token), needed(request.method())) {
        (None, _) => Err(ApiError::unauthorized("the token is not valid")),
        (Some(Role::Read), Role::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token is read-only; the operation needs an admin token",
        )),
        (Some(_), _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_token() {
        let t = Tokens::new(
            &["admin-token-0000000".into()],
            &["read-token-00000000".into()],
        );
        assert_eq!(t.role(b"admin-token-0000000"), Some(Role::Admin));
        assert_eq!(t.role(b"read-token-00000000"), Some(Role::Read));
        assert_eq!(t.role(b"admin-token-000000"), None);
        assert_eq!(t.role(b""), None);
        assert!(!format!("{t:?}").contains("admin-token"));
    }

    #[test]
    fn generated_token_is_kept_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, path, created) = load_or_create_token(dir.path()).expect("create");
        assert!(created);
        assert_eq!(a.len(), 64);
        let (b, _, created) = load_or_create_token(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").expect("write");
        assert!(load_or_create_token(dir.path()).is_err());
    }
}
