//! AWS IoT MQTT-based file delivery (the "streaming service" that AWS's OTA agent and MQTT
//! file-streams library talk to), as AWS's developer guide describes it:
//!
//! ```text
//! $aws/things/{thing}/streams/{streamId}/describe/{json|cbor}     device → server  {"c"}
//! $aws/things/{thing}/streams/{streamId}/description/{json|cbor}  server → device  {"c","s","d","r":[{"f","z"}]}
//! $aws/things/{thing}/streams/{streamId}/get/{json|cbor}          device → server  {"c","s","f","l","o","n","b"}
//! $aws/things/{thing}/streams/{streamId}/data/{json|cbor}         server → device  {"c","f","l","i","p"} per block
//! $aws/things/{thing}/streams/{streamId}/rejected/{json|cbor}     server → device  {"o","m","c"}
//! ```
//!
//! JSON carries the block payload `p` as base64 and the bitmap `b` as a hex string (`"0x130080"`);
//! CBOR carries both as byte strings. Bit `k` of the bitmap is bit `k % 8` (least significant
//! first) of byte `k / 8` and stands for block `o + k`. One request is answered with at most
//! 128 KiB of blocks ([`MAX_BYTES_PER_REQUEST`]); the device asks again for the rest.
//!
//! Sans-IO: topics are parsed, payloads decoded and encoded, and [`plan_blocks`] says which blocks
//! a request gets (or which error), given the file's size. Reading the blocks is the caller's.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;

/// `$aws/things/`.
pub const THINGS_PREFIX: &str = "$aws/things/";
/// Smallest and largest block size (`l`).
pub const MIN_BLOCK_SIZE: u32 = 256;
pub const MAX_BLOCK_SIZE: u32 = 131_072;
/// Bytes of blocks one request is answered with at most.
pub const MAX_BYTES_PER_REQUEST: u64 = 131_072;
/// Longest client token (`c`), in bytes.
pub const MAX_CLIENT_TOKEN: usize = 64;
/// A bitmap must be shorter than this many bytes.
pub const MAX_BITMAP_BYTES: usize = 12_288;
/// Largest block count (`n`) and block offset (`o`) AWS documents.
pub const MAX_BLOCK_COUNT: u64 = 98_304;
/// Largest file id (`f`).
pub const MAX_FILE_ID: u64 = 255;

/// Payload encoding, the topic's last level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cbor,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cbor => "cbor",
        }
    }
}

/// The operation level of a stream topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Requests, published by devices.
    Describe,
    Get,
    /// Answers, published by the server.
    Description,
    Data,
    Rejected,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Describe => "describe",
            Action::Get => "get",
            Action::Description => "description",
            Action::Data => "data",
            Action::Rejected => "rejected",
        }
    }

    /// Whether a device may publish it.
    pub fn is_request(self) -> bool {
        matches!(self, Action::Describe | Action::Get)
    }
}

/// A parsed stream topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTopic<'a> {
    pub thing: &'a str,
    pub stream_id: &'a str,
    pub action: Action,
    pub format: Format,
}

/// Why a topic under `$aws/things/{thing}/streams/` is not a stream topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream topic: expected $aws/things/{{thing}}/streams/{{streamId}}/{{describe|get}}/{{json|cbor}}")]
pub struct TopicError {
    /// The format, when the last level names one: the error can then be answered on `rejected`.
    pub format: Option<Format>,
}

/// True when `topic` is under `$aws/things/{thing}/streams/` (every such publish is the stream
/// service's, never routed).
pub fn is_stream_topic(topic: &str) -> bool {
    topic
        .strip_prefix(THINGS_PREFIX)
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, r)| r.starts_with("streams/"))
}

/// Parses a stream topic; `None` when it is not under `$aws/things/{thing}/streams/`.
pub fn parse_topic(topic: &str) -> Option<Result<StreamTopic<'_>, TopicError>> {
    if !is_stream_topic(topic) {
        return None;
    }
    let rest = topic.strip_prefix(THINGS_PREFIX)?;
    let levels: Vec<&str> = rest.split('/').collect();
    let format = match levels.last() {
        Some(&"json") => Some(Format::Json),
        Some(&"cbor") => Some(Format::Cbor),
        _ => None,
    };
    let err = TopicError { format };
    let &[thing, "streams", stream_id, action, _] = levels.as_slice() else {
        return Some(Err(err));
    };
    let action = match action {
        "describe" => Action::Describe,
        "get" => Action::Get,
        "description" => Action::Description,
        "data" => Action::Data,
        "rejected" => Action::Rejected,
        _ => return Some(Err(err)),
    };
    match (format, thing.is_empty() || stream_id.is_empty()) {
        (Some(format), false) => Some(Ok(StreamTopic {
            thing,
            stream_id,
            action,
            format,
        })),
        _ => Some(Err(err)),
    }
}

/// `$aws/things/{thing}/streams/{streamId}/{action}/{format}`.
pub fn topic(thing: &str, stream_id: &str, action: Action, format: Format) -> String {
    format!(
        "{THINGS_PREFIX}{thing}/streams/{stream_id}/{}/{}",
        action.as_str(),
        format.as_str()
    )
}

/// AWS's error codes (`o` of a rejected answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidTopic,
    InvalidJson,
    InvalidCbor,
    InvalidRequest,
    Unauthorized,
    BlockSizeOutOfBounds,
    OffsetOutOfBounds,
    BlockCountLimitExceeded,
    BlockBitmapLimitExceeded,
    ResourceNotFound,
    VersionMismatch,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidTopic => "InvalidTopic",
            ErrorCode::InvalidJson => "InvalidJson",
            ErrorCode::InvalidCbor => "InvalidCbor",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::BlockSizeOutOfBounds => "BlockSizeOutOfBounds",
            ErrorCode::OffsetOutOfBounds => "OffsetOutOfBounds",
            ErrorCode::BlockCountLimitExceeded => "BlockCountLimitExceeded",
            ErrorCode::BlockBitmapLimitExceeded => "BlockBitmapLimitExceeded",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::VersionMismatch => "VersionMismatch",
            ErrorCode::InternalError => "InternalError",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused: the code, a message, and the client token when it was valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub client_token: Option<String>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
            client_token: None,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Rejection {
        self.client_token = token;
        self
    }

    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut m = Out::default();
        m.text("o", self.code.as_str());
        m.text("m", &self.message);
        if let Some(c) = &self.client_token {
            m.text("c", c);
        }
        m.encode(format)
    }
}

/// A DescribeStream request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeRequest {
    pub client_token: Option<String>,
}

/// A GetStream request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetRequest {
    pub client_token: Option<String>,
    /// Expected stream version.
    pub version: Option<u64>,
    pub file_id: u64,
    pub block_size: u64,
    pub block_offset: u64,
    pub block_count: Option<u64>,
    pub bitmap: Option<Vec<u8>>,
}

/// One file of a DescribeStream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFile {
    pub file_id: u64,
    pub size: u64,
}

/// A DescribeStream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub client_token: Option<String>,
    pub version: u64,
    pub description: String,
    pub files: Vec<StreamFile>,
}

impl Description {
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut m = Out::default();
        if let Some(c) = &self.client_token {
            m.text("c", c);
        }
        m.int("s", self.version);
        m.text("d", &self.description);
        let files = self
            .files
            .iter()
            .map(|f| {
                let mut o = Out::default();
                o.int("f", f.file_id);
                o.int("z", f.size);
                o
            })
            .collect();
        m.0.insert("r", V::List(files));
        m.encode(format)
    }
}

/// One block of a GetStream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBlock<'a> {
    pub client_token: Option<&'a str>,
    pub file_id: u64,
    pub block_id: u64,
    pub payload: &'a [u8],
}

impl DataBlock<'_> {
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut m = Out::default();
        if let Some(c) = self.client_token {
            m.text("c", c);
        }
        m.int("f", self.file_id);
        m.int("l", self.payload.len() as u64);
        m.int("i", self.block_id);
        m.0.insert("p", V::Bytes(self.payload.to_vec()));
        m.encode(format)
    }
}

impl GetRequest {
    /// The request as a device sends it.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut m = Out::default();
        if let Some(c) = &self.client_token {
            m.text("c", c);
        }
        if let Some(s) = self.version {
            m.int("s", s);
        }
        m.int("f", self.file_id);
        m.int("l", self.block_size);
        m.int("o", self.block_offset);
        if let Some(n) = self.block_count {
            m.int("n", n);
        }
        if let Some(b) = &self.bitmap {
            match format {
                Format::Json => m.text("b", &format!("0x{}", hex_encode(b))),
                Format::Cbor => {
                    m.0.insert("b", V::Bytes(b.clone()));
                }
            }
        }
        m.encode(format)
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A received block (the device's side of [`DataBlock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBlock {
    pub client_token: Option<String>,
    pub file_id: u64,
    pub block_id: u64,
    pub payload: Vec<u8>,
}

/// Decodes a `data` message.
pub fn decode_data(format: Format, payload: &[u8]) -> Result<ReceivedBlock, Rejection> {
    let map = In::decode(format, payload)?;
    let need = |k: &str| {
        map.uint(k)?
            .ok_or_else(|| invalid(&format!("missing \"{k}\"")))
    };
    let data = match map.get("p") {
        Some(In::Bytes(b)) => b.clone(),
        Some(In::Text(t)) => base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| invalid("\"p\" is not base64"))?,
        _ => return Err(invalid("missing \"p\"")),
    };
    Ok(ReceivedBlock {
        client_token: map.token().ok().flatten(),
        file_id: need("f")?,
        block_id: need("i")?,
        payload: data,
    })
}

/// Decodes a `description` message: (version, description, files).
pub fn decode_description(format: Format, payload: &[u8]) -> Result<Description, Rejection> {
    let v: serde_json::Value = match format {
        Format::Json => serde_json::from_slice(payload)
            .map_err(|e| Rejection::new(ErrorCode::InvalidJson, e.to_string()))?,
        Format::Cbor => {
            let c: ciborium::Value = ciborium::from_reader(payload)
                .map_err(|e| Rejection::new(ErrorCode::InvalidCbor, e.to_string()))?;
            c.deserialized()
                .map_err(|e| Rejection::new(ErrorCode::InvalidCbor, e.to_string()))?
        }
    };
    let files = v["r"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|f| {
                    Some(StreamFile {
                        file_id: f["f"].as_u64()?,
                        size: f["z"].as_u64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Description {
        client_token: v["c"].as_str().map(str::to_owned),
        version: v["s"].as_u64().unwrap_or(0),
        description: v["d"].as_str().unwrap_or_default().to_owned(),
        files,
    })
}

/// Decodes a `rejected` message: (code, message).
pub fn decode_rejected(format: Format, payload: &[u8]) -> Result<(String, String), Rejection> {
    let map = In::decode(format, payload)?;
    let text = |k: &str| match map.get(k) {
        Some(In::Text(t)) => t.clone(),
        _ => String::new(),
    };
    Ok((text("o"), text("m")))
}

/// Decodes a DescribeStream request (an empty payload is a request without a token).
pub fn decode_describe(format: Format, payload: &[u8]) -> Result<DescribeRequest, Rejection> {
    if payload.is_empty() {
        return Ok(DescribeRequest::default());
    }
    let map = In::decode(format, payload)?;
    Ok(DescribeRequest {
        client_token: map.token()?,
    })
}

/// Decodes a GetStream request.
pub fn decode_get(format: Format, payload: &[u8]) -> Result<GetRequest, Rejection> {
    let map = In::decode(format, payload)?;
    let token = map.token()?;
    let with_token = |r: Rejection| r.with_token(token.clone());
    let file_id = map
        .uint("f")
        .map_err(with_token)?
        .ok_or_else(|| with_token(invalid("missing file id \"f\"")))?;
    let block_size = map
        .uint("l")
        .map_err(with_token)?
        .ok_or_else(|| with_token(invalid("missing block size \"l\"")))?;
    let bitmap = match map.get("b") {
        None | Some(In::Null) => None,
        Some(In::Bytes(b)) => Some(b.clone()),
        Some(In::Text(t)) => Some(parse_hex_bitmap(t).map_err(with_token)?),
        Some(_) => return Err(with_token(invalid("bitmap \"b\" must be a hex string"))),
    };
    Ok(GetRequest {
        version: map.uint("s").map_err(with_token)?,
        file_id,
        block_size,
        block_offset: map.uint("o").map_err(with_token)?.unwrap_or(0),
        block_count: map.uint("n").map_err(with_token)?,
        bitmap,
        client_token: token,
    })
}

fn invalid(m: &str) -> Rejection {
    Rejection::new(ErrorCode::InvalidRequest, m)
}

/// `"0x130080"` → `[0x13, 0x00, 0x80]`; an odd digit count is read with a leading zero.
fn parse_hex_bitmap(t: &str) -> Result<Vec<u8>, Rejection> {
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let padded;
    let digits = if digits.len() % 2 == 1 {
        padded = format!("0{digits}");
        padded.as_str()
    } else {
        digits
    };
    if digits.len() / 2 >= MAX_BITMAP_BYTES {
        return Err(Rejection::new(
            ErrorCode::BlockBitmapLimitExceeded,
            format!("the bitmap must be shorter than {MAX_BITMAP_BYTES} bytes"),
        ));
    }
    hex_decode(digits).ok_or_else(|| invalid("bitmap \"b\" is not hexadecimal"))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    b.chunks(2)
        .map(|pair| {
            let hi = (*pair.first()? as char).to_digit(16)?;
            let lo = (*pair.get(1)? as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Which blocks of a file of `file_size` bytes, at `req.block_size` bytes each, answer `req`
/// (block ids, ascending), after the request's own checks. `version` is the stream's; the stream
/// has the one file `0`.
pub fn plan_blocks(req: &GetRequest, file_size: u64, version: u64) -> Result<Vec<u64>, Rejection> {
    let reject =
        |code, m: String| Err(Rejection::new(code, m).with_token(req.client_token.clone()));
    if req.file_id > MAX_FILE_ID {
        return reject(
            ErrorCode::InvalidRequest,
            format!("file id must be 0 to {MAX_FILE_ID}"),
        );
    }
    if !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&req.block_size) {
        return reject(
            ErrorCode::BlockSizeOutOfBounds,
            format!("block size must be {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"),
        );
    }
    if req.version.is_some_and(|v| v != version) {
        return reject(
            ErrorCode::VersionMismatch,
            format!("the stream's version is {version}"),
        );
    }
    if req.file_id != 0 {
        return reject(
            ErrorCode::ResourceNotFound,
            format!("no file {} in this stream (its one file is 0)", req.file_id),
        );
    }
    if req.block_count.is_some_and(|n| n > MAX_BLOCK_COUNT) {
        return reject(
            ErrorCode::BlockCountLimitExceeded,
            format!("at most {MAX_BLOCK_COUNT} blocks per request"),
        );
    }
    let l = req.block_size;
    let blocks = file_size.div_ceil(l);
    if req.block_offset >= blocks {
        return reject(
            ErrorCode::OffsetOutOfBounds,
            format!(
                "block offset {} is past the last block ({blocks} blocks of {l} bytes)",
                req.block_offset
            ),
        );
    }
    // At most 128 KiB per request; `n` (0 or absent: no limit of its own) may ask for fewer.
    let cap = (MAX_BYTES_PER_REQUEST / l).max(1);
    let limit = match req.block_count {
        Some(n) if n > 0 => n.min(cap),
        _ => cap,
    };
    let Some(bitmap) = &req.bitmap else {
        let end = req.block_offset.saturating_add(limit).min(blocks);
        return Ok((req.block_offset..end).collect());
    };
    if bitmap.len() >= MAX_BITMAP_BYTES {
        return reject(
            ErrorCode::BlockBitmapLimitExceeded,
            format!("the bitmap must be shorter than {MAX_BITMAP_BYTES} bytes"),
        );
    }
    let mut out = Vec::new();
    for (byte_no, byte) in bitmap.iter().enumerate() {
        for bit in 0..8u64 {
            if byte & (1 << bit) == 0 {
                continue;
            }
            let block = req.block_offset + byte_no as u64 * 8 + bit;
            if block >= blocks {
                return reject(
                    ErrorCode::OffsetOutOfBounds,
                    format!("the bitmap asks for block {block}; the file has {blocks} blocks of {l} bytes"),
                );
            }
            if (out.len() as u64) < limit {
                out.push(block);
            }
        }
    }
    if out.is_empty() {
        return reject(
            ErrorCode::InvalidRequest,
            "the bitmap asks for no block".into(),
        );
    }
    Ok(out)
}

/// A value to encode, in either format.
enum V {
    Int(u64),
    Text(String),
    Bytes(Vec<u8>),
    List(Vec<Out>),
}

/// A map to encode (keys in a fixed order: tests and logs compare them).
#[derive(Default)]
struct Out(BTreeMap<&'static str, V>);

impl Out {
    fn int(&mut self, k: &'static str, v: u64) {
        self.0.insert(k, V::Int(v));
    }
    fn text(&mut self, k: &'static str, v: &str) {
        self.0.insert(k, V::Text(v.to_owned()));
    }

    fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => serde_json::to_vec(&self.json()).unwrap_or_default(),
            Format::Cbor => {
                let mut out = Vec::new();
                // Writing into a Vec cannot fail.
                let _ = ciborium::into_writer(&self.cbor(), &mut out);
                out
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        let map = self
            .0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    V::Int(i) => serde_json::Value::from(*i),
                    V::Text(t) => serde_json::Value::from(t.as_str()),
                    V::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
                    V::List(l) => l.iter().map(Out::json).collect(),
                };
                ((*k).to_owned(), v)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    fn cbor(&self) -> ciborium::Value {
        use ciborium::Value as C;
        C::Map(
            self.0
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        V::Int(i) => C::Integer((*i).into()),
                        V::Text(t) => C::Text(t.clone()),
                        V::Bytes(b) => C::Bytes(b.clone()),
                        V::List(l) => C::Array(l.iter().map(Out::cbor).collect()),
                    };
                    (C::Text((*k).to_owned()), v)
                })
                .collect(),
        )
    }
}

/// A decoded request value (the subset both formats share).
enum In {
    Null,
    Int(u64),
    Neg,
    Text(String),
    Bytes(Vec<u8>),
    Other,
}

struct InMap(Vec<(String, In)>);

impl In {
    fn decode(format: Format, payload: &[u8]) -> Result<InMap, Rejection> {
        match format {
            Format::Json => {
                let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                    Rejection::new(ErrorCode::InvalidJson, format!("not a JSON document: {e}"))
                })?;
                let serde_json::Value::Object(m) = v else {
                    return Err(invalid("the request must be a JSON object"));
                };
                Ok(InMap(
                    m.into_iter()
                        .map(|(k, v)| {
                            let v = match v {
                                serde_json::Value::Null => In::Null,
                                serde_json::Value::Number(n) => match n.as_u64() {
                                    Some(u) => In::Int(u),
                                    None if n.as_i64().is_some() => In::Neg,
                                    None => In::Other,
                                },
                                serde_json::Value::String(s) => In::Text(s),
                                _ => In::Other,
                            };
                            (k, v)
                        })
                        .collect(),
                ))
            }
            Format::Cbor => {
                let v: ciborium::Value = ciborium::from_reader(payload).map_err(|e| {
                    Rejection::new(ErrorCode::InvalidCbor, format!("not a CBOR document: {e}"))
                })?;
                let ciborium::Value::Map(m) = v else {
                    return Err(invalid("the request must be a CBOR map"));
                };
                Ok(InMap(
                    m.into_iter()
                        .filter_map(|(k, v)| {
                            let ciborium::Value::Text(k) = k else {
                                return None;
                            };
                            let v = match v {
                                ciborium::Value::Null => In::Null,
                                ciborium::Value::Integer(i) => match u64::try_from(i) {
                                    Ok(u) => In::Int(u),
                                    Err(_) => In::Neg,
                                },
                                ciborium::Value::Text(s) => In::Text(s),
                                ciborium::Value::Bytes(b) => In::Bytes(b),
                                _ => In::Other,
                            };
                            Some((k, v))
                        })
                        .collect(),
                ))
            }
        }
    }
}

impl InMap {
    fn get(&self, k: &str) -> Option<&In> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    fn uint(&self, k: &str) -> Result<Option<u64>, Rejection> {
        match self.get(k) {
            None | Some(In::Null) => Ok(None),
            Some(In::Int(u)) => Ok(Some(*u)),
            Some(In::Neg) if k == "o" => Err(Rejection::new(
                ErrorCode::OffsetOutOfBounds,
                "the block offset \"o\" must not be negative",
            )),
            Some(In::Neg) if k == "l" => Err(Rejection::new(
                ErrorCode::BlockSizeOutOfBounds,
                "the block size \"l\" must not be negative",
            )),
            Some(_) => Err(invalid(&format!("\"{k}\" must be a non-negative integer"))),
        }
    }

    /// The client token `c`: a string of at most 64 bytes. A bad token is not echoed.
    fn token(&self) -> Result<Option<String>, Rejection> {
        match self.get("c") {
            None | Some(In::Null) => Ok(None),
            Some(In::Text(t)) if t.len() <= MAX_CLIENT_TOKEN => Ok(Some(t.clone())),
            Some(In::Text(_)) => Err(invalid(&format!(
                "the client token \"c\" is longer than {MAX_CLIENT_TOKEN} bytes"
            ))),
            Some(_) => Err(invalid("the client token \"c\" must be a string")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn get(o: u64, n: Option<u64>, l: u64, b: Option<Vec<u8>>) -> GetRequest {
        GetRequest {
            block_size: l,
            block_offset: o,
            block_count: n,
            bitmap: b,
            ..GetRequest::default()
        }
    }

    #[test]
    fn topics() {
        let t = parse_topic("$aws/things/dev-1/streams/abc/get/cbor").and_then(Result::ok);
        assert_eq!(
            t,
            Some(StreamTopic {
                thing: "dev-1",
                stream_id: "abc",
                action: Action::Get,
                format: Format::Cbor
            })
        );
        assert!(parse_topic("$aws/things/dev-1/shadow/get").is_none());
        assert!(parse_topic("a/b").is_none());
        let bad = parse_topic("$aws/things/d/streams/abc/put/json");
        assert_eq!(
            bad,
            Some(Err(TopicError {
                format: Some(Format::Json)
            }))
        );
        assert!(matches!(
            parse_topic("$aws/things/d/streams/abc/get/xml"),
            Some(Err(TopicError { format: None }))
        ));
        assert_eq!(
            topic("d", "s", Action::Data, Format::Json),
            "$aws/things/d/streams/s/data/json"
        );
    }

    /// The bitmap example of AWS's guide: blocks 20, 21, 24 and 43 as `o: 20, b: "0x130080"`.
    #[test]
    fn aws_bitmap_example() {
        let req = decode_get(
            Format::Json,
            br#"{"c":"1","s":1,"l":256,"f":0,"o":20,"n":32,"b":"0x130080"}"#,
        )
        .unwrap();
        assert_eq!(req.bitmap.as_deref(), Some(&[0x13, 0x00, 0x80][..]));
        assert_eq!(
            plan_blocks(&req, 256 * 50, 1).unwrap(),
            vec![20, 21, 24, 43]
        );
        // The same with n limiting the answer to two blocks.
        let req = GetRequest {
            block_count: Some(2),
            ..req
        };
        assert_eq!(plan_blocks(&req, 256 * 50, 1).unwrap(), vec![20, 21]);
    }

    #[test]
    fn offset_count_and_the_128k_limit() {
        let size = 1_000_000;
        assert_eq!(
            plan_blocks(&get(0, Some(3), 4096, None), size, 1).unwrap(),
            vec![0, 1, 2]
        );
        // 100 blocks of 4 KiB asked: 32 (128 KiB) answered.
        assert_eq!(
            plan_blocks(&get(0, Some(100), 4096, None), size, 1)
                .unwrap()
                .len(),
            32
        );
        // The last, short block.
        let last = size.div_ceil(4096) - 1;
        assert_eq!(
            plan_blocks(&get(last, Some(5), 4096, None), size, 1).unwrap(),
            vec![last]
        );
        let e = |r: Result<Vec<u64>, Rejection>| r.unwrap_err().code;
        assert_eq!(
            e(plan_blocks(&get(last + 1, Some(1), 4096, None), size, 1)),
            ErrorCode::OffsetOutOfBounds
        );
        assert_eq!(
            e(plan_blocks(&get(0, Some(1), 255, None), size, 1)),
            ErrorCode::BlockSizeOutOfBounds
        );
        assert_eq!(
            e(plan_blocks(&get(0, Some(1), 131_073, None), size, 1)),
            ErrorCode::BlockSizeOutOfBounds
        );
        assert_eq!(
            e(plan_blocks(&get(0, Some(98_305), 4096, None), size, 1)),
            ErrorCode::BlockCountLimitExceeded
        );
        let versioned = GetRequest {
            version: Some(2),
            ..get(0, None, 4096, None)
        };
        assert_eq!(
            e(plan_blocks(&versioned, size, 1)),
            ErrorCode::VersionMismatch
        );
        let other_file = GetRequest {
            file_id: 1,
            ..get(0, None, 4096, None)
        };
        assert_eq!(
            e(plan_blocks(&other_file, size, 1)),
            ErrorCode::ResourceNotFound
        );
        assert_eq!(
            e(plan_blocks(&get(0, None, 4096, Some(vec![0])), size, 1)),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            e(plan_blocks(
                &get(last, None, 4096, Some(vec![0b10])),
                size,
                1
            )),
            ErrorCode::OffsetOutOfBounds
        );
    }

    #[test]
    fn decoding_errors() {
        let code = |f, p: &[u8]| decode_get(f, p).unwrap_err().code;
        assert_eq!(code(Format::Json, b"{"), ErrorCode::InvalidJson);
        assert_eq!(code(Format::Cbor, b"\xff\x00"), ErrorCode::InvalidCbor);
        assert_eq!(
            code(Format::Json, br#"{"l":256}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(Format::Json, br#"{"f":0,"l":256,"o":-1}"#),
            ErrorCode::OffsetOutOfBounds
        );
        assert_eq!(
            code(Format::Json, br#"{"f":0,"l":256,"b":"0xzz"}"#),
            ErrorCode::InvalidRequest
        );
        let long = format!(r#"{{"c":"{}","f":0,"l":256}}"#, "x".repeat(65));
        let r = decode_get(Format::Json, long.as_bytes()).unwrap_err();
        assert_eq!((r.code, r.client_token), (ErrorCode::InvalidRequest, None));
        let huge = format!(
            r#"{{"f":0,"l":256,"b":"{}"}}"#,
            "ff".repeat(MAX_BITMAP_BYTES)
        );
        assert_eq!(
            code(Format::Json, huge.as_bytes()),
            ErrorCode::BlockBitmapLimitExceeded
        );
    }

    #[test]
    fn device_side_round_trip() {
        for format in [Format::Json, Format::Cbor] {
            let req = GetRequest {
                client_token: Some("t".into()),
                version: Some(1),
                file_id: 0,
                block_size: 1024,
                block_offset: 2,
                block_count: Some(3),
                bitmap: Some(vec![0x05, 0x80]),
            };
            assert_eq!(decode_get(format, &req.encode(format)).unwrap(), req);
            let block = DataBlock {
                client_token: Some("t"),
                file_id: 0,
                block_id: 9,
                payload: b"xyz",
            };
            let got = decode_data(format, &block.encode(format)).unwrap();
            assert_eq!((got.block_id, got.payload.as_slice()), (9, &b"xyz"[..]));
            let d = Description {
                client_token: None,
                version: 1,
                description: "d".into(),
                files: vec![StreamFile {
                    file_id: 0,
                    size: 7,
                }],
            };
            assert_eq!(decode_description(format, &d.encode(format)).unwrap(), d);
            let r = Rejection::new(ErrorCode::OffsetOutOfBounds, "m");
            assert_eq!(
                decode_rejected(format, &r.encode(format)).unwrap(),
                ("OffsetOutOfBounds".to_owned(), "m".to_owned())
            );
        }
    }

    #[test]
    fn cbor_round_trip() {
        let mut m = Out::default();
        m.text("c", "tok");
        m.int("f", 0);
        m.int("l", 512);
        m.int("o", 1);
        m.int("n", 2);
        m.0.insert("b", V::Bytes(vec![1]));
        let req = decode_get(Format::Cbor, &m.encode(Format::Cbor)).unwrap();
        assert_eq!(req.client_token.as_deref(), Some("tok"));
        assert_eq!(
            (req.block_size, req.block_offset, req.block_count),
            (512, 1, Some(2))
        );
        assert_eq!(req.bitmap, Some(vec![1]));
        let block = DataBlock {
            client_token: Some("tok"),
            file_id: 0,
            block_id: 3,
            payload: b"abc",
        };
        let v: ciborium::Value = ciborium::from_reader(&block.encode(Format::Cbor)[..]).unwrap();
        assert!(format!("{v:?}").contains("Bytes([97, 98, 99])"));
        let j: serde_json::Value = serde_json::from_slice(&block.encode(Format::Json)).unwrap();
        assert_eq!(j["p"], "YWJj");
        assert_eq!(j["l"], 3);
        assert_eq!(j["i"], 3);
    }
}
