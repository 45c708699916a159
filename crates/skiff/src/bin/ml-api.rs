//! `ml-api`: the tutorials' tiny model API, used by the workload tests and the lesson images.
//!
//! `POST /predict` `{"features": [..]}` answers `{"prediction": <sum>, "model_version": ..}`;
//! `GET /health` answers `{"status": "healthy", ..}`. The version comes from `MODEL_VERSION`
//! (the v1 and v2 images differ only in that variable), the port from `PORT` (8080).
//!
//! It shuts down the way a rolling update needs: on SIGTERM it keeps serving for
//! `DRAIN_SECONDS` (default 2) while the Service stops sending it new connections, answers
//! with `Connection: close` meanwhile, waits for requests in flight and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Largest request body accepted; a model API has no business with more.
const MAX_BODY: usize = 1 << 20;
const MAX_HEADER_LINES: usize = 100;

struct State {
    version: String,
    /// Sent as `X-Pod` so that a client can tell which replica answered.
    hostname: String,
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

fn main() {
    let version = std::env::var("MODEL_VERSION").unwrap_or_else(|_| "v1.0".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let drain = std::env::var("DRAIN_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);

    // SIGTERM is taken synchronously by the main thread: block it before any thread starts
    // so that every thread inherits the mask.
    let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ml-api: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let state = Arc::new(State {
        version,
        hostname,
        draining: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });
    println!(
        "ml-api {} listening on 0.0.0.0:{port}",
        state.version.as_str()
    );
    {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = Arc::clone(&state);
                std::thread::spawn(move || serve(conn, &state));
            }
        });
    }

    let mut sig: libc::c_int = 0;
    unsafe { libc::sigwait(&set, &mut sig) };
    println!("ml-api: signal {sig}, draining for {drain}s");
    state.draining.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(drain));
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("ml-api: bye");
    std::process::exit(0);
}

/// One connection, HTTP/1.1 with keep-alive.
fn serve(conn: TcpStream, state: &State) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = write_half;
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(msg) => {
                let _ = respond(&mut writer, 400, &error_json(&msg), true, &state.hostname);
                return;
            }
        };
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let (code, body) = route(&request, state);
        let close = request.close || state.draining.load(Ordering::SeqCst);
        let ok = respond(&mut writer, code, &body, close, &state.hostname).is_ok();
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok || close {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// `Ok(None)` when the peer closed the connection between requests.
fn read_request(r: &mut impl BufRead) -> Result<Option<Request>, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(http)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line".into());
    };
    let mut close = http == "HTTP/1.0";
    let mut length = 0usize;
    for _ in 0..MAX_HEADER_LINES {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed in the headers".into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            let mut body = vec![0; length];
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
            return Ok(Some(Request {
                method: method.to_string(),
                path: target.split('?').next().unwrap_or("").to_string(),
                body,
                close,
            }));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("malformed header {h:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length > MAX_BODY {
                return Err(format!("body over {MAX_BODY} bytes"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not supported; send Content-Length".into());
        }
    }
    Err("too many headers".into())
}

fn route(req: &Request, state: &State) -> (u16, String) {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health") => (
            200,
            serde_json::json!({"status": "healthy", "model_version": state.version}).to_string(),
        ),
        ("POST", "/predict") => match predict(&req.body) {
            Ok(sum) => (
                200,
                serde_json::json!({"prediction": sum, "model_version": state.version}).to_string(),
            ),
            Err(msg) => (400, error_json(&msg)),
        },
        (_, "/health" | "/predict") => (405, error_json("method not allowed")),
        _ => (404, error_json("not found")),
    }
}

/// The "model": the sum of the features.
fn predict(body: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let features = v
        .get("features")
        .and_then(|f| f.as_array())
        .ok_or("expected {\"features\": [numbers]}")?;
    features.iter().try_fold(0.0, |acc, f| {
        f.as_f64()
            .map(|x| acc + x)
            .ok_or_else(|| format!("feature {f} is not a number"))
    })
}

fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

fn respond(
    w: &mut impl Write,
    code: u16,
    body: &str,
    close: bool,
    pod: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\nX-Pod: {pod}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicts_the_sum_and_rejects_bad_input() {
        assert_eq!(predict(br#"{"features":[1,2.5,3]}"#), Ok(6.5));
        assert!(predict(b"{").unwrap_err().contains("invalid JSON"));
        assert!(
            predict(br#"{"feature":[1]}"#)
                .unwrap_err()
                .contains("features")
        );
        assert!(
            predict(br#"{"features":[1,"x"]}"#)
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn parses_keep_alive_requests() {
        let raw = b"POST /predict?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), &a.body[..], a.close),
            ("POST", "/predict", &b"{}"[..], false)
        );
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!((b.path.as_str(), b.close), ("/health", true));
        assert!(read_request(&mut r).unwrap().is_none());
        let mut big =
            BufReader::new(&b"POST /predict HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"[..]);
        assert!(read_request(&mut big).is_err());
    }
}
