//! Every failure of the API as one JSON shape, `{"error": code, "detail": text}`, with an
//! HTTP status chosen so that an operator's script can tell its own mistakes (4xx), the
//! device's answers (mapped from CoAP, with the CoAP code in `coap_code`) and a silent or
//! broken device (502/504) apart without parsing text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::coap::FailReason;
use crate::dm::{DeviceError, DmError, ErrorCode};
use crate::runtime::{ManageError, RequestError};

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    /// A stable, machine-readable code: `unauthorized`, `forbidden`, `unknown_endpoint`,
    /// `bad_path`, `bad_format`, `bad_request`, `bad_body`, `device_error`,
    /// `device_timeout`, `bad_device_response`, `not_found`, ...
    pub error: String,
    /// What went wrong, for a human.
    pub detail: String,
    /// For `device_error`: the CoAP code the device answered, like `4.04`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coap_code: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.to_string(),
                detail: detail.into(),
                coap_code: None,
            },
        }
    }

    pub fn bad_request(error: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, detail)
    }

    pub fn unknown_endpoint(endpoint: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            format!("no registered endpoint {endpoint:?}"),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// The device's own error answer, with its code.
    pub fn device(e: &DeviceError) -> ApiError {
        let mut err = ApiError::new(
            device_status(e.code),
            "device_error",
            if e.diagnostic.is_empty() {
                format!("the device answered {}", describe(e.code))
            } else {
                format!("the device answered {}: {}", describe(e.code), e.diagnostic)
            },
        );
        err.body.coap_code = Some(e.code.to_string());
        err
    }
}

/// `4.04 Not Found`, for details.
fn describe(code: ErrorCode) -> String {
    let name = match code {
        ErrorCode::BadRequest => "Bad Request",
        ErrorCode::Unauthorized => "Unauthorized",
        ErrorCode::NotFound => "Not Found",
        ErrorCode::MethodNotAllowed => "Method Not Allowed",
        ErrorCode::NotAcceptable => "Not Acceptable",
        ErrorCode::RequestEntityIncomplete => "Request Entity Incomplete",
        ErrorCode::RequestEntityTooLarge => "Request Entity Too Large",
        ErrorCode::UnsupportedContentFormat => "Unsupported Content-Format",
        ErrorCode::OtherClient(_) => "client error",
        ErrorCode::Server(_) => "server error",
    };
    format!("{code} {name}")
}

/// The HTTP status of a device's CoAP error. A device's 4.01 becomes 403, not 401: the
/// operator's token was fine, the device's access control said no. 5.xx from the device
/// is 502: the server worked, the device behind it did not.
fn device_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorCode::RequestEntityIncomplete => StatusCode::BAD_REQUEST,
        ErrorCode::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedContentFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::OtherClient(0x89) => StatusCode::CONFLICT,
        ErrorCode::OtherClient(0x8C) => StatusCode::PRECONDITION_FAILED,
        ErrorCode::OtherClient(_) => StatusCode::BAD_REQUEST,
        ErrorCode::Server(_) => StatusCode::BAD_GATEWAY,
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> ApiError {
        match e {
            ManageError::NotRegistered(ep) => ApiError::unknown_endpoint(&ep),
            ManageError::Dm(e) => e.into(),
            ManageError::Request(e) => e.into(),
        }
    }
}

impl From<DmError> for ApiError {
    fn from(e: DmError) -> ApiError {
        match &e {
            DmError::Device(d) => ApiError::device(d),
            DmError::UnexpectedCode { .. } | DmError::Decode(_) | DmError::MalformedResponse(_) => {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_device_response",
                    e.to_string(),
                )
            }
            DmError::ProtectedObject(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "protected_object", e.to_string())
            }
            DmError::VersionTooOld { .. } => {
                ApiError::new(StatusCode::CONFLICT, "version_too_old", e.to_string())
            }
            DmError::FormatRefused { .. } => ApiError::bad_request("bad_format", e.to_string()),
            DmError::InvalidTarget { .. } => ApiError::bad_request("bad_path", e.to_string()),
            DmError::InvalidRequest { .. }
            | DmError::ExecuteArgs(_)
            | DmError::Attributes(_)
            | DmError::Encode(_) => ApiError::bad_request("bad_request", e.to_string()),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let detail = e.to_string();
        match e {
            RequestError::UnknownEndpoint(ep) => ApiError::unknown_endpoint(&ep),
            RequestError::Failed(FailReason::Timeout) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "device_timeout",
                "the device did not answer in time",
            ),
            RequestError::Failed(FailReason::Reset) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "device_reset", detail)
            }
            RequestError::Failed(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "bad_device_response", detail)
            }
            RequestError::Expired => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "expired", detail),
            RequestError::QueueFull => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", detail)
            }
            RequestError::Deregistered => ApiError::new(StatusCode::GONE, "deregistered", detail),
            RequestError::NotObserved(ref code) => match device_code(code) {
                Some(code) => ApiError::device(&DeviceError {
                    code,
                    diagnostic: String::new(),
                }),
                None => ApiError::new(StatusCode::BAD_GATEWAY, "not_observed", detail),
            },
            RequestError::Send(_) | RequestError::Store(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
            RequestError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", detail)
            }
        }
    }
}

/// `"4.04"` as an error code, or `None` for a success or anything unreadable.
fn device_code(text: &str) -> Option<ErrorCode> {
    let (class, detail) = text.split_once('.')?;
    let (class, detail): (u8, u8) = (class.parse().ok()?, detail.parse().ok()?);
    if !(4..=5).contains(&class) || detail > 31 {
        return None;
    }
    ErrorCode::from_class(coap_lite::MessageClass::from((class << 5) | detail))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lwm2m\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_codes_map_to_http() {
        let e = ApiError::device(&DeviceError {
            code: ErrorCode::NotFound,
            diagnostic: "no such instance".into(),
        });
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.body.error, "device_error");
        assert_eq!(e.body.coap_code.as_deref(), Some("4.04"));
        assert!(e.body.detail.contains("4.04 Not Found: no such instance"));
        assert_eq!(
            device_status(ErrorCode::Unauthorized),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            device_status(ErrorCode::Server(0xA0)),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn a_refused_observe_is_the_device_error() {
        let e: ApiError = RequestError::NotObserved("4.05".into()).into();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.body.coap_code.as_deref(), Some("4.05"));
        let e: ApiError = RequestError::NotObserved("2.05".into()).into();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(device_code("9.99"), None);
        assert_eq!(device_code("x"), None);
    }

    #[test]
    fn timeouts_are_504() {
        let e: ApiError = RequestError::Failed(FailReason::Timeout).into();
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.body.error, "device_timeout");
    }
}
