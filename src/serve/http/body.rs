//! Replies and request bodies shared by the main and admin routes: the JSON error shape, the
//! status each engine error maps to, and a body read bounded in size and time.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};

use super::AppState;
use crate::error::Error;

/// One answer: status, JSON body, extra headers.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Close the connection after answering (the request body was not read whole).
    pub close: bool,
}

impl Reply {
    pub fn json(status: StatusCode, v: &Value) -> Reply {
        Reply { status, body: serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()), headers: Vec::new(), close: false }
    }
    pub fn raw_json(status: StatusCode, body: Vec<u8>) -> Reply {
        Reply { status, body, headers: Vec::new(), close: false }
    }
    /// `{"error": msg, "model_version": N}`, and the error counted by `kind`.
    pub fn error(st: &AppState, status: StatusCode, kind: &'static str, msg: impl Into<String>) -> Reply {
        st.metrics.error(kind);
        Reply::json(status, &json!({"error": msg.into(), "model_version": st.engine.model_version()}))
    }
    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Reply {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (self.status, Body::from(self.body)).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The HTTP status and the metrics kind of an engine error. A full queue or a stopped engine
/// is a 503 (another replica may serve the request), a failure of the backend or of the library
/// itself a 500; every other error names a bad value the caller sent (400).
pub(crate) fn status_of(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        Error::EngineStopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        Error::Driver { .. } | Error::Device { .. } | Error::BackendUnavailable { .. } | Error::ForeignTable { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "device")
        }
        Error::Io { .. } | Error::Panic { .. } | Error::Spawn { .. } | Error::Serialize { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        // Every kind listed (no `_`), so a new one is placed here deliberately.
        Error::LengthMismatch { .. }
        | Error::OutOfRange { .. }
        | Error::NonFinite { .. }
        | Error::InvalidValue { .. }
        | Error::Empty { .. }
        | Error::TooLarge { .. }
        | Error::BadOffsets { .. }
        | Error::BadShape { .. }
        | Error::Aliased { .. }
        | Error::WrongDtype { .. }
        | Error::Incompatible { .. }
        | Error::CorruptFile { .. }
        | Error::UnsupportedVersion { .. }
        | Error::Parse { .. }
        | Error::BadSetting { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
    }
}

/// The declared `Content-Length`, if any and readable.
fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The request body, at most `max_body_bytes`, whole within `body_timeout`. A declared length
/// over the limit is refused before reading; a body that is too long, too slow or broken is
/// answered and its connection closed (the rest of it is never read).
pub(crate) async fn read_body(st: &AppState, req: axum::extract::Request) -> Result<Bytes, Reply> {
    let max = st.cfg.max_body_bytes;
    let too_big = |n: String| {
        Reply::error(st, StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request body = {n} bytes exceeds --max-body-bytes = {max}"))
            .closing()
    };
    if let Some(n) = declared_length(req.headers()) {
        if n > max as u64 {
            return Err(too_big(n.to_string()));
        }
    }
    let limited = Limited::new(req.into_body(), max);
    match tokio::time::timeout(st.cfg.body_timeout, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_big(format!("more than {max}"))),
        Ok(Err(e)) => Err(Reply::error(st, StatusCode::BAD_REQUEST, "bad_request", format!("request body: reading failed: {e}")).closing()),
        Err(_) => Err(Reply::error(
            st,
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("request body: not received whole within {} ms (--body-timeout-ms)", st.cfg.body_timeout.as_millis()),
        )
        .closing()),
    }
}

/// 405 naming the method and the allowed one.
pub(crate) fn not_allowed(st: &AppState, method: &http::Method, path: &str, allow: &'static str) -> Reply {
    Reply::error(
        st,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method = {method} on {path}: not allowed (use {allow})"),
    )
    .with_header(header::ALLOW, allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DriverError;

    /// A stopped engine is a 503 (retry elsewhere), a driver failure a 500 "device", a caught
    /// panic a 500 "internal", a bad value a 400.
    #[test]
    fn engine_errors_map_to_http_statuses() {
        let cases = [
            (Error::EngineStopped { why: "is shutting down" }, 503, "stopped"),
            (Error::Overloaded { queue: 4 }, 503, "overloaded"),
            (Error::driver("cuda", "launch", DriverError::Emulator("lost".into())), 500, "device"),
            (Error::Device { backend: "wgpu", op: "kmeans_tree", message: "m".into() }, 500, "device"),
            (Error::Panic { op: "score batch", message: "m".into() }, 500, "internal"),
            (Error::Empty { field: "candidates", index: 0 }, 400, "bad_request"),
            (Error::Aliased { field: "adam g", other: "adam w" }, 400, "bad_request"),
            (Error::WrongDtype { field: "attn q", expected: "f32", got: "u32" }, 400, "bad_request"),
            (Error::BadSetting { name: "max_connections", value: "0".into(), why: "must be at least 1".into() }, 400, "bad_request"),
        ];
        for (e, status, kind) in cases {
            assert_eq!(status_of(&e), (StatusCode::from_u16(status).unwrap(), kind), "{e}");
        }
    }
}
