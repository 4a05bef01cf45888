//! What the signer's canonical forms may contain, shared by the proptest properties (tests/properties.rs) and the
//! `signer_canonical` fuzz target (fuzz/fuzz_targets/signer_canonical.rs includes this file by path).

/// Only unreserved characters (`A-Za-z0-9-_.~`), `%XX` with upper-case hex, and the given separators.
pub fn is_encoded(s: &str, separators: &[u8]) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
            if i + 2 >= b.len() || !(hex(b[i + 1]) && hex(b[i + 2])) {
                return false;
            }
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || b"-_.~".contains(&b[i]) || separators.contains(&b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}
