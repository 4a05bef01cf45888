//! The config loader on arbitrary text.
//!
//! Input: the TOML text, optionally followed by a NUL byte and `KEY=VALUE` lines that become `SCANWATCH__KEY`
//! overrides. Properties: nothing panics; every problem names its key or, for a file that is not TOML, the line;
//! no secret from the environment shows in an error, a warning, `Debug` or the serialized (`config show`) form.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scanwatch::config::{Config, Environment};

const SECRETS: [(&str, &str); 3] = [
    ("HUAWEICLOUD_SDK_AK", "AKFUZZ0000000000"),
    ("HUAWEICLOUD_SDK_SK", "SKFUZZsecret00000000"),
    ("FUZZ_PASSWORD", "PWFUZZsecret11111111"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (text, overrides) = input.split_once('\0').unwrap_or((input, ""));
    let mut vars: Vec<(String, String)> = SECRETS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for line in overrides.lines() {
        if let Some((k, v)) = line.split_once('=') {
            vars.push((format!("SCANWATCH__{k}"), v.to_string()));
        }
    }
    let env = Environment::from_pairs(vars);
    // A fuzzer that learned a secret's value and wrote it into the file itself is not a leak.
    let in_input = SECRETS[1..].iter().any(|(_, v)| input.contains(v));
    let secret = |s: &str| !in_input && SECRETS[1..].iter().any(|(_, v)| s.contains(v));

    match Config::from_toml_str(text, Path::new("/nonexistent/scanwatch"), &env) {
        Ok(config) => {
            let shown = serde_json::to_string(&config).unwrap_or_default();
            assert!(!secret(&shown), "a secret in the serialized config");
            assert!(!secret(&format!("{config:?}")), "a secret in the config's Debug");
            for w in &config.warnings {
                assert!(!secret(&w.to_string()), "a secret in a warning: {w}");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                assert!(
                    !p.key.is_empty() || p.message.contains("line"),
                    "a problem naming neither key nor line: {p:?}"
                );
                assert!(!secret(&p.to_string()), "a secret in a problem: {p}");
            }
        }
    }
});
