//! JSON Schema (what OpenAI clients send as function `parameters` and as
//! `response_format.json_schema.schema`) → Gemini's `Schema`, the subset of
//! OpenAPI 3.0 that both the Gemini API (`v1beta`) and Vertex AI (`v1`)
//! accept. Gemini answers `400 INVALID_ARGUMENT` ("Unknown name ...") for a
//! keyword outside its subset, so the gateway keeps the keywords Gemini
//! knows, converts the ones it can express another way, and drops the rest.
//!
//! **Kept** (same meaning in both): `type`, `description`, `nullable`,
//! `enum`, `items`, `properties`, `required`, `minItems`, `maxItems`,
//! `minLength`, `maxLength`, `minProperties`, `maxProperties`, `minimum`,
//! `maximum`, `pattern`, `anyOf`, `propertyOrdering`; `format` only when it
//! is one the Gemini API takes (`date-time`, `enum` for strings; `float`,
//! `double`, `int32`, `int64` for numbers: its other values are rejected
//! by the Gemini API).
//!
//! **Converted:**
//! - `$ref` to `#/$defs/<name>` or `#/definitions/<name>` is replaced by
//!   the definition (inlined; keywords next to the `$ref` win over the
//!   definition's). A recursive reference cannot be inlined and Gemini's
//!   subset has no references: a 400 naming the parameter. Other
//!   references (remote, other JSON pointers) are a 400 too.
//! - `allOf`: its schemas are merged into one (properties and `required`
//!   unioned, the first value of any other keyword kept; the schema's own
//!   keywords win).
//! - `oneOf` → `anyOf` (Gemini has no `oneOf`; for the disjoint
//!   alternatives clients write, "any" and "exactly one" agree).
//! - Null: `type: [T, "null"]` → `type: T, nullable: true`; an `anyOf`
//!   alternative `{type: "null"}` is removed and the others marked
//!   `nullable` (a single one left replaces the `anyOf`); `null` in `enum`
//!   or `const: null` → `nullable: true`. A `type` list of several
//!   non-null types → `anyOf` of one schema per type.
//! - `const: v` → `enum: [v]`.
//! - `enum` values are strings in Gemini's schema: numbers and booleans are
//!   written as their JSON text (`1` → `"1"`).
//! - Missing `type` is filled in where it is implied (`properties` →
//!   `object`, `items` → `array`, `enum`/`const` of strings → `string`).
//! - An empty `properties` map is removed: Gemini rejects an `OBJECT` whose
//!   `properties` is empty ("should be non-empty for OBJECT type").
//! - With `ordering` (response schemas), every object with two or more
//!   properties gets `propertyOrdering` in the client's order unless it has
//!   one: Gemini writes properties alphabetically otherwise, and OpenAI
//!   clients expect the schema's order.
//!
//! **Dropped** (anything else, notably): `$schema`, `$id`, `$comment`,
//! `$anchor`, `$defs`/`definitions` (after inlining), `title` (a label;
//! pydantic puts one on every property, and Google's own SDKs strip it),
//! `default`, `examples`, `example` (documentation only; the Gemini API
//! ignores `default` where it accepts it at all), `additionalProperties`
//! (OpenAI's strict mode requires `false` on every object; the Gemini API
//! rejects the keyword), `unevaluatedProperties`, `patternProperties`,
//! `propertyNames`, `dependentRequired`, `dependentSchemas`,
//! `dependencies`, `if`/`then`/`else`, `not`, `contains`, `minContains`,
//! `maxContains`, `uniqueItems`, `multipleOf`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `prefixItems` and tuple-form `items`,
//! `contentEncoding`, `contentMediaType`, `readOnly`, `writeOnly`,
//! `deprecated`, `discriminator`, `strict`. These are constraints or
//! annotations the model is then not told about; the answer is not
//! validated by the gateway either way.
//!
//! Names inside `properties` (and in `required`) are property names, never
//! keywords: a property called `title` or `default` is kept.
//!
//! Limits: a schema may nest 64 levels and inline to 10 000 schema nodes
//! (a chain of `$ref`s can grow exponentially); beyond that, a 400.

use crate::error::ApiError;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 10_000;

/// String `format`s Gemini takes, and the numeric ones.
const FORMATS: [&str; 6] = ["date-time", "enum", "float", "double", "int32", "int64"];

/// Numeric and string keywords kept as they are.
const PLAIN: [&str; 10] = [
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "pattern",
    "description",
];

/// A JSON value whose objects keep their keys in document order (the
/// client's property order matters for `propertyOrdering`).
#[derive(Debug, Clone)]
pub enum Tree {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Tree>),
    Obj(Vec<(String, Tree)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Tree, E> {
                Ok(Tree::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Tree, E> {
                Ok(Tree::Num(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Tree, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Tree::Null, Tree::Num))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Tree, E> {
                Ok(Tree::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Tree::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Tree, A::Error> {
                let mut v: Vec<(String, Tree)> = Vec::new();
                while let Some((k, x)) = m.next_entry::<String, Tree>()? {
                    // A repeated key: the last one wins, as in serde_json.
                    v.retain(|(e, _)| *e != k);
                    v.push((k, x));
                }
                Ok(Tree::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Tree {
    /// Parse JSON text; `None` when it is not JSON.
    pub fn parse(raw: &RawValue) -> Option<Tree> {
        serde_json::from_str(raw.get()).ok()
    }

    pub fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Obj(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Tree]> {
        match self {
            Tree::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Tree::Obj(_))
    }

    /// An enum value as Gemini's string: numbers and booleans as their
    /// JSON text. `None` for null (and for arrays and objects, which a
    /// string enum cannot hold).
    fn enum_text(&self) -> Option<String> {
        match self {
            Tree::Str(s) => Some(s.clone()),
            Tree::Num(n) => Some(n.to_string()),
            Tree::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An array of strings, as JSON.
    fn strings(&self) -> Option<Value> {
        let a = self.as_array()?;
        a.iter()
            .map(|x| x.as_str().map(|s| Value::String(s.to_string())))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array)
    }
}

struct Ctx<'a> {
    param: &'a str,
    ordering: bool,
    defs: Vec<(String, &'a Tree)>,
    /// `$ref`s being inlined, to refuse recursion.
    stack: Vec<String>,
    nodes: usize,
}

impl Ctx<'_> {
    fn error(&self, why: impl fmt::Display) -> ApiError {
        ApiError::invalid_param(
            self.param,
            "invalid_value",
            format!(
                "Invalid schema in '{}': {why}. Gemini accepts a subset of JSON Schema.",
                self.param
            ),
        )
    }
}

/// Convert the schema `root` (found at `param`, named in errors).
/// `ordering` adds `propertyOrdering` (response schemas). `Ok(None)`: the
/// schema is `null`.
pub fn convert(root: &Tree, param: &str, ordering: bool) -> Result<Option<Value>, ApiError> {
    if matches!(root, Tree::Null) {
        return Ok(None);
    }
    let mut defs = Vec::new();
    for key in ["$defs", "definitions"] {
        if let Some(Tree::Obj(o)) = root.get(key) {
            for (name, d) in o {
                defs.push((format!("#/{key}/{name}"), d));
            }
        }
    }
    let mut ctx = Ctx {
        param,
        ordering,
        defs,
        stack: Vec::new(),
        nodes: 0,
    };
    let out = node(&mut ctx, root, 0)?;
    Ok(Some(Value::Object(out)))
}

/// A function's `parameters`: converted, or `None` when it declares no
/// properties (Gemini rejects an `OBJECT` without properties; a function
/// that takes nothing is declared without `parameters`).
pub fn parameters(root: &Tree, param: &str) -> Result<Option<Value>, ApiError> {
    let Some(v) = convert(root, param, false)? else {
        return Ok(None);
    };
    let empty_object = v.get("properties").is_none()
        && v.get("anyOf").is_none()
        && v.get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t.eq_ignore_ascii_case("object"));
    Ok((!empty_object).then_some(v))
}

/// Undo JSON Pointer escapes in one `$ref` segment.
fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn resolve<'a>(ctx: &Ctx<'a>, r: &str) -> Option<&'a Tree> {
    let r = r.trim();
    ctx.defs
        .iter()
        .find(|(name, _)| *name == r || unescape(r) == *name)
        .map(|(_, d)| *d)
}

/// Merge `from` into `into`: properties and `required` unioned, other
/// keywords only where `into` has none.
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (k.as_str(), into.get_mut(&k), v) {
            ("properties", Some(Value::Object(a)), Value::Object(b)) => {
                for (pk, pv) in b {
                    if !a.contains_key(&pk) {
                        a.insert(pk, pv);
                    }
                }
            }
            ("required" | "propertyOrdering", Some(Value::Array(a)), Value::Array(b)) => {
                for x in b {
                    if !a.contains(&x) {
                        a.push(x);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn is_null_schema(v: &Value) -> bool {
    match v.get("type") {
        Some(Value::String(t)) => t == "null" && v.as_object().is_some_and(|o| o.len() == 1),
        _ => false,
    }
}

fn node(ctx: &mut Ctx<'_>, j: &Tree, depth: usize) -> Result<Map<String, Value>, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ctx.error(format_args!("it nests deeper than {MAX_DEPTH} levels")));
    }
    ctx.nodes += 1;
    if ctx.nodes > MAX_NODES {
        return Err(ctx.error(format_args!(
            "it expands to more than {MAX_NODES} schemas once its $refs are inlined"
        )));
    }
    let obj = match j {
        // `true` / `{}`: anything; `false` cannot be expressed either.
        Tree::Bool(_) => return Ok(Map::new()),
        Tree::Obj(o) => o,
        _ => return Err(ctx.error("a schema must be an object")),
    };

    let mut out = Map::new();
    let mut nullable = false;

    // $ref: the definition first, this schema's own keywords over it.
    if let Some(r) = j.get("$ref") {
        let Tree::Str(r) = r else {
            return Err(ctx.error("$ref must be a string"));
        };
        if ctx.stack.iter().any(|s| s == r) || r == "#" {
            return Err(ctx.error(format_args!(
                "$ref '{}' is recursive, which Gemini schemas cannot express",
                crate::error::echo(r)
            )));
        }
        let Some(target) = resolve(ctx, r) else {
            return Err(ctx.error(format_args!(
                "$ref '{}' does not point into this schema's $defs or definitions",
                crate::error::echo(r)
            )));
        };
        ctx.stack.push(r.clone());
        let inlined = node(ctx, target, depth + 1);
        ctx.stack.pop();
        out = inlined?;
    }

    let mut own = Map::new();
    let mut order: Option<Vec<Value>> = None;
    for (key, v) in obj {
        match key.as_str() {
            "type" => match v {
                Tree::Str(t) => {
                    own.insert("type".into(), Value::String(t.clone()));
                }
                Tree::Arr(types) => {
                    let mut names: Vec<String> = Vec::new();
                    for t in types {
                        match t {
                            Tree::Str(t) if t == "null" => nullable = true,
                            Tree::Str(t) => names.push(t.clone()),
                            _ => return Err(ctx.error("type must be a string or strings")),
                        }
                    }
                    match names.len() {
                        0 => {}
                        1 => {
                            own.insert("type".into(), Value::String(names.remove(0)));
                        }
                        _ => {
                            let alts = names
                                .into_iter()
                                .map(|t| serde_json::json!({ "type": t }))
                                .collect();
                            own.insert("anyOf".into(), Value::Array(alts));
                        }
                    }
                }
                _ => return Err(ctx.error("type must be a string or strings")),
            },
            "format" => {
                if let Tree::Str(f) = v {
                    if FORMATS.contains(&f.as_str()) {
                        own.insert("format".into(), Value::String(f.clone()));
                    }
                }
            }
            "nullable" => {
                if let Tree::Bool(b) = v {
                    nullable |= *b;
                }
            }
            "enum" => {
                if let Tree::Arr(vals) = v {
                    let mut out_vals = Vec::new();
                    for x in vals {
                        match x.enum_text() {
                            Some(s) => out_vals.push(Value::String(s)),
                            None => nullable |= matches!(x, Tree::Null),
                        }
                    }
                    if vals.iter().all(|x| matches!(x, Tree::Str(_) | Tree::Null))
                        && !out_vals.is_empty()
                        && !own.contains_key("type")
                    {
                        own.insert("type".into(), Value::String("string".into()));
                    }
                    if !out_vals.is_empty() {
                        own.insert("enum".into(), Value::Array(out_vals));
                    }
                }
            }
            "const" => match v.enum_text() {
                None => nullable |= matches!(v, Tree::Null),
                Some(s) => {
                    if matches!(v, Tree::Str(_)) && !own.contains_key("type") {
                        own.insert("type".into(), Value::String("string".into()));
                    }
                    own.insert("enum".into(), Value::Array(vec![Value::String(s)]));
                }
            },
            "items" => {
                // Tuple-form items (an array) cannot be expressed: dropped.
                if matches!(v, Tree::Obj(_) | Tree::Bool(_)) {
                    let items = node(ctx, v, depth + 1)?;
                    own.insert("items".into(), Value::Object(items));
                }
            }
            "properties" => {
                let Tree::Obj(props) = v else {
                    return Err(ctx.error("properties must be an object"));
                };
                let mut map = Map::new();
                let mut names = Vec::new();
                for (name, sub) in props {
                    let s = node(ctx, sub, depth + 1)?;
                    map.insert(name.clone(), Value::Object(s));
                    names.push(Value::String(name.clone()));
                }
                if !map.is_empty() {
                    own.insert("properties".into(), Value::Object(map));
                    order = Some(names);
                }
            }
            "required" | "propertyOrdering" => {
                if let Some(list) = v.strings() {
                    own.insert(key.clone(), list);
                }
            }
            "anyOf" | "oneOf" => {
                let Tree::Arr(alts) = v else {
                    return Err(ctx.error(format_args!("{key} must be an array")));
                };
                let mut kept = Vec::new();
                for a in alts {
                    let s = Value::Object(node(ctx, a, depth + 1)?);
                    if is_null_schema(&s) {
                        nullable = true;
                    } else {
                        kept.push(s);
                    }
                }
                if kept.len() == 1 {
                    if let Some(Value::Object(only)) = kept.pop() {
                        merge(&mut own, only);
                    }
                } else if !kept.is_empty() {
                    if nullable {
                        for k in &mut kept {
                            if let Value::Object(o) = k {
                                o.insert("nullable".into(), Value::Bool(true));
                            }
                        }
                    }
                    own.insert("anyOf".into(), Value::Array(kept));
                }
            }
            "allOf" => {
                let Tree::Arr(parts) = v else {
                    return Err(ctx.error("allOf must be an array"));
                };
                let mut merged = Map::new();
                for p in parts {
                    let s = node(ctx, p, depth + 1)?;
                    merge(&mut merged, s);
                }
                merge(&mut own, merged);
            }
            k if PLAIN.contains(&k) => match v {
                Tree::Num(n) => {
                    own.insert(key.clone(), Value::Number(n.clone()));
                }
                Tree::Str(s) => {
                    own.insert(key.clone(), Value::String(s.clone()));
                }
                _ => {}
            },
            _ => {}
        }
    }

    // This schema's keywords win over an inlined $ref's.
    for (k, v) in own {
        out.insert(k, v);
    }
    if out.contains_key("properties") && !out.contains_key("type") && !out.contains_key("anyOf") {
        out.insert("type".into(), Value::String("object".into()));
    }
    if out.contains_key("items") && !out.contains_key("type") {
        out.insert("type".into(), Value::String("array".into()));
    }
    if nullable && !out.contains_key("anyOf") {
        out.insert("nullable".into(), Value::Bool(true));
    }
    if ctx.ordering && !out.contains_key("propertyOrdering") {
        if let Some(names) = order.filter(|n| n.len() >= 2) {
            out.insert("propertyOrdering".into(), Value::Array(names));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(s: Value, ordering: bool) -> Result<Value, ApiError> {
        conv_str(&s.to_string(), ordering)
    }

    /// From text: `json!` sorts keys, and the order matters here.
    fn tree(s: &str) -> Tree {
        Tree::parse(&RawValue::from_string(s.to_string()).unwrap()).unwrap()
    }

    fn conv_str(s: &str, ordering: bool) -> Result<Value, ApiError> {
        convert(&tree(s), "p", ordering).map(|v| v.unwrap())
    }

    #[test]
    fn drops_and_keeps() {
        let v = conv(
            json!({"$schema":"x","title":"T","type":"object","additionalProperties":false,
                   "properties":{"title":{"type":"string","title":"Title","default":"a","format":"email","examples":["x"]},
                                 "n":{"type":"integer","minimum":1,"exclusiveMaximum":5,"format":"int32"}},
                   "required":["title"]}),
            false,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"object","properties":{"title":{"type":"string"},
                   "n":{"type":"integer","minimum":1,"format":"int32"}},"required":["title"]})
        );
    }

    #[test]
    fn refs_nullables_and_ordering() {
        let v = conv_str(
            r##"{"type":"object","$defs":{"Step":{"type":"object","properties":{"z":{"type":"string"},"a":{"const":"x"}}}},
                 "properties":{"steps":{"type":"array","items":{"$ref":"#/$defs/Step"}},
                               "note":{"anyOf":[{"type":"string"},{"type":"null"}],"description":"d"},
                               "kind":{"type":["string","null"],"enum":["a",null,1]},
                               "either":{"oneOf":[{"type":"string"},{"type":"integer"}]}}}"##,
            true,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"object","propertyOrdering":["steps","note","kind","either"],
                   "properties":{
                     "steps":{"type":"array","items":{"type":"object","propertyOrdering":["z","a"],
                        "properties":{"z":{"type":"string"},"a":{"type":"string","enum":["x"]}}}},
                     "note":{"type":"string","description":"d","nullable":true},
                     "kind":{"type":"string","enum":["a","1"],"nullable":true},
                     "either":{"anyOf":[{"type":"string"},{"type":"integer"}]}}})
        );
    }

    #[test]
    fn recursion_and_bad_refs_are_400() {
        let e = conv(
            json!({"type":"object","$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"}}}},
                   "properties":{"root":{"$ref":"#/$defs/N"}}}),
            false,
        )
        .unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("p")));
        assert!(e.message.contains("recursive"), "{}", e.message);
        let e = conv(json!({"$ref":"https://x/y"}), false).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("invalid_value"));
        assert!(conv(json!({"properties":5}), false).is_err());
        assert!(conv(json!("x"), false).is_err());
    }

    #[test]
    fn exponential_refs_hit_the_limit() {
        let mut defs = serde_json::Map::new();
        for i in 0..30 {
            defs.insert(
                format!("D{i}"),
                json!({"type":"object","properties":{
                    "a":{"$ref":format!("#/$defs/D{}", i + 1)},
                    "b":{"$ref":format!("#/$defs/D{}", i + 1)}}}),
            );
        }
        defs.insert("D30".into(), json!({"type":"string"}));
        let e = conv(json!({"$defs":defs,"$ref":"#/$defs/D0"}), false).unwrap_err();
        assert!(e.message.contains("10000"), "{}", e.message);
    }

    #[test]
    fn all_of_type_lists_and_empty_parameters() {
        let v = conv(
            json!({"allOf":[{"properties":{"a":{"type":"string"}},"required":["a"]},
                            {"properties":{"b":{"type":["integer","boolean"]}},"required":["b"]}]}),
            false,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"object","properties":{"a":{"type":"string"},
                   "b":{"anyOf":[{"type":"integer"},{"type":"boolean"}]}},"required":["a","b"]})
        );
        for empty in [
            json!({"type":"object","properties":{}}),
            json!({"type":"object"}),
            json!({}),
        ] {
            assert_eq!(
                parameters(&tree(&empty.to_string()), "p").unwrap(),
                None,
                "{empty}"
            );
        }
        assert_eq!(parameters(&tree("null"), "p").unwrap(), None);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut s = json!({"type":"string"});
        for _ in 0..100 {
            s = json!({"type":"array","items":s});
        }
        // serde_json's own recursion limit (128) or ours (64) answers.
        let raw = RawValue::from_string(s.to_string());
        if let Some(t) = raw.ok().and_then(|r| Tree::parse(&r)) {
            assert!(convert(&t, "p", false).is_err());
        }
    }
}
