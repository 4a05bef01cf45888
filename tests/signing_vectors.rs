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

/// The header set scanwatch's client sends to HSS (the SDK's default): vectors with exactly this set go through
/// the client's own request preparation, not just the bare signer.
const CLIENT_SIGNED_SETS: [&str; 2] = [
    "content-type;host;user-agent;x-project-id;x-sdk-date",
    "content-type;host;user-agent;x-project-id;x-sdk-date;x-security-token",
];

#[test]
fn the_clients_own_request_preparation_reproduces_every_sdk_client_vector_get_and_post() {
    use scanwatch::hss::transport::{HssAuth, HssRequest, HttpMethod, prepare};
    use sha2::{Digest, Sha256};

    let mut walked = Vec::new();
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let signed = v["signed_headers"].as_str().unwrap();
        if !v["layer"].as_str().unwrap().starts_with("HssClient") || !CLIENT_SIGNED_SETS.contains(&signed) {
            continue;
        }
        let headers = pairs(&v["headers_input_to_signer"]);
        let header = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let method = match v["method"].as_str().unwrap() {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            other => panic!("{name}: unexpected method {other}"),
        };
        let body = v["body"].as_str().unwrap_or("").as_bytes().to_vec();
        let url = url::Url::parse(&format!("https://{}{}", v["host"].as_str().unwrap(), v["path"].as_str().unwrap()))
            .unwrap();
        let req = HssRequest {
            method,
            url,
            query: pairs(&v["query"]),
            project_id: v["project_id"].as_str().unwrap(),
            body: body.clone(),
            api: "vector",
            task_id: None,
        };
        let auth = HssAuth::Signed {
            ak: v["ak"].as_str().unwrap(),
            sk: v["sk"].as_str().unwrap(),
            security_token: v["security_token"].as_str(),
        };
        let date =
            chrono::NaiveDateTime::parse_from_str(v["sdk_date"].as_str().unwrap(), "%Y%m%dT%H%M%SZ").unwrap().and_utc();
        let prepared = prepare(&req, &auth, &header("User-Agent").unwrap(), date).unwrap();

        assert_eq!(prepared.header("Authorization"), v["authorization"].as_str(), "{name}: authorization");
        assert_eq!(prepared.url.as_str(), v["final_url"].as_str().unwrap(), "{name}: the URL sent");
        for (n, value) in &headers {
            assert_eq!(prepared.header(n), Some(value.as_str()), "{name}: header {n} sent as signed");
        }
        // What is hashed into the signature is what goes on the wire.
        assert_eq!(prepared.body, body, "{name}: body bytes");
        if let Some(hash) = v["body_sha256"].as_str() {
            assert_eq!(hex::encode(Sha256::digest(&prepared.body)), hash, "{name}: body hash");
            assert!(v["canonical_request"].as_str().unwrap().ends_with(hash), "{name}: the last canonical line");
        }
        walked.push(name.to_string());
    }
    for must in ["post_json_body", "post_json_body_with_security_token", "hss_get_iac_all_eps"] {
        assert!(walked.iter().any(|n| n == must), "{must} went through the client path: {walked:?}");
    }
    assert_eq!(walked.len(), 10, "{walked:?}");
}
