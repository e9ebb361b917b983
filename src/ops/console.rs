//! `GET .../vm-container/console` (`v1.console.supd`, supd's addition): the serial console of
//! the instance's VM over a websocket, raw bytes both ways, one session per VM. Only the
//! decoder lives here so far; the session is started in `ops::start`.

use super::decode::{DecodeCtx, DecodeError, check_query, upgrade};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::Instance;
use crate::ws::handshake::Accepted;
use crate::ws::protocol;

/// What a `console` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleParams {
    pub application: String,
    pub instance: Instance,
    /// `takeover=true`: close the VM's open console session (with a reason) and take its place;
    /// without it, an open session makes the request 409.
    pub takeover: bool,
    /// The websocket handshake's result, for the 101 head.
    pub accepted: Accepted,
}

impl ConsoleParams {
    /// The `console` decoder: the handshake first, then the query, as every websocket endpoint.
    pub fn decode(
        application: String,
        instance: Instance,
        query: &Query,
        req: &Request,
        ctx: &DecodeCtx<'_>,
    ) -> Result<ConsoleParams, DecodeError> {
        let accepted = upgrade(req, &[protocol::CONSOLE], ctx)?;
        check_query(query, &["site", "fields", "takeover"], ctx)?;
        let takeover = match query.single("takeover")? {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(DecodeError::BadBool {
                    name: "takeover",
                    value: v.to_string(),
                });
            }
        };
        Ok(ConsoleParams {
            application,
            instance,
            takeover,
            accepted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Method;
    use crate::ops::decode::testing::{ctx, q, request, seen, ws_headers};

    fn decode(query: &str, headers: &[(&str, &str)]) -> Result<ConsoleParams, DecodeError> {
        let req = request(Method::Get, query, headers, b"");
        ConsoleParams::decode(
            "shop".into(),
            Instance::parse("vm-1").unwrap(),
            &q(query),
            &req,
            &ctx(),
        )
    }

    #[test]
    fn console_decodes() {
        let h = ws_headers(protocol::CONSOLE);
        let p = decode("", &h).unwrap();
        assert_eq!(p.application, "shop");
        assert_eq!(p.instance, Instance::parse("vm-1").unwrap());
        assert!(!p.takeover);
        assert_eq!(p.accepted.protocol, protocol::CONSOLE);
        assert!(decode("takeover=true", &h).unwrap().takeover);
        assert!(!decode("takeover=false&site=here", &h).unwrap().takeover);
    }

    #[test]
    fn console_decode_errors() {
        let h = ws_headers(protocol::CONSOLE);
        let e = |query: &str| seen(decode(query, &h).unwrap_err());
        assert_eq!(
            e("takeover=yes"),
            (400, "takeover must be true or false (got \"yes\")".into())
        );
        assert_eq!(e("takeover=").0, 400);
        assert_eq!(e("takeover=true&takeover=true").0, 400);
        assert_eq!(e("cmd=sh"), (400, "unknown query parameter \"cmd\"".into()));
        assert_eq!(e("site=far"), (404, "unknown site \"far\"".into()));
        // The handshake comes first: another protocol is 400, a plain GET 426, whatever the query.
        let other = ws_headers(protocol::EXEC_INTERACTIVE);
        assert_eq!(seen(decode("takeover=yes", &other).unwrap_err()).0, 400);
        assert_eq!(
            seen(decode("takeover=yes", &[("host", "h")]).unwrap_err()).0,
            426
        );
    }
}
