//! Generates a deterministic JSON value that satisfies (the common subset
//! of) a JSON Schema. Used for structured outputs (`response_format`
//! `json_schema`) and for tool-call arguments.
//!
//! Rules: `$ref` (local `#/...` pointers, e.g. pydantic's `$defs`) is
//! followed; `const` wins, then the first `enum` value; `anyOf`/`oneOf`/
//! `allOf` take the first branch; a type list takes its first entry;
//! string → `"mock"` (or a value matching a well-known `format`),
//! integer → 1, number → 1.5 (both clamped to `minimum`/`maximum`),
//! boolean → true, null → null, array → `max(1, minItems)` generated items,
//! object → every property (or only the `required` ones for tool
//! arguments), recursing.

use serde_json::{Map, Value};

const MAX_DEPTH: usize = 12;

/// Generates a value for `schema`. With `required_only`, objects contain
/// only their `required` properties (as the tool-call arguments do).
pub fn generate(schema: &Value, required_only: bool) -> Value {
    Gen {
        root: schema,
        required_only,
    }
    .value(schema, 0)
}

struct Gen<'a> {
    root: &'a Value,
    required_only: bool,
}

impl<'a> Gen<'a> {
    fn value(&self, schema: &'a Value, depth: usize) -> Value {
        let obj = match schema {
            Value::Object(o) => o,
            // `true` / `{}`-like schemas accept anything.
            _ => return Value::String("mock".into()),
        };
        if depth > MAX_DEPTH {
            return shallow(obj);
        }
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            if let Some(target) = self.resolve(r) {
                return self.value(target, depth + 1);
            }
        }
        if let Some(c) = obj.get("const") {
            return c.clone();
        }
        if let Some(first) = obj
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return first.clone();
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(first) = obj
                .get(key)
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                return self.value(first, depth + 1);
            }
        }
        let ty = match obj.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("string"),
            _ => {
                if obj.contains_key("properties") {
                    "object"
                } else if obj.contains_key("items") || obj.contains_key("prefixItems") {
                    "array"
                } else {
                    "string"
                }
            }
        };
        match ty {
            "object" => self.object(obj, depth),
            "array" => self.array(obj, depth),
            "integer" => {
                let v = clamp(obj, 1.0).round();
                Value::from(v as i64)
            }
            "number" => {
                let v = clamp(obj, 1.5);
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .unwrap_or(Value::from(1))
            }
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => Value::String(string_for(obj)),
        }
    }

    fn object(&self, obj: &'a Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        let Some(props) = obj.get("properties").and_then(Value::as_object) else {
            return Value::Object(out);
        };
        if self.required_only {
            let required = obj.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let v = match props.get(name) {
                    Some(s) => self.value(s, depth + 1),
                    None => Value::String("mock".into()),
                };
                out.insert(name.to_string(), v);
            }
        } else {
            for (name, schema) in props {
                out.insert(name.clone(), self.value(schema, depth + 1));
            }
        }
        Value::Object(out)
    }

    fn array(&self, obj: &'a Map<String, Value>, depth: usize) -> Value {
        if let Some(prefix) = obj.get("prefixItems").and_then(Value::as_array) {
            return Value::Array(prefix.iter().map(|s| self.value(s, depth + 1)).collect());
        }
        let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
        let max = obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let cap = if depth > 2 { 1 } else { 64 };
        let count = min.max(1).min(max).min(cap) as usize;
        if depth >= MAX_DEPTH / 2 && min == 0 {
            return Value::Array(Vec::new());
        }
        match obj.get("items") {
            Some(items) => {
                let item = self.value(items, depth + 1);
                Value::Array(vec![item; count])
            }
            None => Value::Array(vec![Value::String("mock".into()); count]),
        }
    }

    fn resolve(&self, pointer: &str) -> Option<&'a Value> {
        let path = pointer.strip_prefix('#')?;
        if path.is_empty() {
            return Some(self.root);
        }
        let path = path.replace("~1", "/").replace("~0", "~");
        self.root.pointer(&path)
    }
}

fn shallow(obj: &Map<String, Value>) -> Value {
    match obj.get("type").and_then(Value::as_str) {
        Some("array") => Value::Array(Vec::new()),
        Some("object") => Value::Object(Map::new()),
        Some("integer") => Value::from(1),
        Some("boolean") => Value::Bool(true),
        Some("string") => Value::String("mock".into()),
        _ => Value::Null,
    }
}

fn clamp(obj: &Map<String, Value>, default: f64) -> f64 {
    let mut v = default;
    if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
        if v < min {
            v = min;
        }
    }
    if let Some(min) = obj.get("exclusiveMinimum").and_then(Value::as_f64) {
        if v <= min {
            v = min + 1.0;
        }
    }
    if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
        if v > max {
            v = max;
        }
    }
    if let Some(max) = obj.get("exclusiveMaximum").and_then(Value::as_f64) {
        if v >= max {
            v = max - 1.0;
        }
    }
    v
}

fn string_for(obj: &Map<String, Value>) -> String {
    let base = match obj.get("format").and_then(Value::as_str) {
        Some("date-time") => "2024-01-01T00:00:00Z",
        Some("date") => "2024-01-01",
        Some("time") => "00:00:00",
        Some("email") => "mock@example.com",
        Some("uri") | Some("url") => "https://example.com/mock",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("ipv4") => "127.0.0.1",
        _ => "mock",
    };
    let mut s = base.to_string();
    if let Some(min) = obj.get("minLength").and_then(Value::as_u64) {
        while (s.chars().count() as u64) < min {
            s.push('k');
        }
    }
    if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
        s = crate::text::first_chars(&s, max as usize).to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generates_all_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "count": {"type": "integer"},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "inner": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 5}}},
                "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "nullable": {"type": ["integer", "null"]},
                "when": {"type": "string", "format": "date"}
            },
            "required": ["name"]
        });
        let v = generate(&schema, false);
        assert_eq!(
            v,
            json!({
                "name": "mock", "unit": "celsius", "count": 1, "score": 1.5, "ok": true,
                "tags": ["mock"], "inner": {"x": 5}, "maybe": "mock", "nullable": 1,
                "when": "2024-01-01"
            })
        );
        assert_eq!(generate(&schema, true), json!({"name": "mock"}));
    }

    #[test]
    fn follows_refs_and_stops_recursion() {
        let schema = json!({
            "$defs": {"Node": {"type": "object", "properties": {
                "v": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
            }}},
            "$ref": "#/$defs/Node"
        });
        let v = generate(&schema, false);
        assert_eq!(v["v"], json!(1));
        assert!(v["children"].is_array());
    }
}
