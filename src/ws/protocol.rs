//! The supd websocket subprotocols: names, the client frames of `v1.exec-interactive.supd`,
//! and the close reasons supd sends.

use std::fmt;

use serde::Deserialize;

pub const EXEC_INTERACTIVE: &str = "v1.exec-interactive.supd";
pub const CONNECT: &str = "v1.connect.supd";
pub const TCP_CONNECT: &str = "v1.tcp-connect.supd";
/// supd's addition: raw bytes both ways with a VM's serial console.
pub const CONSOLE: &str = "v1.console.supd";

/// Client frame types of `v1.exec-interactive.supd`.
pub const STDIN: u8 = 0x10;
pub const RESIZE: u8 = 0x11;
/// supd's addition: end of standard input (the PTY gets EOF, a pipe is closed).
pub const CLOSE_STDIN: u8 = 0x12;

/// A resize frame is a tiny JSON object; anything longer is not one.
pub const MAX_RESIZE_JSON: usize = 256;
/// Terminal sizes outside 1..=MAX_TERMINAL_SIDE are refused.
pub const MAX_TERMINAL_SIDE: u16 = 4096;

/// The close code for a client frame that breaks the protocol ("unsupported data").
pub const CLOSE_UNSUPPORTED: u16 = 1003;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    Stdin(&'a [u8]),
    Resize { rows: u16, cols: u16 },
    CloseStdin,
}

/// Every error is answered by closing with `CLOSE_UNSUPPORTED` and the Display as reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Empty,
    UnknownType(u8),
    BadResize(String),
    TrailingData,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("empty frame"),
            Error::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            Error::BadResize(why) => write!(f, "bad resize frame: {why}"),
            Error::TrailingData => f.write_str("trailing data after close-stdin"),
        }
    }
}

impl std::error::Error for Error {}

/// Unknown keys are ignored so that a client sending more (pixel sizes, say) keeps working;
/// `h` and `w` are required, once each.
#[derive(Deserialize)]
struct Size {
    h: u64,
    w: u64,
}

pub fn parse_client_frame(data: &[u8]) -> Result<ClientFrame<'_>> {
    let (&kind, rest) = data.split_first().ok_or(Error::Empty)?;
    match kind {
        STDIN => Ok(ClientFrame::Stdin(rest)),
        RESIZE => parse_resize(rest),
        CLOSE_STDIN if rest.is_empty() => Ok(ClientFrame::CloseStdin),
        CLOSE_STDIN => Err(Error::TrailingData),
        other => Err(Error::UnknownType(other)),
    }
}

fn parse_resize(json: &[u8]) -> Result<ClientFrame<'static>> {
    if json.len() > MAX_RESIZE_JSON {
        return Err(Error::BadResize(format!(
            "longer than {MAX_RESIZE_JSON} bytes"
        )));
    }
    // serde would take a struct from an array too; the protocol says object.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::BadResize("not a JSON object".into()));
    }
    // serde_json's message names the offending key or position, but may quote the input.
    let size: Size =
        serde_json::from_slice(json).map_err(|e| Error::BadResize(cut(e.to_string(), 80)))?;
    let side = |name: &str, v: u64| {
        u16::try_from(v)
            .ok()
            .filter(|v| (1..=MAX_TERMINAL_SIDE).contains(v))
            .ok_or_else(|| Error::BadResize(format!("{name} must be 1..={MAX_TERMINAL_SIDE}")))
    };
    Ok(ClientFrame::Resize {
        rows: side("h", size.h)?,
        cols: side("w", size.w)?,
    })
}

fn cut(mut s: String, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// The close reason supd sends when a command exits normally.
pub fn exit_reason_code(code: i32) -> String {
    format!("{{\"exit-code\":{code}}}")
}

/// The close reason supd sends when a command is killed by a signal.
pub fn exit_reason_signal(sig: i32) -> String {
    format!("{{\"signal\":{sig}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_frames() {
        assert_eq!(
            parse_client_frame(b"\x10ls\n"),
            Ok(ClientFrame::Stdin(b"ls\n"))
        );
        assert_eq!(parse_client_frame(b"\x10"), Ok(ClientFrame::Stdin(b"")));
        assert_eq!(
            parse_client_frame(b"\x10\x11\x12\xff"),
            Ok(ClientFrame::Stdin(b"\x11\x12\xff"))
        );
    }

    #[test]
    fn resize_frames() {
        assert_eq!(
            parse_client_frame(br#"{"h":24,"w":80}"#.as_slice()).unwrap_err(),
            Error::UnknownType(b'{')
        );
        let ok = |s: &str| {
            parse_client_frame(&[&[RESIZE], s.as_bytes()].concat()).map(|f| match f {
                ClientFrame::Resize { rows, cols } => (rows, cols),
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(ok(r#"{"h":24,"w":80}"#), Ok((24, 80)));
        assert_eq!(ok(r#" { "w" : 4096 , "h" : 1 } "#), Ok((1, 4096)));
        assert_eq!(ok(r#"{"h":50,"w":200,"px":1}"#), Ok((50, 200)));
        for bad in [
            "",
            "{}",
            r#"{"h":24}"#,
            r#"{"w":80}"#,
            r#"{"h":0,"w":80}"#,
            r#"{"h":24,"w":4097}"#,
            r#"{"h":-1,"w":80}"#,
            r#"{"h":24.5,"w":80}"#,
            r#"{"h":"24","w":80}"#,
            r#"{"h":24,"w":80,"h":25}"#,
            r#"{"h":65560,"w":80}"#,
            r#"{"h":99999999999999999999999,"w":80}"#,
            r#"[24,80]"#,
            r#"{"h":24,"w":80} x"#,
            "\u{0}",
        ] {
            assert!(matches!(ok(bad), Err(Error::BadResize(_))), "{bad:?}");
        }
        let long = format!(r#"{{"h":24,"w":80{}}}"#, " ".repeat(MAX_RESIZE_JSON));
        assert!(matches!(ok(&long), Err(Error::BadResize(m)) if m.contains("longer")));
    }

    #[test]
    fn close_stdin_and_errors() {
        assert_eq!(parse_client_frame(b"\x12"), Ok(ClientFrame::CloseStdin));
        assert_eq!(parse_client_frame(b"\x12x"), Err(Error::TrailingData));
        assert_eq!(parse_client_frame(b""), Err(Error::Empty));
        assert_eq!(parse_client_frame(b"\x00abc"), Err(Error::UnknownType(0)));
        assert_eq!(
            Error::UnknownType(0x13).to_string(),
            "unknown frame type 0x13"
        );
    }

    #[test]
    fn error_messages_fit_a_close_reason() {
        let quoted = format!("\x11{{\"h\":\"{}\",\"w\":1}}", "ü".repeat(60));
        let inputs: [&[u8]; 5] = [
            b"\x11{\"h\":1e400,\"w\":80}",
            b"\x11{\"hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\":1}",
            b"\x11\xff\xfe",
            b"\x11{\"h\":1,\"w\":99999}",
            quoted.as_bytes(),
        ];
        for input in inputs {
            let e = parse_client_frame(input).unwrap_err();
            assert!(e.to_string().len() <= 123, "{e}");
        }
    }

    #[test]
    fn arbitrary_bytes_do_not_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let mut data = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.push(seed as u8);
            }
            for kind in [STDIN, RESIZE, CLOSE_STDIN, 0x13] {
                if let Some(b) = data.first_mut() {
                    *b = kind;
                }
                let _ = parse_client_frame(&data);
            }
        }
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(exit_reason_code(0), r#"{"exit-code":0}"#);
        assert_eq!(exit_reason_code(-1), r#"{"exit-code":-1}"#);
        assert_eq!(exit_reason_signal(9), r#"{"signal":9}"#);
        let v: serde_json::Value = serde_json::from_str(&exit_reason_code(127)).unwrap();
        assert_eq!(v["exit-code"], 127);
    }
}
