//! Raw HTTP/1.1 over any stream (the operators' HTTP API of `carbon agent`
//! and of `cluster-facade`'s `Cluster`), for tests that must see exactly what a
//! member sends (status, headers, body bytes) and send what no client
//! library would (trickled heads, lying lengths).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Long enough for a loaded 2-core machine; a wait, never a measure.
pub const LONG: Duration = Duration::from_secs(30);

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The head, status line and headers, as text.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; panics (with the answer) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts the status and that the body is `{"error": "<non-empty>"}`
    /// with a JSON content type; returns the message.
    pub fn assert_json_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type").is_some_and(|t| t.starts_with("application/json")),
            "not JSON: {self:?}"
        );
        let message = self.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "no error message: {self:?}");
        message
    }
}

/// Sends one request (keeping the connection open) and reads its answer,
/// whose body has a Content-Length.
pub async fn request<S>(stream: &mut S, method: &str, path: &str, body: &[u8]) -> std::io::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = format!("{method} {path} HTTP/1.1\r\nHost: member\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    read_answer(stream).await
}

/// Reads an answer's head, then its body (Content-Length, or to the end).
pub async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Answer> {
    let head = tokio::time::timeout(LONG, read_head(stream)).await.map_err(|_| timed_out("head"))??;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut answer = Answer { status, head, body: Vec::new() };
    match answer.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(len) => {
            answer.body = vec![0; len];
            tokio::time::timeout(LONG, stream.read_exact(&mut answer.body))
                .await
                .map_err(|_| timed_out("body"))??;
        }
        None => {
            tokio::time::timeout(LONG, stream.read_to_end(&mut answer.body))
                .await
                .map_err(|_| timed_out("body"))??;
        }
    }
    Ok(answer)
}

/// The head of an answer, up to the blank line.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The next line of a chunked body that carries newline-delimited JSON
/// (chunks need not end at lines).
#[derive(Debug, Default)]
pub struct ChunkedLines {
    pending: Vec<u8>,
}

impl ChunkedLines {
    /// Nothing read yet.
    pub fn new() -> Self {
        ChunkedLines { pending: Vec::new() }
    }

    /// The next line as JSON, or `None` at the end of the body.
    pub async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Option<serde_json::Value>> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                let value = serde_json::from_slice(&line).map_err(|e| {
                    std::io::Error::other(format!("line {:?}: {e}", String::from_utf8_lossy(&line)))
                })?;
                return Ok(Some(value));
            }
            let size_line =
                tokio::time::timeout(LONG, read_line(stream)).await.map_err(|_| timed_out("chunk"))??;
            let size = usize::from_str_radix(size_line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await?;
            if size == 0 {
                return Ok(None);
            }
            self.pending.extend_from_slice(&chunk[..size]);
        }
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(stream.read_u8().await?);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// True once the peer closed `stream` (end of file or a reset), reading
/// and dropping whatever it sent before; waits at most [`LONG`].
pub async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut sink = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(LONG, until_closed).await.is_ok()
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no {what} within {LONG:?}"))
}
