//! Parsing of `$file/…` and `$file-async/…` topics (DESIGN §2, EMQX `emqx_ft` layout).
//!
//! ```text
//! topic    = prefix fileId "/" command
//! prefix   = "$file/" | "$file-async/"
//! fileId   = 1..=255 bytes, one topic level: no "/", "+", "#" or U+0000
//! command  = "init"
//!          | offset [ "/" sha256 ]              segment
//!          | "fin/" size [ "/" sha256 ]
//!          | "abort"
//!          | "status"                            quicft extension
//! offset   = size = 1*DIGIT                      decimal u64: no sign, no overflow
//! sha256   = 64 HEXDIG                           either case
//! ```
//!
//! Like EMQX, the keywords are matched before the offset, and anything else under the two prefixes
//! (a missing command, extra levels, a bad number or digest) is a protocol error that the server
//! answers rather than routes.

use std::fmt;
use std::str::FromStr;

use super::{ASYNC_PREFIX, SYNC_PREFIX};

/// Longest file id accepted, in bytes. It is a topic level, not a file name, but it names a directory
/// (escaped) on the server, so it is bounded like a file name.
pub const MAX_FILE_ID_LEN: usize = 255;

/// Sync (`$file/`) or async (`$file-async/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Sync,
    Async,
}

impl Mode {
    /// The topic prefix of this mode, slash included.
    pub fn prefix(self) -> &'static str {
        match self {
            Mode::Sync => SYNC_PREFIX,
            Mode::Async => ASYNC_PREFIX,
        }
    }
}

/// A client-chosen file id: one non-empty topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(String);

impl FileId {
    /// Accepts one topic level of 1..=255 bytes without `/`, `+`, `#` or U+0000.
    pub fn parse(s: &str) -> Result<FileId, FtTopicError> {
        if s.is_empty() {
            return Err(FtTopicError::Invalid("empty file id"));
        }
        if s.len() > MAX_FILE_ID_LEN {
            return Err(FtTopicError::Invalid("file id longer than 255 bytes"));
        }
        if s.contains(['/', '+', '#', '\0']) {
            return Err(FtTopicError::Invalid(
                "file id must be one topic level without `+`, `#` or U+0000",
            ));
        }
        Ok(FileId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FileId {
    type Err = FtTopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileId::parse(s)
    }
}

/// A SHA-256 digest parsed from 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses exactly 64 hex digits, upper or lower case (EMQX clients send either).
    pub fn parse_hex(s: &str) -> Result<Sha256, FtTopicError> {
        const BAD: FtTopicError = FtTopicError::Invalid("checksum must be 64 hex digits");
        let hex = s.as_bytes();
        if hex.len() != 64 {
            return Err(BAD);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            // chunks_exact(2) only yields pairs; the pattern spares an index.
            let [hi, lo] = pair else { return Err(BAD) };
            *byte = (hex_value(*hi).ok_or(BAD)? << 4) | hex_value(*lo).ok_or(BAD)?;
        }
        Ok(Sha256(out))
    }

    /// Lowercase hex, the canonical form quicft writes.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

// Hex in logs rather than 32 decimal numbers.
impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = FtTopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256::parse_hex(s)
    }
}

/// A file-transfer command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Init,
    Segment {
        offset: u64,
        checksum: Option<Sha256>,
    },
    Fin {
        size: u64,
        checksum: Option<Sha256>,
    },
    Abort,
    Status,
}

/// A parsed file-transfer topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtTopic {
    pub mode: Mode,
    pub file_id: FileId,
    pub command: Command,
}

/// Formats the canonical topic (lowercase hex, no leading zeros), which [`parse_topic`] reads back.
impl fmt::Display for FtTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_topic(f, self.mode, &self.file_id, &self.command)
    }
}

impl FileId {
    /// The topic of `command` on this file, as [`FtTopic`] formats it. Clients build every topic
    /// they send this way, so the grammar is written once, here; it borrows the id, because an
    /// upload sends one topic per segment.
    pub fn topic(&self, mode: Mode, command: &Command) -> String {
        let mut topic = String::new();
        // Writing to a String cannot fail.
        let _ = write_topic(&mut topic, mode, self, command);
        topic
    }
}

fn write_topic(
    f: &mut impl fmt::Write,
    mode: Mode,
    file_id: &FileId,
    command: &Command,
) -> fmt::Result {
    write!(f, "{}{}/", mode.prefix(), file_id)?;
    let (number, checksum) = match command {
        Command::Init => return f.write_str("init"),
        Command::Abort => return f.write_str("abort"),
        Command::Status => return f.write_str("status"),
        Command::Segment { offset, checksum } => (offset, checksum),
        Command::Fin { size, checksum } => {
            f.write_str("fin/")?;
            (size, checksum)
        }
    };
    write!(f, "{number}")?;
    match checksum {
        Some(sum) => write!(f, "/{sum}"),
        None => Ok(()),
    }
}

/// Why a `$file…` topic is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FtTopicError {
    #[error("invalid file-transfer topic: {0}")]
    Invalid(&'static str),
}

/// `None` when `topic` is not under `$file/` or `$file-async/`.
///
/// Otherwise the parsed command, or an error naming what is wrong; see the module docs for the grammar.
pub fn parse_topic(topic: &str) -> Option<Result<FtTopic, FtTopicError>> {
    let (mode, rest) = if let Some(rest) = topic.strip_prefix(SYNC_PREFIX) {
        (Mode::Sync, rest)
    } else {
        (Mode::Async, topic.strip_prefix(ASYNC_PREFIX)?)
    };
    Some(parse_command(mode, rest))
}

fn parse_command(mode: Mode, rest: &str) -> Result<FtTopic, FtTopicError> {
    // No `/` at all (`$file/f1`) leaves the command empty; FileId::parse refuses an empty id.
    let (file_id, command) = rest.split_once('/').unwrap_or((rest, ""));
    let file_id = FileId::parse(file_id)?;
    if command.is_empty() {
        return Err(FtTopicError::Invalid(
            "missing command after the file id (init, an offset, fin, abort or status)",
        ));
    }
    // `Split` is fused, so asking past the end keeps answering None.
    let mut levels = command.split('/');
    let levels = (levels.next(), levels.next(), levels.next(), levels.next());
    let command = match levels {
        (Some("init"), None, ..) => Command::Init,
        (Some("abort"), None, ..) => Command::Abort,
        (Some("status"), None, ..) => Command::Status,
        (Some("init" | "abort" | "status"), Some(_), ..) => {
            return Err(FtTopicError::Invalid(
                "init, abort and status take no further topic levels",
            ))
        }
        (Some("fin"), None, ..) => {
            return Err(FtTopicError::Invalid(
                "fin needs the final size: fin/{size}[/{sha256}]",
            ))
        }
        (Some("fin"), Some(size), checksum, None) => Command::Fin {
            size: parse_number(size, "fin size must be a decimal u64")?,
            checksum: checksum.map(Sha256::parse_hex).transpose()?,
        },
        (Some("fin"), ..) => {
            return Err(FtTopicError::Invalid(
                "too many topic levels: fin/{size}[/{sha256}]",
            ))
        }
        (Some(offset), checksum, None, _) => Command::Segment {
            offset: parse_number(
                offset,
                "unknown command: expected init, a decimal u64 offset, fin, abort or status",
            )?,
            checksum: checksum.map(Sha256::parse_hex).transpose()?,
        },
        _ => {
            return Err(FtTopicError::Invalid(
                "too many topic levels: {offset}[/{sha256}]",
            ))
        }
    };
    Ok(FtTopic {
        mode,
        file_id,
        command,
    })
}

/// Decimal digits only: `u64::from_str` alone would also take a leading `+`.
fn parse_number(s: &str, what: &'static str) -> Result<u64, FtTopicError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FtTopicError::Invalid(what));
    }
    s.parse().map_err(|_| FtTopicError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(topic: &str) -> FtTopic {
        match parse_topic(topic) {
            Some(Ok(t)) => t,
            other => panic!("{topic:?}: {other:?}"),
        }
    }

    fn err(topic: &str) -> FtTopicError {
        match parse_topic(topic) {
            Some(Err(e)) => e,
            other => panic!("{topic:?}: {other:?}"),
        }
    }

    fn id(s: &str) -> FileId {
        FileId(s.to_owned())
    }

    #[test]
    fn not_file_transfer() {
        for topic in [
            "a/b",
            "$file",
            "$file-async",
            "$file-response/c",
            "$files/x/init",
            "file/x",
        ] {
            assert_eq!(parse_topic(topic), None, "{topic:?}");
        }
    }

    #[test]
    fn commands() {
        let sum = Sha256::parse_hex(HEX).ok();
        let cases = [
            ("$file/f1/init", Mode::Sync, Command::Init),
            ("$file-async/f1/init", Mode::Async, Command::Init),
            ("$file/f1/abort", Mode::Sync, Command::Abort),
            ("$file/f1/status", Mode::Sync, Command::Status),
            (
                "$file/f1/0",
                Mode::Sync,
                Command::Segment {
                    offset: 0,
                    checksum: None,
                },
            ),
            (
                "$file-async/f1/18446744073709551615",
                Mode::Async,
                Command::Segment {
                    offset: u64::MAX,
                    checksum: None,
                },
            ),
            (
                "$file/f1/1024/E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Mode::Sync,
                Command::Segment {
                    offset: 1024,
                    checksum: sum,
                },
            ),
            (
                "$file/f1/fin/10",
                Mode::Sync,
                Command::Fin {
                    size: 10,
                    checksum: None,
                },
            ),
            (
                &format!("$file/f1/fin/0/{HEX}"),
                Mode::Sync,
                Command::Fin {
                    size: 0,
                    checksum: sum,
                },
            ),
            // Leading zeros are accepted, as EMQX does.
            (
                "$file/f1/007",
                Mode::Sync,
                Command::Segment {
                    offset: 7,
                    checksum: None,
                },
            ),
        ];
        for (topic, mode, command) in cases {
            assert_eq!(
                ok(topic),
                FtTopic {
                    mode,
                    file_id: id("f1"),
                    command
                },
                "{topic}"
            );
        }
    }

    #[test]
    fn odd_file_ids() {
        // A file id that looks like a command is still just an id.
        assert_eq!(ok("$file/init/init").file_id, id("init"));
        assert_eq!(ok("$file/$file/abort").file_id, id("$file"));
        assert_eq!(ok("$file/ü €/status").file_id, id("ü €"));
        let long = "x".repeat(MAX_FILE_ID_LEN);
        assert_eq!(ok(&format!("$file/{long}/init")).file_id, id(&long));
        err(&format!("$file/{long}x/init"));
    }

    #[test]
    fn errors() {
        let too_big = "18446744073709551616";
        for topic in [
            "$file/",
            "$file//init",
            "$file/f1",
            "$file/f1/",
            "$file-async/f1",
            "$file/f+/init",
            "$file/#/init",
            "$file/f\0/init",
            "$file/f1/init/x",
            "$file/f1/abort/",
            "$file/f1/status/x",
            "$file/f1/fin",
            "$file/f1/fin/",
            "$file/f1/fin/x",
            "$file/f1/fin/-1",
            "$file/f1/fin/+1",
            &format!("$file/f1/fin/{too_big}"),
            &format!("$file/f1/fin/1/{HEX}/x"),
            "$file/f1/fin/1/abc",
            "$file/f1/-1",
            "$file/f1/+1",
            "$file/f1/ 1",
            "$file/f1/1.0",
            "$file/f1/0x10",
            "$file/f1/١٢",
            &format!("$file/f1/{too_big}"),
            "$file/f1/1/",
            &format!("$file/f1/1/{HEX}/x"),
            &format!("$file/f1/1/{}", &HEX[1..]),
            &format!("$file/f1/1/{HEX}0"),
            &format!("$file/f1/1/{}g", &HEX[1..]),
            "$file/f1/INIT",
            "$file/f1/unknown",
        ] {
            err(topic);
        }
    }

    #[test]
    fn hex() {
        let sum = Sha256::parse_hex(HEX).expect("valid hex");
        assert_eq!(sum.0[0], 0xe3);
        assert_eq!(sum.0[31], 0x55);
        assert_eq!(sum.to_hex(), HEX);
        assert_eq!(Sha256::parse_hex(&HEX.to_uppercase()), Ok(sum));
        assert!(format!("{sum:?}").contains(HEX));
        // 64 bytes but not 64 ASCII characters: must not panic on a char boundary.
        let multibyte = "é".repeat(32);
        assert!(Sha256::parse_hex(&multibyte).is_err());
        assert!(Sha256::parse_hex("").is_err());
    }

    /// The SDK and the bench build every topic they send this way: the exact bytes matter, since
    /// a response echoes the topic and is matched to its command by it.
    #[test]
    fn formats_golden_topics() {
        let sum = Sha256::parse_hex(HEX).ok();
        let topic = |mode, command| {
            FtTopic {
                mode,
                file_id: id("f1"),
                command,
            }
            .to_string()
        };
        let cases = [
            (Mode::Sync, Command::Init, "$file/f1/init".to_owned()),
            (Mode::Async, Command::Init, "$file-async/f1/init".to_owned()),
            (Mode::Sync, Command::Abort, "$file/f1/abort".to_owned()),
            (
                Mode::Async,
                Command::Status,
                "$file-async/f1/status".to_owned(),
            ),
            (
                Mode::Sync,
                Command::Segment {
                    offset: 0,
                    checksum: None,
                },
                "$file/f1/0".to_owned(),
            ),
            (
                Mode::Sync,
                Command::Segment {
                    offset: u64::MAX,
                    checksum: sum,
                },
                format!("$file/f1/18446744073709551615/{HEX}"),
            ),
            (
                Mode::Sync,
                Command::Fin {
                    size: 1048576,
                    checksum: None,
                },
                "$file/f1/fin/1048576".to_owned(),
            ),
            (
                Mode::Async,
                Command::Fin {
                    size: 0,
                    checksum: sum,
                },
                format!("$file-async/f1/fin/0/{HEX}"),
            ),
        ];
        for (mode, command, want) in cases {
            assert_eq!(topic(mode, command.clone()), want, "{command:?}");
            assert_eq!(id("f1").topic(mode, &command), want, "{command:?}");
            assert_eq!(ok(&want).command, command, "{want}");
        }
    }

    #[test]
    fn display_round_trips() {
        let topic = format!("$file-async/f1/fin/42/{HEX}");
        assert_eq!(ok(&topic).to_string(), topic);
        assert_eq!(ok("$file/f1/7").to_string(), "$file/f1/7");
        assert_eq!(ok("$file/f1/status").to_string(), "$file/f1/status");
    }
}
