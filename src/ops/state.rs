//! `GET .../service-instances` and `GET .../service-instances/{si}`: answered from the mirror,
//! never waiting for Docker.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::docker::mirror::Mirror;
use crate::fields::Fields;
use crate::http::query::Query;
use crate::http::router::{Endpoint, Instance, Route};
use crate::http::{Format, Response};
use crate::model::{self, Context, Guests};

use super::decode::{DecodeCtx, DecodeError, check_query};
use super::target;

/// The query parameters each state endpoint accepts.
const LIST_PARAMS: &[&str] = &["fields", "site", "keys", "count"];
const GET_PARAMS: &[&str] = &["fields", "site"];

pub(crate) struct StateCtx<'a> {
    pub mirror: &'a Mirror,
    /// What the guest-agent client knows of each VM, by launcher id.
    pub guests: &'a Guests,
    pub tenant: &'a str,
    pub host: &'a str,
}

/// What a state request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StateParams {
    pub application: String,
    pub what: What,
    /// `fields=`: the members to keep (RESTCONF syntax).
    pub fields: Option<Fields>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The list; `keys=true`: names only; `count=true`: how many.
    List { keys: bool, count: bool },
    /// One instance.
    Get { instance: Instance },
}

impl StateParams {
    /// The state endpoints' decoder: known parameters, this site, `fields`, `keys`/`count`.
    pub fn decode(
        route: &Route,
        query: &Query,
        ctx: &DecodeCtx<'_>,
    ) -> Result<StateParams, DecodeError> {
        let allowed = match route.endpoint {
            Endpoint::List => LIST_PARAMS,
            _ => GET_PARAMS,
        };
        check_query(query, allowed, ctx)?;
        let fields = match query.single("fields")? {
            Some(f) => Some(Fields::parse(f)?),
            None => None,
        };
        let what = match &route.endpoint {
            Endpoint::Get { instance } => What::Get {
                instance: instance.clone(),
            },
            _ => {
                let keys = flag(query, "keys")?;
                let count = flag(query, "count")?;
                if keys && count {
                    return Err(DecodeError::KeysAndCount);
                }
                What::List { keys, count }
            }
        };
        Ok(StateParams {
            application: route.application.clone(),
            what,
            fields,
        })
    }
}

/// Why a state request cannot be answered (its decoding passed).
#[derive(Debug)]
pub(crate) enum Error {
    /// The mirror is not current, or no such instance: the lookup errors every operation has,
    /// with their messages and statuses (`target::Error::Unavailable`, `UnknownInstance`).
    Lookup(target::Error),
    /// Serializing the model failed (a bug).
    Serialize(serde_json::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Lookup(e) => write!(f, "{e}"),
            Error::Serialize(e) => write!(f, "{e}"),
        }
    }
}

impl From<target::Error> for Error {
    fn from(e: target::Error) -> Error {
        Error::Lookup(e)
    }
}

impl std::error::Error for Error {}

/// The answer to a decoded state request, from the mirror.
pub(crate) fn answer(
    p: &StateParams,
    format: Format,
    ctx: &StateCtx<'_>,
) -> Result<Response, Error> {
    target::available(ctx.mirror)?;
    let mctx = Context {
        tenant: ctx.tenant,
        host: ctx.host,
    };
    let counters = |id: &str| ctx.mirror.counters(id);
    match &p.what {
        What::List { keys, count } => {
            let instances = model::service_instances(
                &p.application,
                ctx.mirror.records(),
                &counters,
                ctx.guests,
                &mctx,
            );
            if *count {
                return Ok(Response::serialized(
                    200,
                    &json!({"count": instances.len()}),
                    format,
                ));
            }
            if *keys {
                let names: Vec<Value> = instances.iter().map(|i| json!({"name": i.name})).collect();
                return Ok(Response::serialized(200, &names, format));
            }
            match &p.fields {
                None => Ok(Response::serialized(200, &instances, format)),
                Some(f) => {
                    let selected: Vec<Value> = instances
                        .iter()
                        .map(|i| serde_json::to_value(i).map(|v| f.apply(&v)))
                        .collect::<Result<_, _>>()
                        .map_err(Error::Serialize)?;
                    Ok(Response::serialized(200, &selected, format))
                }
            }
        }
        What::Get { instance } => {
            let name = instance.to_string();
            let si = model::service_instance(
                &p.application,
                &name,
                ctx.mirror.records(),
                &counters,
                ctx.guests,
                &mctx,
            )
            .ok_or_else(|| target::Error::UnknownInstance {
                application: p.application.clone(),
                instance: name,
            })?;
            match &p.fields {
                None => Ok(Response::serialized(200, &si, format)),
                Some(f) => {
                    let v = serde_json::to_value(&si).map_err(Error::Serialize)?;
                    Ok(Response::serialized(200, &f.apply(&v), format))
                }
            }
        }
    }
}

/// How many state answers are kept, and how many bytes of them at most.
const CACHE_ENTRIES: usize = 32;
const CACHE_BYTES: usize = 4 << 20;

/// Recent state answers, reused while the mirror's generation stays the same.
///
/// Dashboards and scripts poll the same few URLs; between two changes of the mirror each of
/// them has one answer, so it is built and serialized once (hundreds of microseconds for an
/// application of 100 instances) and then only copied. The key is the request target as sent
/// and the format: tenant, host and site are fixed for the process, and authorization is
/// checked before the cache is asked.
#[derive(Default)]
pub(crate) struct Cache {
    generation: u64,
    entries: VecDeque<(String, String, Format, Response)>,
    bytes: usize,
}

impl Cache {
    pub(crate) fn get(
        &mut self,
        generation: u64,
        path: &str,
        query: &str,
        format: Format,
    ) -> Option<Response> {
        if generation != self.generation {
            self.clear(generation);
            return None;
        }
        self.entries
            .iter()
            .find(|(p, q, f, _)| p == path && q == query && *f == format)
            .map(|(_, _, _, r)| r.clone())
    }

    /// Remember a successful answer computed at `generation`.
    pub(crate) fn put(
        &mut self,
        generation: u64,
        path: &str,
        query: &str,
        format: Format,
        resp: &Response,
    ) {
        if resp.status != 200 || resp.body.len() > CACHE_BYTES / 4 {
            return;
        }
        if generation != self.generation {
            self.clear(generation);
        }
        while self.entries.len() >= CACHE_ENTRIES || self.bytes + resp.body.len() > CACHE_BYTES {
            let Some((_, _, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.body.len();
        }
        self.bytes += resp.body.len();
        self.entries
            .push_back((path.to_string(), query.to_string(), format, resp.clone()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self, generation: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.generation = generation;
    }
}

fn flag(query: &Query, name: &'static str) -> Result<bool, DecodeError> {
    match query.single(name)? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(DecodeError::NotTrue {
            name,
            value: v.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Response {
        Response::bytes(200, "application/json", vec![b'x'; n])
    }

    #[test]
    fn cache_answers_only_the_same_request_at_the_same_generation() {
        let mut c = Cache::default();
        let p = "/v1/state/applications/shop/service-instances";
        assert!(c.get(1, p, "", Format::Json).is_none());
        c.put(1, p, "", Format::Json, &body(10));
        assert_eq!(c.get(1, p, "", Format::Json).unwrap().body.len(), 10);
        assert!(
            c.get(1, p, "", Format::Yaml).is_none(),
            "format is part of the key"
        );
        assert!(
            c.get(1, p, "keys=true", Format::Json).is_none(),
            "so is the query"
        );
        assert!(
            c.get(1, "/v1/x", "", Format::Json).is_none(),
            "and the path"
        );
        assert!(
            c.get(2, p, "", Format::Json).is_none(),
            "a new generation forgets"
        );
        assert!(c.is_empty());
        assert!(
            c.get(1, p, "", Format::Json).is_none(),
            "and never goes back"
        );
    }

    #[test]
    fn cache_keeps_only_successes_and_stays_bounded() {
        let mut c = Cache::default();
        c.put(
            1,
            "/a",
            "",
            Format::Json,
            &Response::bytes(404, "x", vec![1]),
        );
        assert!(c.is_empty(), "errors are not kept");
        c.put(1, "/big", "", Format::Json, &body(CACHE_BYTES));
        assert!(c.is_empty(), "an answer too large is not kept");
        for i in 0..(CACHE_ENTRIES + 5) {
            c.put(1, &format!("/p{i}"), "", Format::Json, &body(1));
        }
        assert_eq!(c.len(), CACHE_ENTRIES);
        assert!(
            c.get(1, "/p0", "", Format::Json).is_none(),
            "oldest went first"
        );
        assert!(c.get(1, "/p36", "", Format::Json).is_some());
        for i in 0..8 {
            c.put(
                1,
                &format!("/q{i}"),
                "",
                Format::Json,
                &body(CACHE_BYTES / 4),
            );
        }
        assert!(c.bytes <= CACHE_BYTES);
        assert!(c.len() <= 4);
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::http::router::route;
    use crate::ops::decode::testing::{ctx, q, seen};

    const LIST: &str = "/v1/state/applications/shop/service-instances";

    fn decode(path: &str, query: &str) -> Result<StateParams, DecodeError> {
        StateParams::decode(&route(path).unwrap(), &q(query), &ctx())
    }

    #[test]
    fn list_and_get_decode() {
        let p = decode(LIST, "").unwrap();
        assert_eq!(p.application, "shop");
        assert_eq!(
            p.what,
            What::List {
                keys: false,
                count: false
            }
        );
        assert!(p.fields.is_none());
        let p = decode(LIST, "keys=true&site=here&fields=name").unwrap();
        assert_eq!(
            p.what,
            What::List {
                keys: true,
                count: false
            }
        );
        assert!(p.fields.is_some());
        let p = decode(LIST, "count=true&keys=false").unwrap();
        assert_eq!(
            p.what,
            What::List {
                keys: false,
                count: true
            }
        );
        let p = decode(&format!("{LIST}/web-2"), "fields=name").unwrap();
        assert_eq!(
            p.what,
            What::Get {
                instance: Instance::parse("web-2").unwrap()
            }
        );
    }

    #[test]
    fn state_decode_errors() {
        let e = |path: &str, query: &str| seen(decode(path, query).unwrap_err());
        assert_eq!(
            e(LIST, "keys=true&count=true"),
            (400, "keys and count cannot be combined".into())
        );
        assert_eq!(
            e(LIST, "keys=yes"),
            (400, "keys must be \"true\" (got \"yes\")".into())
        );
        assert_eq!(
            e(LIST, "count=1"),
            (400, "count must be \"true\" (got \"1\")".into())
        );
        assert_eq!(
            e(&format!("{LIST}/web-2"), "keys=true"),
            (400, "unknown query parameter \"keys\"".into())
        );
        assert_eq!(e(LIST, "site=far"), (404, "unknown site \"far\"".into()));
        let (status, _) = e(LIST, "fields=a(");
        assert_eq!(status, 400);
        let err = crate::http::ApiError::from(decode(LIST, "fields=a(").unwrap_err());
        assert_eq!(err.info["parameter"], "fields");
        assert_eq!(e(LIST, "keys=true&keys=true").0, 400);
    }

    #[test]
    fn state_errors_keep_their_status_and_message() {
        // The lookup errors are the operations' (`target::Error`): one message, one status.
        let e = crate::http::ApiError::from(Error::from(target::Error::Unavailable(
            "docker: refused".into(),
        )));
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "runtime unavailable: docker: refused")
        );
        let e = crate::http::ApiError::from(Error::from(target::Error::UnknownInstance {
            application: "shop".into(),
            instance: "web-9".into(),
        }));
        assert_eq!(e.status, 404);
        assert_eq!(
            e.message,
            "no service instance \"web-9\" of application \"shop\" on this host"
        );
        assert_eq!(e.info["application-name"], "shop");
        assert_eq!(e.info["service-instance-name"], "web-9");
    }
}
