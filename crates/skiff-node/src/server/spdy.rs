//! SPDY/3.1 framing as Kubernetes' port-forward (and the SPDY fallback of exec) uses it:
//! control and data frames, and name/value header blocks compressed with zlib over the
//! SPDY/3 dictionary, one compression context per direction for the whole connection.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const VERSION: u16 = 3;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// Largest frame payload accepted (the length field is 24 bits; refuse absurd sizes early).
pub const MAX_FRAME: usize = 1 << 24;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header names of the SPDY/3 dictionary, each stored as a 32-bit length and the name.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: status codes, reason phrases, dates and common values, as is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The zlib preset dictionary of SPDY/3 header blocks (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(m: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(m.into())
}

/// Name/value pairs of a header block (names lower case, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: nothing to act on here.
    Other(u16),
}

impl Frame {
    /// The first value of header `name` in a SYN_STREAM / SYN_REPLY / HEADERS frame.
    pub fn header(headers: &Headers, name: &str) -> Option<String> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default().to_string())
    }
}

/// Reads frames, inflating header blocks with the connection's receive context.
pub struct FrameReader<R> {
    inner: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(protocol("frame too large"));
        }
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7F, head[1]]);
        if version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |i: usize| -> Result<u32, SpdyError> {
            payload
                .get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| protocol(format!("control frame {kind} too short")))
        };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                let stream_id = word(0)? & 0x7FFF_FFFF;
                let block = payload
                    .get(10..)
                    .ok_or_else(|| protocol("SYN_STREAM too short"))?;
                let headers = self.headers(block)?;
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY => {
                let stream_id = word(0)? & 0x7FFF_FFFF;
                let headers = self.headers(&payload[4..])?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            }
            TYPE_HEADERS => {
                let stream_id = word(0)? & 0x7FFF_FFFF;
                let headers = self.headers(&payload[4..])?;
                Frame::Headers { stream_id, headers }
            }
            TYPE_RST_STREAM => Frame::RstStream {
                stream_id: word(0)? & 0x7FFF_FFFF,
                status: word(4)?,
            },
            TYPE_PING => Frame::Ping(word(0)?),
            TYPE_GOAWAY => Frame::GoAway {
                last_stream_id: word(0)? & 0x7FFF_FFFF,
                status: word(4).unwrap_or(0),
            },
            other => Frame::Other(other),
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = inflate(&mut self.inflate, block)?;
        parse_header_block(&raw)
    }
}

/// Inflates one header block of the connection's zlib stream, supplying the dictionary
/// when the stream asks for it (the first block does).
fn inflate(z: &mut Decompress, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::with_capacity(input.len() * 4 + 256);
    loop {
        if out.capacity() - out.len() < 256 {
            out.reserve(out.capacity().max(1024));
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(protocol("header block too large"));
        }
        let (before_in, before_out) = (z.total_in(), out.len());
        let result = z.decompress_vec(input, &mut out, FlushDecompress::Sync);
        let consumed = (z.total_in() - before_in) as usize;
        input = &input[consumed..];
        let stalled = consumed == 0 && out.len() == before_out;
        match result {
            Ok(Status::Ok | Status::BufError) if input.is_empty() => {
                // All input taken; more output may still be pending if the buffer was full.
                if out.capacity() > out.len() {
                    return Ok(out);
                }
            }
            Ok(Status::StreamEnd) => return Ok(out),
            Ok(_) if stalled && out.capacity() > out.len() => {
                return Err(protocol("header block does not inflate"));
            }
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                z.set_dictionary(dictionary())
                    .map_err(|e| protocol(format!("header dictionary: {e}")))?;
            }
            Err(e) => return Err(protocol(format!("header block: {e}"))),
        }
    }
}

/// Parses a decompressed header block: a count, then length-prefixed names and values.
pub fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut pos = 0usize;
    let word = |pos: &mut usize| -> Result<usize, SpdyError> {
        let b = raw
            .get(*pos..*pos + 4)
            .ok_or_else(|| protocol("truncated header block"))?;
        *pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(&mut pos)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let string = |pos: &mut usize| -> Result<String, SpdyError> {
            let n = word(pos)?;
            let b = raw
                .get(*pos..*pos + n)
                .ok_or_else(|| protocol("truncated header block"))?;
            *pos += n;
            Ok(String::from_utf8_lossy(b).into_owned())
        };
        let name = string(&mut pos)?.to_ascii_lowercase();
        let value = string(&mut pos)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes frames, deflating header blocks with the connection's send context.
pub struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting the dictionary of a fresh stream cannot fail.
        let _ = deflate.set_dictionary(dictionary());
        FrameWriter { deflate }
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            // A sync flush per block; an error here is impossible with valid state.
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.capacity() > out.len() {
                return out;
            }
        }
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + payload.len());
        f.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        f
    }

    pub fn syn_reply(&mut self, stream_id: u32, flags: u8, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut p = (stream_id & 0x7FFF_FFFF).to_be_bytes().to_vec();
        p.extend(self.header_block(headers));
        Self::control(TYPE_SYN_REPLY, flags, &p)
    }

    /// A SYN_STREAM (used by tests playing the client).
    pub fn syn_stream(&mut self, stream_id: u32, flags: u8, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut p = (stream_id & 0x7FFF_FFFF).to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend(self.header_block(headers));
        Self::control(TYPE_SYN_STREAM, flags, &p)
    }

    pub fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
        let mut p = (stream_id & 0x7FFF_FFFF).to_be_bytes().to_vec();
        p.extend_from_slice(&status.to_be_bytes());
        Self::control(TYPE_RST_STREAM, 0, &p)
    }

    pub fn ping(id: u32) -> Vec<u8> {
        Self::control(TYPE_PING, 0, &id.to_be_bytes())
    }

    pub fn goaway(last_stream_id: u32) -> Vec<u8> {
        let mut p = (last_stream_id & 0x7FFF_FFFF).to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        Self::control(TYPE_GOAWAY, 0, &p)
    }

    /// A data frame; callers keep `data` under 16 MiB (they send 32 KiB chunks).
    pub fn data(stream_id: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&(stream_id & 0x7FFF_FFFF).to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(d)),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    #[tokio::test]
    async fn frames_round_trip_through_a_shared_compression_context() {
        let mut w = FrameWriter::new();
        let mut wire = Vec::new();
        wire.extend(w.syn_stream(1, 0, &[("streamType", "error"), ("port", "80")]));
        wire.extend(w.syn_stream(3, FLAG_FIN, &[("streamtype", "data"), ("port", "80")]));
        wire.extend(w.syn_reply(1, 0, &[]));
        wire.extend(FrameWriter::data(3, FLAG_FIN, b"payload"));
        wire.extend(FrameWriter::ping(7));
        wire.extend(FrameWriter::rst_stream(3, RST_CANCEL));
        wire.extend(FrameWriter::goaway(3));
        let mut r = FrameReader::new(wire.as_slice());
        let Some(Frame::SynStream {
            stream_id: 1,
            headers,
            ..
        }) = r.next().await.expect("frame")
        else {
            panic!("first frame");
        };
        assert_eq!(
            Frame::header(&headers, "streamtype").as_deref(),
            Some("error")
        );
        let Some(Frame::SynStream {
            stream_id: 3,
            flags: FLAG_FIN,
            headers,
        }) = r.next().await.expect("frame")
        else {
            panic!("second frame");
        };
        assert_eq!(Frame::header(&headers, "port").as_deref(), Some("80"));
        assert_eq!(
            r.next().await.expect("frame"),
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![]
            })
        );
        assert_eq!(
            r.next().await.expect("frame"),
            Some(Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"payload".to_vec()
            })
        );
        assert_eq!(r.next().await.expect("frame"), Some(Frame::Ping(7)));
        assert_eq!(
            r.next().await.expect("frame"),
            Some(Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL
            })
        );
        assert_eq!(
            r.next().await.expect("frame"),
            Some(Frame::GoAway {
                last_stream_id: 3,
                status: 0
            })
        );
        assert_eq!(r.next().await.expect("eof"), None);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut wire =
            FrameWriter::control(TYPE_SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        wire.extend(FrameWriter::control(TYPE_PING, 0, &[1]));
        let mut r = FrameReader::new(wire.as_slice());
        assert!(r.next().await.is_err());
        let short = FrameWriter::control(TYPE_PING, 0, &[1]);
        let mut r = FrameReader::new(short.as_slice());
        assert!(r.next().await.is_err());
    }
}
