//! Every `SDK-HMAC-SHA256` vector produced by Huawei's own SDK must be reproduced byte for byte.

use scanwatch::hss::signer::{self, SignableRequest};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("fixtures/hss_sign_vectors.json");
    let doc: Value = serde_json::from_str(text).expect("fixture is JSON");
    doc["vectors"].as_array().expect("vectors array").clone()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .expect("array of pairs")
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn every_sdk_hmac_sha256_vector_is_reproduced() {
    let mut checked = 0;
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        if !v["string_to_sign"].as_str().unwrap().starts_with(signer::ALGORITHM) {
            continue; // the derived V11 signer is never used for HSS
        }
        let query = pairs(&v["query"]);
        let headers = pairs(&v["headers_input_to_signer"]);
        let body = v["body"].as_str().unwrap_or("").as_bytes().to_vec();
        let req = SignableRequest {
            method: v["method"].as_str().unwrap(),
            path: v["path"].as_str().unwrap(),
            query: &query,
            headers: &headers,
            body: &body,
        };
        let got = signer::sign(&req, v["ak"].as_str().unwrap(), v["sk"].as_str().unwrap()).unwrap();
        assert_eq!(got.canonical_request, v["canonical_request"].as_str().unwrap(), "{name}: canonical request");
        assert_eq!(got.string_to_sign, v["string_to_sign"].as_str().unwrap(), "{name}: string to sign");
        assert_eq!(got.signed_headers, v["signed_headers"].as_str().unwrap(), "{name}: signed headers");
        assert_eq!(got.signature, v["signature"].as_str().unwrap(), "{name}: signature");
        assert_eq!(got.authorization, v["authorization"].as_str().unwrap(), "{name}: authorization");

        // The SDK sends the canonical query as the URL's query, so the wire order is the canonical order.
        let Some(final_url) = v["final_url"].as_str() else {
            checked += 1;
            continue;
        };
        let canonical_query = signer::canonical_query(&query);
        if canonical_query.is_empty() {
            assert!(!final_url.contains('?'), "{name}: no query, no '?'");
        } else {
            assert!(final_url.ends_with(&format!("?{canonical_query}")), "{name}: wire query {final_url}");
        }
        checked += 1;
    }
    assert_eq!(checked, 18, "every SDK-HMAC-SHA256 vector was walked");
}
