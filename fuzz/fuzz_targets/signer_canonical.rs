//! The signer's canonicalisation on arbitrary paths, queries and headers.
//!
//! Properties: nothing panics; `encode` emits only unreserved characters and `%XX` and decodes back to its input;
//! the canonical URI is encoded segments ending in `/`; the canonical query does not depend on the order of the
//! pairs; signing is deterministic and `parse_authorization` reads back the header that `sign` wrote.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use scanwatch::hss::signer::{
    HEADER_SDK_DATE, SignableRequest, canonical_query, canonical_uri, encode, parse_authorization, sign,
};

#[path = "../../tests/encoding/mod.rs"]
mod encoding;
use encoding::is_encoded;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    /// Names are mapped onto HTTP token characters (a header name cannot be anything else on the wire).
    headers: Vec<(Vec<u8>, String)>,
    body: Vec<u8>,
    /// Mapped onto `[A-Za-z0-9]`, as every AK is.
    ak: Vec<u8>,
    sk: String,
    date: String,
    rotate: u8,
    raw_authorization: String,
}

const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn map_onto(bytes: &[u8], set: &[u8]) -> String {
    bytes.iter().map(|b| char::from(set[usize::from(*b) % set.len()])).collect()
}

fuzz_target!(|input: Input| {
    for s in [&input.path, &input.method, &input.sk] {
        let e = encode(s);
        assert!(is_encoded(&e, b""), "{e:?}");
        assert_eq!(percent_decode_str(&e).decode_utf8().ok().as_deref(), Some(s.as_str()));
    }

    let uri = canonical_uri(&input.path);
    assert!(uri.ends_with('/'), "{uri:?}");
    assert!(is_encoded(&uri, b"/"), "{uri:?}");
    assert_eq!(canonical_uri(&uri), uri, "canonicalising twice changed the URI");

    let query = canonical_query(&input.query);
    assert!(is_encoded(&query, b"=&"), "{query:?}");
    let mut shuffled = input.query.clone();
    shuffled.reverse();
    if !shuffled.is_empty() {
        let n = usize::from(input.rotate) % shuffled.len();
        shuffled.rotate_left(n);
    }
    assert_eq!(canonical_query(&shuffled), query, "the canonical query depends on the order of the pairs");

    let mut headers: Vec<(String, String)> =
        input.headers.iter().map(|(name, value)| (map_onto(name, TOKEN), value.clone())).collect();
    // The request must carry a date; a fuzzed header may also be called X-Sdk-Date, and the first one counts.
    headers.insert(usize::from(input.rotate) % (headers.len() + 1), (HEADER_SDK_DATE.to_string(), input.date));
    let ak = map_onto(&input.ak, ALNUM);
    let req = SignableRequest {
        method: &input.method,
        path: &input.path,
        query: &input.query,
        headers: &headers,
        body: &input.body,
    };
    let Ok(first) = sign(&req, &ak, &input.sk) else { panic!("a request with a date could not be signed") };
    let again = sign(&SignableRequest { query: &shuffled, ..req }, &ak, &input.sk);
    assert_eq!(again.as_ref(), Ok(&first), "signing is not deterministic (or depends on the query order)");
    assert_eq!(first.signature.len(), 64);
    assert!(first.signature.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    let parsed = parse_authorization(&first.authorization).unwrap_or_else(|| panic!("{:?}", first.authorization));
    assert_eq!(parsed.access, ak);
    assert_eq!(parsed.signature, first.signature);
    assert_eq!(parsed.signed_headers.join(";"), first.signed_headers);

    let _ = parse_authorization(&input.raw_authorization);
});
