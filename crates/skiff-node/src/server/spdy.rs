//! SPDY/3.1 framing (with its zlib header compression) for port-forward.
