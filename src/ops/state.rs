//! `GET .../service-instances` and `GET .../service-instances/{si}`: answered from the mirror,
//! never waiting for Docker.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::docker::mirror::Mirror;
use crate::fields::Fields;
use crate::http::query::Query;
use crate::http::router::{Endpoint, Route};
use crate::http::{ApiError, Format, Response};
use crate::model::{self, Context};

/// The query parameters each state endpoint accepts.
const LIST_PARAMS: &[&str] = &["fields", "site", "keys", "count"];
const GET_PARAMS: &[&str] = &["fields", "site"];

pub struct StateCtx<'a> {
    pub mirror: &'a Mirror,
    pub tenant: &'a str,
    pub host: &'a str,
    pub site: &'a str,
}

pub fn handle(
    route: &Route,
    query: &Query,
    format: Format,
    ctx: &StateCtx<'_>,
) -> Result<Response, ApiError> {
    let allowed = match route.endpoint {
        Endpoint::List => LIST_PARAMS,
        _ => GET_PARAMS,
    };
    check_params(query, allowed)?;
    check_site(query, ctx.site)?;
    let fields = match query.single("fields")? {
        Some(f) => Some(Fields::parse(f)?),
        None => None,
    };
    if let Err(why) = ctx.mirror.available() {
        return Err(ApiError::new(503, runtime_unavailable(why)));
    }
    let mctx = Context {
        tenant: ctx.tenant,
        host: ctx.host,
    };
    let counters = |id: &str| ctx.mirror.counters(id);
    match &route.endpoint {
        Endpoint::List => {
            let keys = flag(query, "keys")?;
            let count = flag(query, "count")?;
            if keys && count {
                return Err(ApiError::bad_request("keys and count cannot be combined"));
            }
            let instances = model::service_instances(
                &route.application,
                ctx.mirror.records(),
                &counters,
                &mctx,
            );
            if count {
                return Ok(Response::serialized(
                    200,
                    &json!({"count": instances.len()}),
                    format,
                ));
            }
            if keys {
                let names: Vec<Value> = instances.iter().map(|i| json!({"name": i.name})).collect();
                return Ok(Response::serialized(200, &names, format));
            }
            match fields {
                None => Ok(Response::serialized(200, &instances, format)),
                Some(f) => {
                    let selected: Vec<Value> = instances
                        .iter()
                        .map(|i| serde_json::to_value(i).map(|v| f.apply(&v)))
                        .collect::<Result<_, _>>()
                        .map_err(|e| ApiError::new(500, e.to_string()))?;
                    Ok(Response::serialized(200, &selected, format))
                }
            }
        }
        Endpoint::Get { instance } => {
            let name = instance.to_string();
            let si = model::service_instance(
                &route.application,
                &name,
                ctx.mirror.records(),
                &counters,
                &mctx,
            )
            .ok_or_else(|| unknown_instance(&route.application, &name))?;
            match fields {
                None => Ok(Response::serialized(200, &si, format)),
                Some(f) => {
                    let v =
                        serde_json::to_value(&si).map_err(|e| ApiError::new(500, e.to_string()))?;
                    Ok(Response::serialized(200, &f.apply(&v), format))
                }
            }
        }
        _ => Err(ApiError::new(
            500,
            "state handler called for another endpoint",
        )),
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
pub struct Cache {
    generation: u64,
    entries: VecDeque<(String, String, Format, Response)>,
    bytes: usize,
}

impl Cache {
    pub fn get(
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
    pub fn put(
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self, generation: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.generation = generation;
    }
}

pub fn runtime_unavailable(why: &str) -> String {
    if why.starts_with("runtime unavailable") {
        why.to_string()
    } else {
        format!("runtime unavailable: {why}")
    }
}

pub fn unknown_instance(application: &str, instance: &str) -> ApiError {
    ApiError::not_found(format!(
        "no service instance {instance:?} of application {application:?} on this host"
    ))
    .info("application-name", application)
    .info("service-instance-name", instance)
}

/// Reject parameters the endpoint does not know: a typo must not silently return everything.
pub fn check_params(query: &Query, allowed: &[&str]) -> Result<(), ApiError> {
    for name in query.names() {
        if !allowed.contains(&name) {
            return Err(
                ApiError::bad_request(format!("unknown query parameter {name:?}"))
                    .info("allowed", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

/// `site` absent or naming this site is served here; forwarding to peers does not exist yet.
pub fn check_site(query: &Query, site: &str) -> Result<(), ApiError> {
    match query.single("site")? {
        None => Ok(()),
        Some(s) if s == site => Ok(()),
        Some(s) => Err(ApiError::not_found(format!("unknown site {s:?}")).info("site", s)),
    }
}

fn flag(query: &Query, name: &str) -> Result<bool, ApiError> {
    match query.single(name)? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} must be \"true\" (got {v:?})"
        ))),
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
