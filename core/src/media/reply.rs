//! Reading the media API's JSON answers (M1, M3–M6): the media id INIT returns, the
//! `processing_info` of FINALIZE and STATUS, and typed API errors. Nothing here panics or
//! trusts the server: a missing or malformed field is a typed [`ProtocolViolation`].

use http::HeaderMap;
use serde_json::Value;

use super::{ApiForm, ProcessingError, ProcessingInfo, ProcessingState};
use crate::error::ProtocolViolation;
use crate::response;

/// Media ids go in URL paths (v2) and form fields: at most this long, `[0-9A-Za-z_-]` only.
const MAX_ID_LEN: usize = 128;

/// Server-chosen text kept in typed errors and outcomes is cut to this many characters.
const MAX_TEXT: usize = 200;

/// What INIT's answer names (M1, M6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Created {
    pub(crate) media_id: String,
    pub(crate) media_key: Option<String>,
    pub(crate) expires_after_secs: Option<u64>,
}

/// The object that describes the media: the body itself in v1.1, its `data` member in v2
/// (M6).
pub(crate) fn media_object(form: ApiForm, body: &Value) -> Option<&Value> {
    let object = match form {
        ApiForm::V1_1 => Some(body),
        ApiForm::V2 => body.get("data"),
    }?;
    object.is_object().then_some(object)
}

/// The media id of a media object: `media_id_string` in v1.1 (M1: the number exceeds 2^53, so
/// the string is the one to use; a bare `media_id` is read only when it is an exact integer),
/// `id` in v2 (M6).
pub(crate) fn media_id(form: ApiForm, media: &Value) -> Option<String> {
    let (text, number) = match form {
        ApiForm::V1_1 => ("media_id_string", "media_id"),
        ApiForm::V2 => ("id", "id"),
    };
    let id = match media.get(text) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => media
            .get(number)
            .and_then(Value::as_u64)
            .map(|n| n.to_string()),
    }?;
    valid_media_id(&id).then_some(id)
}

/// Whether `id` can go in a URL path and a form field as it is.
pub(crate) fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads INIT's answer (M1, M6).
pub(crate) fn created(form: ApiForm, body: &Value) -> Option<Created> {
    let media = media_object(form, body)?;
    Some(Created {
        media_id: media_id(form, media)?,
        media_key: media.get("media_key").and_then(text),
        expires_after_secs: media.get("expires_after_secs").and_then(number),
    })
}

/// The `processing_info` of a FINALIZE or STATUS answer (M4); `None` when there is none.
///
/// # Errors
/// [`ProtocolViolation::MalformedResponse`] when it is not an object, or has no `error` and a
/// `state` that is not one of the four M4 names.
pub(crate) fn processing_info(media: &Value) -> Result<Option<ProcessingInfo>, ProtocolViolation> {
    let info = match media.get("processing_info") {
        None | Some(Value::Null) => return Ok(None),
        Some(info) if info.is_object() => info,
        Some(_) => {
            return Err(ProtocolViolation::MalformedResponse(
                "processing_info is not an object (M4)",
            ));
        }
    };
    let error = match info.get("error") {
        None | Some(Value::Null) => None,
        Some(e) => Some(ProcessingError {
            code: e.get("code").and_then(Value::as_i64),
            name: e.get("name").and_then(text),
            message: e.get("message").and_then(text),
        }),
    };
    let state = match info.get("state").and_then(Value::as_str) {
        Some("pending") => ProcessingState::Pending,
        Some("in_progress") => ProcessingState::InProgress,
        Some("succeeded") => ProcessingState::Succeeded,
        Some("failed") => ProcessingState::Failed,
        // An `error` is terminal whatever the state says (M4).
        _ if error.is_some() => ProcessingState::Failed,
        _ => {
            return Err(ProtocolViolation::MalformedResponse(
                "processing_info has no known state (M4)",
            ));
        }
    };
    Ok(Some(ProcessingInfo {
        state,
        check_after_secs: info.get("check_after_secs").and_then(number),
        progress_percent: info
            .get("progress_percent")
            .and_then(number)
            .map(|p| u8::try_from(p.min(100)).unwrap_or(100)),
        error,
    }))
}

/// Seconds until Twitter's rate-limit window resets (M5): `x-rate-limit-reset` (epoch seconds)
/// against the response's `Date`, or `Retry-After`, whichever is longer.
pub(crate) fn rate_limit_wait(headers: &HeaderMap) -> Option<std::time::Duration> {
    let reset = crate::retry::rate_limit_reset(headers);
    let after = crate::retry::retry_after(headers);
    reset.max(after)
}

/// The response's `Date` as seconds since the Unix epoch, if it has a usable one.
pub(crate) fn date_secs(headers: &HeaderMap) -> Option<u64> {
    let date = headers.get(http::header::DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(date.trim()).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// A non-negative integer, written as a JSON number or a decimal string.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => crate::range::parse_decimal(s.trim()),
        _ => None,
    }
}

/// Server text for an outcome or error: control characters removed, at most 200 characters.
fn text(v: &Value) -> Option<String> {
    response::clean_text(v.as_str()?, MAX_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn ids_prefer_the_string_form_m1() {
        let v = json(r#"{"media_id":710511363345354753,"media_id_string":"710511363345354753"}"#);
        assert_eq!(
            media_id(ApiForm::V1_1, &v).as_deref(),
            Some("710511363345354753")
        );
        // Beyond 2^53 a float would have rounded it; serde_json keeps integers exact.
        let v = json(r#"{"media_id":18446744073709551615}"#);
        assert_eq!(
            media_id(ApiForm::V1_1, &v).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(media_id(ApiForm::V1_1, &json(r#"{"media_id":1.5}"#)), None);
        assert_eq!(
            media_id(ApiForm::V1_1, &json(r#"{"media_id_string":"a/b"}"#)),
            None
        );
    }

    #[test]
    fn processing_error_is_terminal_whatever_the_state_m4() {
        let v = json(
            r#"{"processing_info":{"state":"in_progress","error":{"code":1,"name":"InvalidMedia","message":"Unsupported"}}}"#,
        );
        let info = processing_info(&v).unwrap().unwrap();
        assert_eq!(info.state, ProcessingState::InProgress);
        assert_eq!(info.error.unwrap().name.as_deref(), Some("InvalidMedia"));
        assert!(processing_info(&json(r#"{"processing_info":{"state":"odd"}}"#)).is_err());
        assert!(processing_info(&json(r#"{"processing_info":3}"#)).is_err());
        assert_eq!(processing_info(&json("{}")), Ok(None));
    }
}
