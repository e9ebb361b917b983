//! The RESTCONF `fields` query parameter (RFC 8040, section 4.8.3): a selection of the members
//! of each returned resource.
//!
//! ```text
//! fields-expr = term *( (";" / ",") term )
//! term        = path [ "(" fields-expr ")" ]
//! path        = identifier *( "/" identifier )
//! identifier  = [ module ":" ] name      ; module and name: 1*( ALPHA / DIGIT / "_" / "." / "-" )
//! ```
//!
//! The RFC's ABNF does not allow a term to follow `)`, but its own examples and every
//! implementation do (`a(b);c`), so this grammar does. `,` is accepted as a synonym of `;`.
//! Module prefixes are accepted and ignored: supd's resources have a single namespace.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// Longest accepted expression, in bytes.
pub const MAX_LEN: usize = 4096;

/// Deepest accepted selection, counted in member names from the resource (`a/b(c)` is 3 deep).
/// It bounds every recursion over the selection tree: parsing, merging, applying and dropping.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Empty,
    TooLong { len: usize },
    TooDeep { offset: usize },
    Syntax { offset: usize, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("invalid fields expression: it is empty"),
            Error::TooLong { len } => write!(
                f,
                "invalid fields expression: it is {len} bytes long, at most {MAX_LEN} are allowed"
            ),
            Error::TooDeep { offset } => write!(
                f,
                "invalid fields expression at offset {offset}: selection nested more than \
                 {MAX_DEPTH} members deep"
            ),
            Error::Syntax { offset, reason } => {
                write!(f, "invalid fields expression at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// What is selected of one member.
#[derive(Debug, Clone, PartialEq)]
enum Selection {
    /// The whole member, whatever it holds.
    All,
    /// Only these members of it.
    Members(Fields),
}

/// A parsed `fields` expression: a tree of selected member names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    /// Keyed by the member name without its module prefix.
    members: BTreeMap<String, Selection>,
}

impl Fields {
    pub fn parse(expr: &str) -> Result<Fields> {
        if expr.is_empty() {
            return Err(Error::Empty);
        }
        if expr.len() > MAX_LEN {
            return Err(Error::TooLong { len: expr.len() });
        }
        let mut parser = Parser { src: expr, pos: 0 };
        let fields = parser.expr(1)?;
        match parser.peek() {
            None => Ok(fields),
            Some(b')') => Err(parser.error("')' without a matching '('")),
            Some(_) => Err(parser.unexpected("';', ',', '/', '(' or the end")),
        }
    }

    /// Keep only the selected members. Objects: keep selected keys (recursively);
    /// arrays: apply to each element; scalars selected as a whole are kept as they are.
    /// Selecting a missing member is not an error: it is just absent.
    ///
    /// A member holding a scalar (or null) of which sub-members are selected is left out, as
    /// nothing it holds was selected. A scalar given as the whole value is returned unchanged,
    /// as it has no members to narrow.
    pub fn apply(&self, value: &Value) -> Value {
        self.select(value).unwrap_or_else(|| value.clone())
    }

    fn select(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, member) in map {
                    let selected = match self.members.get(local_name(key)) {
                        None => None,
                        Some(Selection::All) => Some(member.clone()),
                        Some(Selection::Members(sub)) => sub.select(member),
                    };
                    if let Some(selected) = selected {
                        out.insert(key.clone(), selected);
                    }
                }
                Some(Value::Object(out))
            }
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|item| self.select(item)).collect(),
            )),
            _ => None,
        }
    }

    fn merge(&mut self, name: String, selection: Selection) {
        match self.members.get_mut(&name) {
            None => {
                self.members.insert(name, selection);
            }
            Some(existing) => match (existing, selection) {
                (Selection::All, _) => {}
                (existing, Selection::All) => *existing = Selection::All,
                (Selection::Members(have), Selection::Members(add)) => {
                    for (name, selection) in add.members {
                        have.merge(name, selection);
                    }
                }
            },
        }
    }
}

fn local_name(name: &str) -> &str {
    match name.split_once(':') {
        Some((_, local)) => local,
        None => name,
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Syntax {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn unexpected(&self, expected: &str) -> Error {
        // `pos` only ever advances over ASCII bytes, so it is on a character boundary.
        match self.src[self.pos..].chars().next() {
            None => self.error(format!("expected {expected}, found the end")),
            Some(c) => self.error(format!("expected {expected}, found {c:?}")),
        }
    }

    /// `level` is the depth of the members this expression names.
    fn expr(&mut self, level: usize) -> Result<Fields> {
        let mut fields = Fields::default();
        loop {
            let (name, selection) = self.term(level)?;
            fields.merge(name, selection);
            match self.peek() {
                Some(b';' | b',') => self.pos += 1,
                _ => return Ok(fields),
            }
        }
    }

    /// One term, as the name of its first member and what it selects of it.
    fn term(&mut self, level: usize) -> Result<(String, Selection)> {
        let mut path = vec![self.identifier(level)?];
        while self.peek() == Some(b'/') {
            self.pos += 1;
            path.push(self.identifier(level + path.len())?);
        }
        let mut selection = Selection::All;
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let inner = self.expr(level + path.len())?;
            if self.peek() != Some(b')') {
                return Err(self.unexpected("';', ',', '/', '(' or ')'"));
            }
            self.pos += 1;
            selection = Selection::Members(inner);
        }
        let first = path.remove(0);
        for name in path.into_iter().rev() {
            let mut members = BTreeMap::new();
            members.insert(name, selection);
            selection = Selection::Members(Fields { members });
        }
        Ok((first, selection))
    }

    /// A member name at depth `level`, without its module prefix.
    fn identifier(&mut self, level: usize) -> Result<String> {
        let start = self.pos;
        if level > MAX_DEPTH {
            return Err(Error::TooDeep { offset: start });
        }
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() && (is_name_byte(bytes[self.pos]) || bytes[self.pos] == b':') {
            self.pos += 1;
        }
        let ident = &self.src[start..self.pos];
        if ident.is_empty() {
            return Err(self.unexpected("a member name"));
        }
        let (module, name) = match ident.split_once(':') {
            Some((module, name)) => (Some(module), name),
            None => (None, ident),
        };
        let bad = |reason: &str| {
            Err(Error::Syntax {
                offset: start,
                reason: format!("{reason} in member name {ident:?}"),
            })
        };
        if module == Some("") {
            return bad("empty module prefix");
        }
        if name.is_empty() {
            return bad("nothing after the module prefix");
        }
        if name.contains(':') {
            return bad("more than one ':'");
        }
        Ok(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "name": "a",
            "containers": [
                {"name": "c", "id": "1", "probes": {"startup": {"status": "x"}}},
            ],
            "ready": true,
        })
    }

    fn apply(expr: &str, value: &Value) -> Value {
        Fields::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .apply(value)
    }

    #[test]
    fn selects_one_member() {
        assert_eq!(apply("name", &sample()), json!({"name": "a"}));
    }

    #[test]
    fn selects_several_members() {
        assert_eq!(
            apply("name;ready", &sample()),
            json!({"name": "a", "ready": true})
        );
        assert_eq!(
            apply("ready,name", &sample()),
            json!({"name": "a", "ready": true})
        );
    }

    #[test]
    fn path_goes_through_arrays() {
        assert_eq!(
            apply("containers/name", &sample()),
            json!({"containers": [{"name": "c"}]})
        );
    }

    #[test]
    fn parenthesised_sub_selection() {
        assert_eq!(
            apply("containers(name;id)", &sample()),
            json!({"containers": [{"name": "c", "id": "1"}]})
        );
        assert_eq!(
            apply("containers(name,id)", &sample()),
            json!({"containers": [{"name": "c", "id": "1"}]})
        );
    }

    #[test]
    fn whole_sub_object_is_kept() {
        assert_eq!(
            apply("containers/probes/startup", &sample()),
            json!({"containers": [{"probes": {"startup": {"status": "x"}}}]})
        );
    }

    #[test]
    fn terms_after_parentheses() {
        let want = json!({"name": "a", "containers": [{"probes": {"startup": {"status": "x"}}}]});
        assert_eq!(
            apply("name,containers(probes/startup/status)", &sample()),
            want
        );
        assert_eq!(
            apply("containers(probes/startup/status);name", &sample()),
            want
        );
        assert_eq!(
            apply("containers(probes(startup(status)));name", &sample()),
            want
        );
    }

    #[test]
    fn overlapping_paths_merge() {
        assert_eq!(
            apply("containers/name;containers/id", &sample()),
            json!({"containers": [{"name": "c", "id": "1"}]})
        );
        assert_eq!(
            Fields::parse("containers/name;containers/id").unwrap(),
            Fields::parse("containers(id;name)").unwrap()
        );
        assert_eq!(
            Fields::parse("name;name;name").unwrap(),
            Fields::parse("name").unwrap()
        );
    }

    #[test]
    fn whole_member_absorbs_its_parts() {
        let whole = Fields::parse("containers").unwrap();
        assert_eq!(Fields::parse("containers/name;containers").unwrap(), whole);
        assert_eq!(Fields::parse("containers;containers/name").unwrap(), whole);
        assert_eq!(Fields::parse("containers(id);containers").unwrap(), whole);
        assert_eq!(
            apply("containers/probes;containers", &sample()),
            json!({"containers": sample()["containers"]})
        );
    }

    #[test]
    fn deep_merge() {
        let v = json!({"a": {"b": {"c": 1, "d": 2, "e": 3}, "f": 4}});
        assert_eq!(
            apply("a/b/c;a(b(d));a/f", &v),
            json!({"a": {"b": {"c": 1, "d": 2}, "f": 4}})
        );
    }

    #[test]
    fn output_keeps_input_key_order() {
        let v: Value = serde_json::from_str(r#"{"z":1,"m":2,"a":3,"b":4}"#).unwrap();
        let out = apply("a;z;b", &v);
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        let want: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "m")
            .collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn missing_members_are_absent() {
        assert_eq!(apply("nope", &sample()), json!({}));
        assert_eq!(apply("name;nope", &sample()), json!({"name": "a"}));
        assert_eq!(
            apply("containers/nope", &sample()),
            json!({"containers": [{}]})
        );
        assert_eq!(
            apply("containers/probes/liveness", &sample()),
            json!({"containers": [{"probes": {}}]})
        );
    }

    #[test]
    fn scalar_with_sub_selection_is_left_out() {
        assert_eq!(apply("name/x", &sample()), json!({}));
        assert_eq!(apply("ready(x);name", &sample()), json!({"name": "a"}));
        let v = json!({"probes": null, "tags": ["a", {"k": 1, "j": 2}]});
        assert_eq!(apply("probes/startup", &v), json!({}));
        assert_eq!(apply("probes", &v), json!({"probes": null}));
        assert_eq!(apply("tags/k", &v), json!({"tags": [{"k": 1}]}));
    }

    #[test]
    fn top_level_array_and_scalar() {
        let v = json!([{"name": "a", "id": 1}, {"name": "b"}, 7]);
        assert_eq!(apply("name", &v), json!([{"name": "a"}, {"name": "b"}]));
        assert_eq!(apply("name", &json!("text")), json!("text"));
        assert_eq!(apply("name", &json!(null)), json!(null));
    }

    #[test]
    fn nested_arrays() {
        let v = json!({"a": [[{"b": 1, "c": 2}], [{"b": 3}]]});
        assert_eq!(apply("a/b", &v), json!({"a": [[{"b": 1}], [{"b": 3}]]}));
    }

    #[test]
    fn module_prefixes_are_ignored() {
        assert_eq!(
            Fields::parse("supd:containers(ietf-x:name)").unwrap(),
            Fields::parse("containers/name").unwrap()
        );
        let v = json!({"mod:name": "prefixed", "ready": true});
        assert_eq!(apply("name", &v), json!({"mod:name": "prefixed"}));
        assert_eq!(apply("other:name", &v), json!({"mod:name": "prefixed"}));
    }

    #[test]
    fn identifier_characters() {
        let v = json!({"oper-status": 1, "a_b.c-9": 2, "x": 3});
        assert_eq!(
            apply("oper-status;a_b.c-9", &v),
            json!({"oper-status": 1, "a_b.c-9": 2})
        );
    }

    fn err(expr: &str) -> Error {
        match Fields::parse(expr) {
            Ok(f) => panic!("{expr:?} parsed as {f:?}"),
            Err(e) => e,
        }
    }

    fn offset(expr: &str) -> usize {
        match err(expr) {
            Error::Syntax { offset, .. } | Error::TooDeep { offset } => offset,
            e => panic!("{expr:?}: {e}"),
        }
    }

    #[test]
    fn syntax_errors_with_offsets() {
        for (expr, at) in [
            (";;", 0),
            ("a;;b", 2),
            ("a;", 2),
            (";a", 0),
            ("a,", 2),
            ("a(", 2),
            ("a()", 2),
            ("(a)", 0),
            ("a/", 2),
            ("/a", 0),
            ("a//b", 2),
            ("a)b", 1),
            ("a)", 1),
            ("a(b", 3),
            ("a(b))", 4),
            ("a(b)c", 4),
            ("a(b)(c)", 4),
            ("a(b)/c", 4),
            ("a b", 1),
            (" a", 0),
            ("a\n", 1),
            ("a*", 1),
            ("a=b", 1),
            ("ä", 0),
            ("aé", 1),
            ("a;b(c;ö)", 6),
            (":a", 0),
            ("a:", 0),
            ("x;a:b:c", 2),
            ("a(b:)", 2),
        ] {
            assert_eq!(offset(expr), at, "{expr:?}: {}", err(expr));
        }
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            err("").to_string(),
            "invalid fields expression: it is empty"
        );
        assert_eq!(
            err("a;;b").to_string(),
            "invalid fields expression at offset 2: expected a member name, found ';'"
        );
        assert_eq!(
            err("a(").to_string(),
            "invalid fields expression at offset 2: expected a member name, found the end"
        );
        assert_eq!(
            err("a)b").to_string(),
            "invalid fields expression at offset 1: ')' without a matching '('"
        );
        assert_eq!(
            err("a(b").to_string(),
            "invalid fields expression at offset 3: expected ';', ',', '/', '(' or ')', found the end"
        );
        assert_eq!(
            err("aé").to_string(),
            "invalid fields expression at offset 1: expected ';', ',', '/', '(' or the end, found 'é'"
        );
        assert_eq!(
            err("a::b").to_string(),
            "invalid fields expression at offset 0: more than one ':' in member name \"a::b\""
        );
        assert_eq!(
            err("x;mod:").to_string(),
            "invalid fields expression at offset 2: nothing after the module prefix in member name \"mod:\""
        );
    }

    #[test]
    fn length_is_bounded() {
        let ok = "a;".repeat(MAX_LEN / 2 - 1) + "ab";
        assert_eq!(ok.len(), MAX_LEN);
        assert!(Fields::parse(&ok).is_ok());
        let long = ok + "c";
        assert_eq!(err(&long), Error::TooLong { len: MAX_LEN + 1 });
        assert!(err(&long).to_string().contains("at most 4096"));
    }

    #[test]
    fn depth_is_bounded() {
        let names: Vec<String> = (0..MAX_DEPTH).map(|i| format!("m{i}")).collect();
        let mut deep = json!(1);
        for name in names.iter().rev() {
            deep = json!({ name.clone(): deep, "other": 0 });
        }

        let slashes = names.join("/");
        assert_eq!(apply(&slashes, &deep), {
            let mut want = json!(1);
            for name in names.iter().rev() {
                want = json!({ name.clone(): want });
            }
            want
        });
        let parens = names.join("(") + &")".repeat(MAX_DEPTH - 1);
        assert_eq!(
            Fields::parse(&parens).unwrap(),
            Fields::parse(&slashes).unwrap()
        );

        assert!(matches!(
            err(&(slashes.clone() + "/x")),
            Error::TooDeep { .. }
        ));
        let too_deep = names.join("(") + "(x" + &")".repeat(MAX_DEPTH);
        assert!(matches!(err(&too_deep), Error::TooDeep { .. }));
        assert_eq!(offset(&(slashes.clone() + "(x)")), slashes.len() + 1);
        assert!(
            err(&(slashes + "/x"))
                .to_string()
                .contains("nested more than 16 members deep")
        );
    }

    #[test]
    fn hostile_inputs_do_not_overflow() {
        for expr in [
            "(".repeat(MAX_LEN),
            "a(".repeat(MAX_LEN / 2),
            "a/".repeat(MAX_LEN / 2),
            ")".repeat(MAX_LEN),
            "a(b)".repeat(MAX_LEN / 4),
        ] {
            let _ = Fields::parse(&expr);
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A small deterministic generator over the interesting alphabet.
        let alphabet = b"ab:;,/()- \x00";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            if let Ok(f) = Fields::parse(&s) {
                let _ = f.apply(&sample());
            }
        }
    }
}
