//! A small HTTP/1.1 file server on 127.0.0.1 for the pull tests, written on std::net so that
//! it can misbehave on purpose: answer a status, redirect, or drop the connection part-way
//! through a body. It honours `Range: bytes=N-` (206 with Content-Range) and records every
//! request's path and Range header. One thread per connection, `Connection: close` always.
//! [`read_head`] reads a request's head for every test server here (this one, the registry's
//! token server, the Debian mirror).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone)]
pub enum Route {
    /// The bytes, with Range support.
    File(Vec<u8>),
    /// The bytes, but the first `times` answers stop after `after` body bytes and close.
    DropAfter {
        data: Vec<u8>,
        after: usize,
        times: usize,
    },
    /// As DropAfter, from a server that ignores Range and always sends everything.
    DropIgnoringRange {
        data: Vec<u8>,
        after: usize,
        times: usize,
    },
    /// A bare status with a short body.
    Status(u16),
    /// 302 to the location (a path on this server or a full URL).
    Redirect(String),
}

/// The head of an HTTP/1.1 request: its request line's method and target, and its headers.
pub struct Head {
    pub method: String,
    pub target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of header `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the next request's head from a connection; None when the client has closed it.
pub fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        method,
        target,
        headers,
    }))
}

/// One request: the path and the Range header, if any.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, q, s) = (routes.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (r, q) = (r.clone(), q.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &q);
                });
            }
        });
        Server {
            port,
            routes,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL of `path` (which starts with /).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.into(), route);
    }

    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    requests: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut BufReader::new(conn.try_clone()?))? else {
        return Ok(());
    };
    let (method, path) = (head.method.as_str(), head.target.clone());
    let range = head.header("range").map(str::to_string);
    requests.lock().unwrap().push(Request {
        path: path.clone(),
        range: range.clone(),
    });
    let route = {
        let mut routes = routes.lock().unwrap();
        let route = routes.get(&path).cloned();
        match &route {
            Some(Route::DropAfter { data, after, times }) if *times > 0 => {
                let next = Route::DropAfter {
                    data: data.clone(),
                    after: *after,
                    times: times - 1,
                };
                routes.insert(path.clone(), next);
            }
            Some(Route::DropIgnoringRange { data, after, times }) if *times > 0 => {
                let next = Route::DropIgnoringRange {
                    data: data.clone(),
                    after: *after,
                    times: times - 1,
                };
                routes.insert(path.clone(), next);
            }
            _ => {}
        }
        route
    };
    let mut out = conn;
    let head_only = method == "HEAD";
    match route {
        None => status(&mut out, 404),
        Some(Route::Status(code)) => status(&mut out, code),
        Some(Route::Redirect(to)) => write!(
            out,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Some(Route::File(data)) => body(&mut out, &data, range.as_deref(), None, head_only),
        Some(Route::DropAfter { data, after, times }) => {
            let cut = (times > 0).then_some(after);
            body(&mut out, &data, range.as_deref(), cut, head_only)
        }
        Some(Route::DropIgnoringRange { data, after, times }) => {
            let cut = (times > 0).then_some(after);
            body(&mut out, &data, None, cut, head_only)
        }
    }
}

fn status(out: &mut TcpStream, code: u16) -> std::io::Result<()> {
    let text = format!("status {code}\n");
    write!(
        out,
        "HTTP/1.1 {code} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

fn body(
    out: &mut TcpStream,
    data: &[u8],
    range: Option<&str>,
    cut: Option<usize>,
    head_only: bool,
) -> std::io::Result<()> {
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (code, from) = match start {
        Some(s) if s < data.len() => (206, s),
        _ => (200, 0),
    };
    let rest = &data[from..];
    let mut head = format!(
        "HTTP/1.1 {code} OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        rest.len()
    );
    if code == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            data.len() - 1,
            data.len()
        ));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if head_only {
        return Ok(());
    }
    match cut {
        Some(n) => {
            out.write_all(&rest[..n.min(rest.len())])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
        None => out.write_all(rest),
    }
}

/// An HTTP proxy on 127.0.0.1 that serves CONNECT tunnels (which is how ureq goes through a
/// proxy) and records each request line it gets.
pub struct Proxy {
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = lines.clone();
        // The thread ends with the test process; a proxy holds no state worth stopping.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = tunnel(conn, &seen);
                });
            }
        });
        Proxy { port, lines }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn tunnel(conn: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    seen.lock().unwrap().push(line.trim().to_string());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut out = conn;
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        return status(&mut out, 405);
    };
    let upstream = TcpStream::connect(target)?;
    out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut up_read, mut down_write) = (upstream.try_clone()?, out.try_clone()?);
    let pump = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut down_write);
        let _ = down_write.shutdown(std::net::Shutdown::Write);
    });
    // What the client already sent past the headers is in the reader's buffer.
    let mut upstream_write = upstream;
    let _ = std::io::copy(&mut reader, &mut upstream_write);
    let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    let _ = pump.join();
    Ok(())
}
