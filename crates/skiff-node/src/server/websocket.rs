//! RFC 6455 WebSocket framing, enough for the Kubernetes streaming protocols: the
//! handshake key, reading (unmasking, reassembling) and writing frames.

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The GUID RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted from a peer (stdin chunks and resize events are small).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A complete message (fragments joined) or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
}

/// Encodes one final frame; `mask` is for the client side (servers send unmasked).
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads messages from a peer; `Ok(None)` at a clean end of the stream.
pub struct Reader<R> {
    inner: R,
    /// A fragmented message being assembled (control frames may arrive between fragments).
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            partial: None,
        }
    }

    pub async fn next(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let mut head = [0u8; 2];
            match self.inner.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && self.partial.is_none() =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let fin = head[0] & 0x80 != 0;
            if head[0] & 0x70 != 0 {
                return Err(WsError::Protocol("reserved bits set"));
            }
            let opcode = head[0] & 0x0F;
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7F {
                126 => {
                    let mut b = [0u8; 2];
                    self.inner.read_exact(&mut b).await?;
                    u16::from_be_bytes(b) as u64
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.inner.read_exact(&mut b).await?;
                    u64::from_be_bytes(b)
                }
                n => n as u64,
            };
            let so_far = self.partial.as_ref().map_or(0, |p| p.1.len()) as u64;
            if len + so_far > MAX_MESSAGE as u64 {
                return Err(WsError::Protocol("message too large"));
            }
            let mut mask = [0u8; 4];
            if masked {
                self.inner.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; len as usize];
            self.inner.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                OP_PING => return Ok(Some(Message::Ping(payload))),
                OP_PONG => return Ok(Some(Message::Pong(payload))),
                OP_CLOSE => return Ok(Some(Message::Close(payload))),
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    if fin {
                        return Ok(Some(message(opcode, payload)));
                    }
                    self.partial = Some((opcode, payload));
                }
                OP_CONTINUATION => {
                    let Some((op, mut data)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(message(op, data)));
                    }
                    self.partial = Some((op, data));
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }
}

fn message(opcode: u8, data: Vec<u8>) -> Message {
    if opcode == OP_TEXT {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn reads_masked_fragmented_and_long_frames() {
        let mut wire = Vec::new();
        let mut first = encode_frame(OP_BINARY, b"\x00hel", Some([1, 2, 3, 4]));
        first[0] &= 0x7F; // not final
        wire.extend(first);
        wire.extend(encode_frame(OP_PING, b"p", Some([9, 9, 9, 9])));
        wire.extend(encode_frame(OP_CONTINUATION, b"lo", Some([5, 6, 7, 8])));
        let mut r = Reader::new(wire.as_slice());
        assert_eq!(
            r.next().await.expect("ping"),
            Some(Message::Ping(b"p".to_vec()))
        );
        assert_eq!(
            r.next().await.expect("msg"),
            Some(Message::Binary(b"\x00hello".to_vec()))
        );

        let mut wire = Vec::new();
        let long = vec![7u8; 70_000];
        wire.extend(encode_frame(OP_BINARY, &long, None));
        wire.extend(encode_frame(OP_CLOSE, b"", None));
        let mut r = Reader::new(wire.as_slice());
        assert_eq!(r.next().await.expect("long"), Some(Message::Binary(long)));
        assert_eq!(r.next().await.expect("close"), Some(Message::Close(vec![])));
        assert_eq!(r.next().await.expect("eof"), None);
    }

    #[tokio::test]
    async fn refuses_oversized_messages() {
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
        let mut r = Reader::new(wire.as_slice());
        assert!(matches!(r.next().await, Err(WsError::Protocol(_))));
    }
}
