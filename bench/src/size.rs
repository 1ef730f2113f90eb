//! Byte sizes on the command line (`1G`, `256M`, `64KiB`) and in reports, one grammar for every tool.

use anyhow::{bail, Context, Result};

/// Parses `1G`, `256M`, `64K`, `1048576` (binary units; `GiB`/`MiB`/`KiB`, `KB`, `B` and lower case
/// too, a space before the unit allowed). Every bench tool's flags go through here, so `64K` means
/// the same bytes in each.
pub fn parse_size(s: &str) -> Result<u64> {
    let upper = s.trim().to_ascii_uppercase();
    let (num, unit) = upper.split_at(
        upper
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(upper.len()),
    );
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        _ => bail!("bad size {s:?}"),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("size {s:?} overflows"))
}

/// Bytes as `1 GiB`, `8 MiB`, `512 KiB` when exact, else in bytes.
pub fn fmt_size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n & ((1 << shift) - 1) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").expect("1G"), 1 << 30);
        assert_eq!(parse_size("256M").expect("256M"), 256 << 20);
        assert_eq!(parse_size("8MiB").expect("8MiB"), 8 << 20);
        assert_eq!(parse_size("64k").expect("64k"), 64 << 10);
        assert_eq!(parse_size("1000").expect("1000"), 1000);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(fmt_size(1 << 30), "1 GiB");
        assert_eq!(fmt_size(3 << 19), "1536 KiB");
        assert_eq!(fmt_size(1000), "1000 B");
    }

    /// What the tools' former copies accepted (devices: `B`/`KB` suffixes; cc_bench: `KIB`;
    /// ft_load: a space before the unit) all still parse to the same bytes.
    #[test]
    fn every_former_spelling() {
        for (s, n) in [
            ("16M", 16u64 << 20),
            ("16MiB", 16 << 20),
            ("16MIB", 16 << 20),
            ("64KB", 64 << 10),
            ("64 K", 64 << 10),
            (" 2g ", 2 << 30),
            ("512B", 512),
        ] {
            assert_eq!(parse_size(s).ok(), Some(n), "{s:?}");
        }
        for bad in ["K", "1.5M", "-1", "1T", "18446744073709551615K"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
