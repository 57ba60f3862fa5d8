//! Why a body is not a `ScoreRequest`: the field (with its index) and the value, cut to a short
//! excerpt. Runs only after the fast typed parse failed, so good requests never pay for it.

use serde_json::{Map, Value};

/// At most `max` characters of client-sent text with control characters escaped: what an
/// error message may quote of a request.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

/// A JSON value for an error message, cut to a readable length.
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Why a body is not a `ScoreRequest`, naming the field (with its index) and the value. Runs
/// only after the fast typed parse failed.
pub fn diagnose(body: &[u8], typed: &serde_json::Error) -> String {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return "request body is empty: expected a JSON ScoreRequest {\"request_time\", \"long\", \"short\", \"candidates\"}".into();
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return format!("malformed JSON: {}", excerpt(&e.to_string(), 240)),
    };
    let Some(o) = v.as_object() else {
        return format!("request body = {}: expected a JSON object (a ScoreRequest)", show(&v));
    };
    check_request(o).unwrap_or_else(|| format!("invalid request: {}", excerpt(&typed.to_string(), 240)))
}

fn check_request(o: &Map<String, Value>) -> Option<String> {
    let int = |path: &str, v: Option<&Value>, required: bool, max: Option<u64>| -> Option<String> {
        match v {
            None if required => Some(format!("{path}: missing (required)")),
            None => None,
            Some(x) => {
                let ok = match max {
                    Some(m) => x.as_u64().is_some_and(|n| n <= m),
                    None => x.as_i64().is_some(),
                };
                let what = if max.is_some() { "an unsigned 32-bit integer" } else { "a 64-bit integer (seconds)" };
                (!ok).then(|| format!("{path} = {}: expected {what}", show(x)))
            }
        }
    };
    let num = |path: String, v: Option<&Value>| -> Option<String> {
        match v {
            None => Some(format!("{path}: missing (required)")),
            // Numbers are f32 on the engine side: 1e39 is a number in JSON but not a finite f32.
            Some(x) if x.as_f64().is_some_and(|f| (f as f32).is_finite()) => None,
            Some(x) => Some(format!("{path} = {}: expected a finite number (32-bit float)", show(x))),
        }
    };
    if let Some(e) = int("request_time", o.get("request_time"), true, None) {
        return Some(e);
    }
    for seq in ["long", "short"] {
        let Some(v) = o.get(seq) else { continue };
        let Some(a) = v.as_array() else {
            return Some(format!("{seq} = {}: expected an array of behaviours", show(v)));
        };
        for (i, b) in a.iter().enumerate() {
            let Some(bo) = b.as_object() else {
                return Some(format!(
                    "{seq}[{i}] = {}: expected a behaviour {{\"item\", \"timestamp\", \"play_time\", \"completion\"}}",
                    show(b)
                ));
            };
            let e = int(&format!("{seq}[{i}].item"), bo.get("item"), true, Some(u32::MAX as u64))
                .or_else(|| int(&format!("{seq}[{i}].timestamp"), bo.get("timestamp"), true, None))
                .or_else(|| num(format!("{seq}[{i}].play_time"), bo.get("play_time")))
                .or_else(|| num(format!("{seq}[{i}].completion"), bo.get("completion")))
                .or_else(|| int(&format!("{seq}[{i}].size"), bo.get("size"), false, Some(u32::MAX as u64)));
            if e.is_some() {
                return e;
            }
        }
    }
    match o.get("candidates") {
        None => return Some("candidates: missing (required): expected an array of item ids".into()),
        Some(Value::Array(a)) => {
            for (i, c) in a.iter().enumerate() {
                if let Some(e) = int(&format!("candidates[{i}]"), Some(c), true, Some(u32::MAX as u64)) {
                    return Some(e.replace("an unsigned 32-bit integer", "an item id (unsigned 32-bit integer)"));
                }
            }
        }
        Some(v) => return Some(format!("candidates = {}: expected an array of item ids", show(v))),
    }
    match o.get("debug") {
        Some(v) if !v.is_boolean() => Some(format!("debug = {}: expected true or false", show(v))),
        _ => None,
    }
}
