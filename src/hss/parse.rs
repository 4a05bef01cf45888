//! Strict reading of HSS's 200 answers, shared by every API module.
//!
//! An answer is untrusted input: a missing or wrongly typed required field, a non-JSON or truncated body becomes a
//! `bad_response` [`PollError`] that names the field by its path (`data_list[2].task_id`) and quotes a short
//! excerpt of the body — never a panic, never a silently wrong number. Unknown fields are ignored (HSS adds fields
//! over time) and optional ones may be absent or `null`. Every string kept is bounded and stripped of control
//! characters: task and cluster names and failure reasons are user-settable text that ends up in chat messages,
//! e-mails and logs.

use std::fmt::Display;

use serde_json::{Map, Value};

use super::errors::EXCERPT_BYTES;
use crate::model::{ErrorKind, PollError, excerpt};

/// The longest excerpt of an offending JSON value (`got …`) in a parse error; the body excerpt follows it.
pub const VALUE_BYTES: usize = 64;
/// The most characters kept of a name (task, cluster, file) taken from HSS.
pub const NAME_CHARS: usize = 256;
/// The most characters kept of a failure reason taken from HSS.
pub const REASON_CHARS: usize = 512;
/// The most characters of an id (task, cluster, file): longer is not an id, and a cut id would name another
/// resource, so it is refused rather than cut.
pub const ID_CHARS: usize = 256;
/// The most characters kept of an enumerated word (`task_status`, `cluster_type`…); HSS's are short.
pub const WORD_CHARS: usize = 64;

/// A JSON value as it appears in a message: its JSON text, cut to [`VALUE_BYTES`].
pub fn value_excerpt(v: &Value) -> String {
    excerpt(&v.to_string(), VALUE_BYTES)
}

/// `s` with control characters (newlines, escape sequences) turned into spaces and cut to `max_chars`
/// characters, marked with `…` when cut.
pub fn bounded(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// The path of a member, for messages: `name` at the top, `parent.name` below.
pub fn path(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}.{name}") }
}

/// One 200 body being read; every error it makes ends with an excerpt of that body.
pub struct Strict<'b> {
    body: &'b [u8],
}

impl<'b> Strict<'b> {
    pub fn new(body: &'b [u8]) -> Self {
        Strict { body }
    }

    /// `bad_response`: what is wrong, then the body excerpt.
    pub fn bad(&self, what: impl Display) -> PollError {
        let text = String::from_utf8_lossy(self.body);
        PollError::new(ErrorKind::BadResponse, format!("{what}; body: {}", excerpt(&text, EXCERPT_BYTES)))
    }

    /// The body as a JSON object: empty, non-JSON (truncated included) and non-object bodies are errors.
    pub fn object(&self) -> Result<Map<String, Value>, PollError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(PollError::new(ErrorKind::BadResponse, "empty response body"));
        }
        let value: Value =
            serde_json::from_slice(self.body).map_err(|e| self.bad(format!("response is not valid JSON ({e})")))?;
        match value {
            Value::Object(object) => Ok(object),
            _ => Err(self.bad("response is not a JSON object")),
        }
    }

    /// A member that must be present and not null.
    fn required<'v>(&self, obj: &'v Map<String, Value>, at: &str) -> Result<&'v Value, PollError> {
        match obj.get(leaf(at)) {
            None => Err(self.bad(format!("`{at}` is missing"))),
            Some(Value::Null) => Err(self.bad(format!("`{at}` is null"))),
            Some(v) => Ok(v),
        }
    }

    /// A required integer >= 0 (`at` is the member's full path; its last segment is looked up in `obj`).
    pub fn count(&self, obj: &Map<String, Value>, at: &str) -> Result<u64, PollError> {
        let v = self.required(obj, at)?;
        v.as_u64().ok_or_else(|| self.bad(format!("`{at}` must be an integer >= 0, got {}", value_excerpt(v))))
    }

    /// An optional integer >= 0.
    pub fn opt_count(&self, obj: &Map<String, Value>, at: &str) -> Result<Option<u64>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{at}` must be an integer >= 0, got {}", value_excerpt(v)))),
        }
    }

    /// An optional time in milliseconds since the epoch (an integer >= 0 that fits an `i64`).
    pub fn opt_millis(&self, obj: &Map<String, Value>, at: &str) -> Result<Option<i64>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|ms| i64::try_from(ms).ok())
                .map(Some)
                .ok_or_else(|| self.bad(format!("`{at}` must be an integer >= 0 (ms), got {}", value_excerpt(v)))),
        }
    }

    /// A required string, [`bounded`] to `max_chars`.
    pub fn string(&self, obj: &Map<String, Value>, at: &str, max_chars: usize) -> Result<String, PollError> {
        let v = self.required(obj, at)?;
        v.as_str()
            .map(|s| bounded(s, max_chars))
            .ok_or_else(|| self.bad(format!("`{at}` must be a string, got {}", value_excerpt(v))))
    }

    /// An optional string, [`bounded`] to `max_chars`.
    pub fn opt_string(
        &self,
        obj: &Map<String, Value>,
        at: &str,
        max_chars: usize,
    ) -> Result<Option<String>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(bounded(s, max_chars))),
            Some(v) => Err(self.bad(format!("`{at}` must be a string, got {}", value_excerpt(v)))),
        }
    }

    /// A required id: a non-empty string of at most [`ID_CHARS`] characters, kept exactly (it names a resource).
    pub fn id(&self, obj: &Map<String, Value>, at: &str) -> Result<String, PollError> {
        let v = self.required(obj, at)?;
        let Some(s) = v.as_str() else {
            return Err(self.bad(format!("`{at}` must be a string, got {}", value_excerpt(v))));
        };
        self.check_id(s, at).map(str::to_string)
    }

    /// An optional id (absent, null or empty: `None`).
    pub fn opt_id(&self, obj: &Map<String, Value>, at: &str) -> Result<Option<String>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => self.check_id(s, at).map(|s| Some(s.to_string())),
            Some(v) => Err(self.bad(format!("`{at}` must be a string, got {}", value_excerpt(v)))),
        }
    }

    fn check_id<'s>(&self, s: &'s str, at: &str) -> Result<&'s str, PollError> {
        if s.is_empty() {
            Err(self.bad(format!("`{at}` is empty")))
        } else if s.chars().count() > ID_CHARS || s.chars().any(char::is_control) {
            Err(self.bad(format!("`{at}` is not an id (control characters, or over {ID_CHARS} characters)")))
        } else {
            Ok(s)
        }
    }

    /// An optional object member (absent or null: `None`).
    pub fn opt_object<'v>(
        &self,
        obj: &'v Map<String, Value>,
        at: &str,
    ) -> Result<Option<&'v Map<String, Value>>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(self.bad(format!("`{at}` must be an object, got {}", value_excerpt(v)))),
        }
    }

    /// An optional array member (absent or null: `None`).
    pub fn opt_array<'v>(&self, obj: &'v Map<String, Value>, at: &str) -> Result<Option<&'v [Value]>, PollError> {
        match obj.get(leaf(at)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => Err(self.bad(format!("`{at}` must be an array, got {}", value_excerpt(v)))),
        }
    }

    /// An element of an array that must be an object.
    pub fn element<'v>(&self, item: &'v Value, at: &str) -> Result<&'v Map<String, Value>, PollError> {
        item.as_object().ok_or_else(|| self.bad(format!("`{at}` must be an object, got {}", value_excerpt(item))))
    }
}

/// The member name of a path (`data_list[0].task_id` → `task_id`).
fn leaf(at: &str) -> &str {
    at.rsplit('.').next().unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_loses_control_characters_and_is_cut_on_a_character() {
        assert_eq!(bounded("a\nb\u{1b}[31mc", 100), "a b [31mc");
        assert_eq!(bounded("扫描任务", 2), "扫描…");
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded(&"x".repeat(10_000), NAME_CHARS).chars().count(), NAME_CHARS + 1);
    }

    #[test]
    fn ids_are_kept_exactly_or_refused() {
        let body = br#"{"a":"id-1","b":"","c":"x\ny","d":7}"#;
        let s = Strict::new(body);
        let obj = s.object().unwrap();
        assert_eq!(s.id(&obj, "a"), Ok("id-1".to_string()));
        assert!(s.id(&obj, "b").unwrap_err().message.contains("`b` is empty"));
        assert!(s.id(&obj, "c").unwrap_err().message.contains("`c` is not an id"));
        assert!(s.id(&obj, "d").unwrap_err().message.contains("`d` must be a string, got 7"));
        assert_eq!(s.opt_id(&obj, "b"), Ok(None));
        assert_eq!(s.opt_id(&obj, "missing"), Ok(None));
        assert!(s.id(&obj, "x.missing").unwrap_err().message.starts_with("`x.missing` is missing; body: {"));
    }
}
