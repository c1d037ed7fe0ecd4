//! The OpenAPI document: the one served is the one in docs/openapi.json, and the server
//! answers every documented operation as documented — an in-process stand-in for
//! schemathesis: each operation is called anonymously (a documented `401`) and as the admin
//! with the document's own example body (a documented `2xx`), in an order that makes the
//! examples meet the records they need, and every JSON answer is checked against the schema
//! documented for its status.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::super::auth::{As, PASSWORD, Tenants, image, push};
use super::{Api, Who};

const DOCS_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[tokio::test]
async fn the_served_document_is_the_one_in_docs() {
    let api = Api {
        t: Tenants::start().await,
    };
    let response = super::super::auth::http()
        .get(api.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "served without credentials"
    );
    let served = response.text().await.unwrap();
    if std::env::var("AERUGO_WRITE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(DOCS_COPY, &served).unwrap();
    }
    let kept = std::fs::read_to_string(DOCS_COPY).unwrap_or_default();
    assert!(
        served == kept,
        "docs/openapi.json differs from the served document; regenerate it with \
         AERUGO_WRITE_OPENAPI=1 cargo nextest run --test it manage::openapi"
    );
}

/// What the path parameters stand for: records the fixture and the examples make (the
/// user robot example makes carol's `laptop`).
fn path_value(template: &str, parameter: &str) -> &'static str {
    match parameter {
        "robot" if template.starts_with("/api/v1/users/") => "laptop",
        "username" => "carol",
        "org_name" | "namespace" | "name" => "acme",
        "team" => "devs",
        "robot" => "ci",
        "repo_name" => "app",
        other => panic!("no value for path parameter {other}"),
    }
}

fn fill(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        let (parameter, tail) = after.split_once('}').expect("closed parameter");
        path.push_str(before);
        path.push_str(path_value(template, parameter));
        rest = tail;
    }
    path.push_str(rest);
    path
}

struct Operation<'a> {
    method: Method,
    template: &'a str,
    spec: &'a Value,
}

/// Creations first (shorter paths, which make what longer ones name, before them), then
/// changes and reads, deletions last (longer paths, which name what shorter ones delete,
/// first).
fn ordered(document: &Value) -> Vec<Operation<'_>> {
    let mut operations = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (rank, method) in ["post", "put", "patch", "get", "delete"].iter().enumerate() {
            if let Some(spec) = item.get(*method) {
                let length = template.len() as i64;
                let key = (rank, if *method == "delete" { -length } else { length });
                operations.push((
                    key,
                    Operation {
                        method: method.to_uppercase().parse().unwrap(),
                        template,
                        spec,
                    },
                ));
            }
        }
    }
    operations.sort_by_key(|(key, op)| (*key, op.template.to_owned()));
    operations.into_iter().map(|(_, op)| op).collect()
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The example body of an operation that takes one.
fn example(document: &Value, spec: &Value) -> Option<Value> {
    let content = &spec.get("requestBody")?["content"]["application/json"];
    let schema = resolve(document, &content["schema"]);
    let example = content
        .get("example")
        .or_else(|| schema.get("example"))
        .or_else(|| schema.get("examples")?.get(0));
    Some(example.cloned().expect("every request body has an example"))
}

/// Checks `value` against `schema`: types, enums, required and documented properties
/// (objects may hold no undocumented field), items, references, `oneOf` and `allOf`.
fn check(
    document: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    strict: bool,
) -> Result<(), String> {
    let schema = resolve(document, schema);
    if let Some(all) = schema["allOf"].as_array() {
        let mut known: Vec<String> = Vec::new();
        for part in all {
            check(document, part, value, at, false)?;
            let part = resolve(document, part);
            if let Some(properties) = part["properties"].as_object() {
                known.extend(properties.keys().cloned());
            }
        }
        if let Some(key) = value
            .as_object()
            .and_then(|object| object.keys().find(|k| !known.contains(k)))
        {
            return Err(format!("{at}.{key} is not documented"));
        }
        return Ok(());
    }
    if let Some(one_of) = schema["oneOf"].as_array() {
        let matching = one_of
            .iter()
            .filter(|s| check(document, s, value, at, strict).is_ok())
            .count();
        return if matching > 0 {
            Ok(())
        } else {
            Err(format!("{at}: {value} matches no oneOf branch"))
        };
    }
    if let Some(types) = match &schema["type"] {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    } {
        let fits = types.iter().any(|t| match *t {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "null" => value.is_null(),
            _ => false,
        });
        if !fits {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {values:?}"));
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(document, items, item, &format!("{at}[{i}]"), true)?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}.{name} is required"));
            }
        }
        for (key, field) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(property) => check(document, property, field, &format!("{at}.{key}"), true)?,
                None if strict && properties.is_some() => {
                    return Err(format!("{at}.{key} is not documented"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Checks the reply against what the operation documents for its status.
fn conforms(
    document: &Value,
    operation: &Operation<'_>,
    status: StatusCode,
    body: &Value,
) -> Result<(), String> {
    let name = format!("{} {}", operation.method, operation.template);
    let documented = &operation.spec["responses"][status.as_str()];
    if documented.is_null() {
        return Err(format!(
            "{name} answered {status}, which is not documented: {body}"
        ));
    }
    match documented["content"]["application/json"].get("schema") {
        Some(schema) => check(document, schema, body, "body", true)
            .map_err(|e| format!("{name} ({status}): {e}")),
        None if body.is_null() => Ok(()),
        None => Err(format!(
            "{name} ({status}) documents no body but sent {body}"
        )),
    }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let api = Api {
        t: Tenants::start().await,
    };
    let status = push(
        &api.t,
        As::Basic("alice", PASSWORD),
        "acme/app",
        "v1",
        &image("app"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let document: Value = serde_json::from_str(
        &super::super::auth::http()
            .get(api.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();

    let mut failures = Vec::new();
    let mut answered = BTreeMap::new();
    let operations = ordered(&document);
    assert!(operations.len() >= 34, "{} operations", operations.len());
    for operation in &operations {
        let path = fill(operation.template);
        let body = example(&document, operation.spec);
        for who in [Who::Nobody, Who::Admin] {
            let reply = api
                .call(who, operation.method.clone(), &path, body.clone())
                .await;
            let expected = match who {
                Who::Nobody => reply.status == StatusCode::UNAUTHORIZED,
                _ => reply.status.is_success(),
            };
            if !expected {
                failures.push(format!(
                    "{} {path} as {who:?}: {} {}",
                    operation.method, reply.status, reply.body
                ));
            }
            if let Err(e) = conforms(&document, operation, reply.status, &reply.body) {
                failures.push(e);
            }
            answered.insert(
                format!("{} {} as {who:?}", operation.method, operation.template),
                reply.status.as_u16(),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\nanswered: {answered:#?}"
    );
}
