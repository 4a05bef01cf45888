//! Figure 1 of BENCHMARKS.md: one `hss::signer::sign` of a task-statistics GET, next to its baseline, a bare
//! HMAC-SHA256 of the same string-to-sign (the one step signing cannot avoid).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use scanwatch::hss::signer::{SignableRequest, sign};
use sha2::Sha256;

const AK: &str = "HPUAEXAMPLEAK0000001";
const SK: &str = "exampleSecretKey0000000000000000000000001";

fn signing(c: &mut Criterion) {
    let query = vec![
        ("enterprise_project_id".to_string(), "all_granted_eps".to_string()),
        ("task_type".to_string(), "cluster_scan".to_string()),
    ];
    let headers = vec![
        ("Host".to_string(), "hss.cn-north-4.myhuaweicloud.com".to_string()),
        ("X-Sdk-Date".to_string(), "20250422T083000Z".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let req = SignableRequest {
        method: "GET",
        path: "/v5/0123456789abcdef0123456789abcdef/common/task-statistics",
        query: &query,
        headers: &headers,
        body: b"",
    };
    let string_to_sign = match sign(&req, AK, SK) {
        Ok(s) => s.string_to_sign,
        Err(e) => panic!("the benchmark request must sign: {e}"),
    };
    let mut group = c.benchmark_group("signing");
    group.bench_function("baseline_bare_hmac_sha256", |b| {
        b.iter(|| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(black_box(SK.as_bytes())) else { unreachable!() };
            mac.update(black_box(string_to_sign.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
    group.bench_function("hss_signer_sign", |b| b.iter(|| sign(black_box(&req), black_box(AK), black_box(SK))));
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
