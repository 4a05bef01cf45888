//! AK/SK request signing, `SDK-HMAC-SHA256`, exactly as Huawei's SDKs sign.
//!
//! The canonical request is six lines: method, canonical URI, canonical query, canonical headers (each line ending
//! in `\n`, so a blank line follows them), signed headers and the payload hash. The string to sign is
//! `SDK-HMAC-SHA256\n{X-Sdk-Date}\n{hex(sha256(canonical request))}` and the signature is the hex HMAC-SHA256 of it
//! keyed by the SK — no key-derivation chain. `tests/fixtures/hss_sign_vectors.json`, produced by Huawei's own Python
//! SDK, is the truth; `tests/signing_vectors.rs` walks every vector. The simulator verifies with the same code, so a
//! mistake here cannot hide behind a matching mistake there: the vectors pin both.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The algorithm name that starts the `Authorization` header and the string to sign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The header carrying the signing time, `YYYYMMDDTHHMMSSZ` in UTC.
pub const HEADER_SDK_DATE: &str = "X-Sdk-Date";
/// The `strftime` format of `X-Sdk-Date`.
pub const SDK_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// SHA-256 of the empty string: the payload hash of every GET.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Python's `quote(s, safe='~')`: everything but `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper-case hex).
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A request as the signer sees it. `headers` must already contain `X-Sdk-Date` and `Host` (any case).
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as it goes on the wire, without the query (it may carry percent-escapes).
    pub path: &'a str,
    /// Query pairs in any order; the canonical (and wire) order is derived from them.
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Everything the signer derived, kept so that tests and the simulator's 401 message can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

/// Why a request could not be signed (or verified).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The signing time is part of the string to sign; without it nothing can be signed.
    #[error("the request has no X-Sdk-Date header")]
    MissingDate,
}

/// Python `quote(s, safe='~')` over the UTF-8 bytes.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE_SET).to_string()
}

/// The canonical URI: percent-decode, split on `/`, encode each segment, and end with `/`.
pub fn canonical_uri(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut uri = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The canonical query: raw `(key, value)` pairs sorted by code point, then encoded. The SDK sends exactly this
/// string as the URL's query, so callers use it for the wire too.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// Signs `req` with the given AK and SK.
pub fn sign(req: &SignableRequest<'_>, ak: &str, sk: &str) -> Result<Signature, SignError> {
    let date = header_value(req.headers, HEADER_SDK_DATE).ok_or(SignError::MissingDate)?;

    // Names containing `_` are sent but never signed (the SDK skips them, and so do gateways).
    let mut signed: Vec<(String, &str)> = req
        .headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let signed_headers = signed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();

    let payload_hash = if req.body.is_empty() {
        EMPTY_SHA256.to_string()
    } else if let Some(v) = header_value(req.headers, "X-Sdk-Content-Sha256") {
        v.to_string()
    } else {
        hex::encode(Sha256::digest(req.body))
    };

    let canonical_request = [
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed_headers.clone(),
        payload_hash,
    ]
    .join("\n");
    let string_to_sign = format!("{ALGORITHM}\n{date}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let signature = hex::encode(hmac_sha256(sk.as_bytes(), string_to_sign.as_bytes()));
    let authorization = format!("{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}");
    Ok(Signature { canonical_request, string_to_sign, signed_headers, signature, authorization })
}

/// HMAC-SHA256, shared by every signer in scanwatch (HSS, and the chat channels that sign).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// The parts of an `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub access: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an `Authorization` header as the gateway does; `None` when it is not an `SDK-HMAC-SHA256` one.
pub fn parse_authorization(value: &str) -> Option<ParsedAuthorization> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.split(';').map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>()),
            "Signature" => signature = Some(v.to_string()),
            _ => return None,
        }
    }
    Some(ParsedAuthorization { access: access?, signed_headers: signed?, signature: signature? })
}

/// Constant-time equality for secrets and signatures.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_value<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_python_quote_with_tilde_safe() {
        assert_eq!(encode("a b/c+*~-_."), "a%20b%2Fc%2B%2A~-_.");
        assert_eq!(encode("中"), "%E4%B8%AD");
    }

    #[test]
    fn canonical_uri_always_ends_with_a_slash_and_reencodes_segments() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/v5/p/x"), "/v5/p/x/");
        assert_eq!(canonical_uri("/v5/p/x/"), "/v5/p/x/");
        assert_eq!(canonical_uri("/a%20b/%E4%B8%AD/c~d"), "/a%20b/%E4%B8%AD/c~d/");
    }

    #[test]
    fn query_sorts_raw_pairs_not_encoded_ones() {
        let q: Vec<(String, String)> =
            [("k", "a:"), ("k", "a0"), ("a", "1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(canonical_query(&q), "a=1&k=a0&k=a%3A");
    }

    #[test]
    fn a_request_without_a_date_cannot_be_signed() {
        let req = SignableRequest { method: "GET", path: "/", query: &[], headers: &[], body: b"" };
        assert_eq!(sign(&req, "ak", "sk"), Err(SignError::MissingDate));
    }

    #[test]
    fn authorization_round_trips_through_the_parser() {
        let headers =
            vec![("Host".to_string(), "h".to_string()), ("X-Sdk-Date".to_string(), "20240102T030405Z".to_string())];
        let req = SignableRequest { method: "GET", path: "/", query: &[], headers: &headers, body: b"" };
        let s = sign(&req, "AK1", "SK1").unwrap();
        let p = parse_authorization(&s.authorization).unwrap();
        assert_eq!(p.access, "AK1");
        assert_eq!(p.signed_headers, vec!["host", "x-sdk-date"]);
        assert_eq!(p.signature, s.signature);
        assert!(parse_authorization("Bearer x").is_none());
    }
}
