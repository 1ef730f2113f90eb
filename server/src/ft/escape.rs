//! Turning client-chosen strings (client id, file id, file name) into one harmless path component.
//!
//! Every byte outside `[A-Za-z0-9._-]` is percent-encoded (`%2F`, upper-case hex), so no separator,
//! NUL or control byte survives; `""`, `.` and `..`, the only all-safe strings with a meaning to the
//! filesystem, get forms no other input produces (`%`, `%2E`, `%2E%2E`). An escaped form longer than
//! [`MAX_COMPONENT`] bytes (a 255-byte client id can triple) is cut and suffixed with `~` and a digest
//! of the original: `~` is always encoded otherwise, so shortened forms never collide with plain ones.

use sha2::{Digest, Sha256};

/// Longest component produced: leaves room for `.manifest.json` under the usual 255-byte `NAME_MAX`.
pub const MAX_COMPONENT: usize = 200;

/// Longest extension kept after a shortened name, so `report-….csv` stays a `.csv`.
const MAX_KEPT_EXT: usize = 24;

fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Escapes `s` into a single path component; injective, never empty, never `.` or `..`.
pub fn escape(s: &str) -> String {
    match s {
        "" => return "%".to_owned(),
        "." => return "%2E".to_owned(),
        ".." => return "%2E%2E".to_owned(),
        _ => {}
    }
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if out.len() <= MAX_COMPONENT {
        return out;
    }
    shorten(s, &out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn shorten(original: &str, escaped: &str) -> String {
    let digest = Sha256::digest(original.as_bytes());
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    // Keep a short extension (the escaped text after the last '.') so the file still opens by type.
    let ext = match escaped.rfind('.') {
        Some(i) if escaped.len() - i <= MAX_KEPT_EXT && i > 0 => &escaped[i..],
        _ => "",
    };
    let budget = MAX_COMPONENT - 1 - tag.len() - ext.len();
    // The escaped text is ASCII; do not cut inside a `%XX` triple.
    let mut cut = budget.min(escaped.len());
    let bytes = escaped.as_bytes();
    for back in 1..=2 {
        if cut >= back && bytes.get(cut - back) == Some(&b'%') {
            cut -= back;
            break;
        }
    }
    format!("{}~{}{}", &escaped[..cut], tag, ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_strings_pass_through() {
        assert_eq!(escape("dev-01_a.B"), "dev-01_a.B");
        assert_eq!(escape("...x"), "...x");
    }

    #[test]
    fn traversal_is_harmless() {
        assert_eq!(escape("../../etc/passwd"), "..%2F..%2Fetc%2Fpasswd");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("."), "%2E");
        assert_eq!(escape(""), "%");
        assert_eq!(escape("a\\b:c\0"), "a%5Cb%3Ac%00");
        assert_eq!(escape("%2E"), "%252E");
        assert_eq!(escape("日"), "%E6%97%A5");
    }

    #[test]
    fn long_inputs_are_shortened_without_collisions() {
        let a = "é".repeat(200) + ".tar.gz";
        let b = "é".repeat(201) + ".tar.gz";
        let (ea, eb) = (escape(&a), escape(&b));
        assert!(ea.len() <= MAX_COMPONENT && eb.len() <= MAX_COMPONENT);
        assert_ne!(ea, eb);
        assert!(ea.ends_with(".gz"), "{ea}");
        assert!(ea.contains('~'));
        // No half escape before the `~`.
        let before = &ea[..ea.find('~').unwrap_or(0)];
        assert!(!before.ends_with('%') && !before[..before.len() - 1].ends_with('%'));
        let long_safe = "x".repeat(300);
        assert_eq!(escape(&long_safe).len(), MAX_COMPONENT);
    }
}
