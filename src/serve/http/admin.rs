//! The admin listener: `POST /admin/swap {"file": "name.twm"}` behind `Authorization: Bearer
//! <token>`. Swaps read only from the configured model directory, by plain file name (no `/`,
//! no `..`, no symbolic link), and only a regular file: it is opened without blocking and
//! checked before anything reads it, then loaded through that same open file, so a FIFO (or a
//! file replaced in between) can never stall later swaps. Error messages name the file and what
//! kind of defect it has, never anything read from it (the details go to the server's log).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::body::{not_allowed, read_body, Reply};
use super::diagnose::{excerpt, show};
use super::AppState;
use crate::error::Error;

pub(crate) fn router(st: Arc<AppState>) -> Router {
    Router::new().route("/admin/swap", any(swap)).fallback(not_found).with_state(st)
}

/// Equal secrets, compared in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// 401 unless the request carries the admin token. Checked before anything else, so an
/// unauthenticated client learns nothing (not even which routes exist).
fn authorize(st: &AppState, h: &http::HeaderMap) -> Result<(), Reply> {
    let Some(admin) = &st.cfg.admin else {
        return Err(Reply::error(st, StatusCode::NOT_FOUND, "not_found", "admin routes are disabled"));
    };
    let unauthorized = |msg: &str| {
        Err(Reply::error(st, StatusCode::UNAUTHORIZED, "unauthorized", msg)
            .with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"twin-admin\""))
    };
    let Some(v) = h.get(header::AUTHORIZATION) else {
        return unauthorized("authorization: missing (send Authorization: Bearer <the token in --admin-token-file>)");
    };
    let Some(token) = v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) else {
        return unauthorized("authorization: expected the Bearer scheme (Authorization: Bearer <token>)");
    };
    if !same_secret(token.trim().as_bytes(), admin.token.trim().as_bytes()) {
        return unauthorized("authorization: the bearer token is not the admin token");
    }
    Ok(())
}

async fn not_found(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if let Err(r) = authorize(&st, req.headers()) {
        return r.into_response();
    }
    let path = excerpt(req.uri().path(), 80);
    Reply::error(&st, StatusCode::NOT_FOUND, "not_found", format!("route = {path:?}: not found (admin routes: POST /admin/swap)"))
        .into_response()
}

/// A plain file name inside the model directory, or why not.
fn resolve(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let shown = excerpt(name, 80);
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute();
    if !plain {
        return Err(format!("file = {shown:?}: must be a plain file name inside the model directory (no '/', no '..')"));
    }
    Ok(dir.join(name))
}

/// Open `path` for reading without following a symbolic link and without blocking (a FIFO
/// opens at once instead of waiting for a writer), and accept only a regular file.
fn open_regular(path: &Path, shown: &str) -> Result<std::fs::File, (StatusCode, String)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((StatusCode::NOT_FOUND, format!("file = {shown:?}: no such file in the model directory")))
        }
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err((StatusCode::BAD_REQUEST, format!("file = {shown:?}: is a symbolic link; name the file itself")))
        }
        Err(e) => return Err((StatusCode::BAD_REQUEST, format!("file = {shown:?}: cannot be opened ({})", e.kind()))),
    };
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        Ok(_) => Err((StatusCode::BAD_REQUEST, format!("file = {shown:?}: not a regular file (a directory, FIFO, socket or device)"))),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("file = {shown:?}: cannot be examined ({})", e.kind()))),
    }
}

/// The path that reads the already opened file again (Linux), so what was checked is what loads.
fn reopen_path(f: &std::fs::File, fallback: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = fallback;
        PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        fallback.to_path_buf()
    }
}

/// What a refused swap may tell the client: the kind of defect, never the file's bytes or
/// values decoded from them.
fn refusal(e: &Error) -> (StatusCode, String) {
    match e {
        Error::CorruptFile { .. } | Error::UnsupportedVersion { .. } | Error::Parse { .. } => {
            (StatusCode::BAD_REQUEST, "not a model file this build can load (corrupt, truncated or another format)".into())
        }
        Error::BadShape { field, why, .. } => (StatusCode::BAD_REQUEST, format!("{field}: {why}")),
        Error::Io { source, .. } => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading failed ({})", source.kind())),
        Error::Incompatible { what: what @ "new model", .. } => {
            (StatusCode::BAD_REQUEST, format!("{what}: another catalogue than the serving model's"))
        }
        Error::Driver { .. } | Error::Device { .. } | Error::BackendUnavailable { .. } | Error::ForeignTable { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "the backend failed while building or warming the model".into())
        }
        Error::EngineStopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "the engine is shutting down".into()),
        Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "the engine is overloaded; retry the swap later".into()),
        Error::Panic { .. } | Error::Spawn { .. } | Error::Serialize { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "the engine failed internally while loading the model".into())
        }
        // Every kind listed (no `_`), so a new one is placed here deliberately. These carry
        // values (possibly decoded from the file): only the kind of defect is told.
        Error::LengthMismatch { .. }
        | Error::OutOfRange { .. }
        | Error::NonFinite { .. }
        | Error::InvalidValue { .. }
        | Error::Empty { .. }
        | Error::TooLarge { .. }
        | Error::BadOffsets { .. }
        | Error::Aliased { .. }
        | Error::WrongDtype { .. }
        | Error::Incompatible { .. }
        | Error::BadSetting { .. } => (StatusCode::BAD_REQUEST, "the model failed validation or its warm-up".into()),
    }
}

async fn swap(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if let Err(r) = authorize(&st, req.headers()) {
        return r.into_response();
    }
    if req.method() != Method::POST {
        return not_allowed(&st, req.method(), "/admin/swap", "POST").into_response();
    }
    let body = match read_body(&st, req).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let bad = |msg: String| Reply::error(&st, StatusCode::BAD_REQUEST, "bad_request", msg).into_response();
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("malformed JSON: {}", excerpt(&e.to_string(), 240))),
    };
    let name = match v.get("file") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return bad(format!("file = {}: expected a model file name (a string)", show(other))),
        None => return bad("file: missing (send {\"file\": \"model.twm\"}, a file in the model directory)".into()),
    };
    let Some(dir) = st.cfg.admin.as_ref().map(|a| a.model_dir.clone()) else {
        return bad("admin routes are disabled".into());
    };
    let path = match resolve(&dir, &name) {
        Ok(p) => p,
        Err(msg) => return bad(msg),
    };
    let old = st.engine.model_version();
    let t0 = Instant::now();
    let s = st.clone();
    let shown = excerpt(&name, 80);
    let job = tokio::task::spawn_blocking(move || {
        let f = open_regular(&path, &shown)?;
        // Loading, building and warming run on this blocking thread; requests keep being served.
        let r = s.engine.swap_checked(&reopen_path(&f, &path), &path);
        drop(f);
        r.map_err(|e| {
            eprintln!("swap to {path:?} refused: {e}");
            let (status, why) = refusal(&e);
            (status, format!("file = {shown:?}: refused, version {} keeps serving: {why}", s.engine.model_version()))
        })
    });
    let result =
        job.await.unwrap_or_else(|_| Err((StatusCode::INTERNAL_SERVER_ERROR, "the swap panicked; the old version keeps serving".into())));
    let secs = t0.elapsed().as_secs_f64();
    st.metrics.swap(result.is_ok(), secs);
    match result {
        Ok(version) => {
            eprintln!("swapped to {name:?} (model version {version}, was {old}) in {secs:.3} s");
            Reply::json(StatusCode::OK, &json!({"model_version": version, "previous_version": old, "file": name, "seconds": secs}))
                .into_response()
        }
        Err((status, msg)) => {
            let kind = if status == StatusCode::INTERNAL_SERVER_ERROR { "device" } else { "swap_refused" };
            Reply::error(&st, status, kind, msg).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_resolve() {
        let d = Path::new("/models");
        assert_eq!(resolve(d, "m2.twm").unwrap(), PathBuf::from("/models/m2.twm"));
        for bad in ["", ".", "..", "../etc/passwd", "a/b.twm", "/etc/passwd", "a\\b", "x\0y"] {
            let e = resolve(d, bad).unwrap_err();
            assert!(e.contains("plain file name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdef", b"abcdef"));
        assert!(!same_secret(b"abcdef", b"abcdeg"));
        assert!(!same_secret(b"abcdef", b"abcdefg"));
        assert!(!same_secret(b"", b"a"));
    }
}
