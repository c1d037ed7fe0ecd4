//! The management API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they take and return; served at `GET /api/v1/openapi.json` and
//! kept in `docs/openapi.json` (a test fails when the two differ; `AERUGO_WRITE_OPENAPI=1`
//! rewrites the file). The schemas of the account types are written here, so `accounts` stays
//! free of the document's vocabulary.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{audit, namespaces, orgs, repos, robots, users};
use crate::accounts::{
    AccountName, Grant, MAX_ACCOUNT_NAME_LEN, NamespaceKind, OrgRole, Outcome, Permission,
    Visibility,
};

/// Every error: a stable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "NOT_FOUND", "message": "organization \"acme\" not found"}))]
pub struct ErrorBody {
    /// `NOT_FOUND`, `ALREADY_EXISTS`, `REFUSED`, `INVALID`, `UNAUTHORIZED`, `DENIED`,
    /// `TOO_MANY_REQUESTS`, `UNAVAILABLE`, `UNKNOWN`.
    pub error: String,
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aerugo management API",
        version = "1",
        description = "Users, organisations, teams, robots, repository settings, quotas and \
            the audit log of an Aerugo registry. See docs/API.md."
    ),
    paths(
        users::list, users::create, users::read, users::update, users::change_password,
        users::delete,
        orgs::list, orgs::create, orgs::read, orgs::delete, orgs::members, orgs::set_member,
        orgs::remove_member, orgs::teams, orgs::create_team, orgs::delete_team,
        orgs::team_members, orgs::add_team_member, orgs::remove_team_member,
        robots::list_for_org, robots::create_for_org, robots::revoke_for_org,
        robots::delete_for_org, robots::list_for_user, robots::create_for_user,
        robots::revoke_for_user, robots::delete_for_user,
        repos::read, repos::delete, repos::put_permissions, repos::put_visibility,
        namespaces::quota, namespaces::set_quota,
        audit::list,
    ),
    components(schemas(ErrorBody)),
    modifiers(&CommonResponses),
    security(("basic" = []), ("bearer" = [])),
)]
struct ManagementApi;

/// What every operation may answer besides its own responses: each wants a signed-in account
/// that is not a robot, checks its input, and reads the account store.
struct CommonResponses;

const COMMON: [(&str, &str); 6] = [
    (
        "400",
        "INVALID: a malformed name, parameter or body; nothing was changed",
    ),
    (
        "401",
        "UNAUTHORIZED: no credentials, or wrong ones (`WWW-Authenticate: Basic`)",
    ),
    (
        "403",
        "DENIED: the caller may not do this (robots may not use this API)",
    ),
    (
        "429",
        "TOO_MANY_REQUESTS: too many sign-in attempts (`Retry-After`)",
    ),
    ("500", "UNKNOWN: an internal failure"),
    (
        "503",
        "UNAVAILABLE: the account or metadata store does not answer (`Retry-After`)",
    ),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, scheme) in [
            ("basic", HttpAuthScheme::Basic),
            ("bearer", HttpAuthScheme::Bearer),
        ] {
            components
                .security_schemes
                .insert(name.into(), SecurityScheme::Http(Http::new(scheme)));
        }
        let error = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common(operation, &error);
            }
        }
    }
}

fn add_common(operation: &mut Operation, error: &utoipa::openapi::Content) {
    for (status, description) in COMMON {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", error.clone())
                    .build()
                    .into()
            });
    }
}

/// The document, as served and as kept in `docs/openapi.json`.
pub fn document() -> String {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut text = ManagementApi::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    });
    DOCUMENT.clone()
}

/// `GET /api/v1/openapi.json`: public, like the API's documentation.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

// ---- schemas of the account types ----

fn string_enum(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .into()
}

macro_rules! string_enum_schema {
    ($type:ty, $($value:literal),+) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                string_enum(&[$($value),+])
            }
        }
        impl ToSchema for $type {}
    };
}

string_enum_schema!(OrgRole, "member", "admin", "owner");
string_enum_schema!(Permission, "read", "write", "admin");
string_enum_schema!(Visibility, "public", "private");
string_enum_schema!(NamespaceKind, "user", "organization");
string_enum_schema!(Outcome, "allowed", "denied");

impl PartialSchema for AccountName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-z0-9]+(?:[._-][a-z0-9]+)*$"))
            .max_length(Some(MAX_ACCOUNT_NAME_LEN))
            .description(Some("a user, organisation, team or robot name"))
            .into()
    }
}

impl ToSchema for AccountName {}

/// A grant to a user (`name`) or to a team of the repository's organisation (`team`).
impl PartialSchema for Grant {
    fn schema() -> RefOr<Schema> {
        let grant = |kind: &str, field: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("kind", string_enum(&[kind]))
                .required("kind")
                .property(field, AccountName::schema())
                .required(field)
                .property("permission", Ref::from_schema_name(Permission::name()))
                .required("permission")
                .build()
        };
        OneOfBuilder::new()
            .item(grant("user", "name"))
            .item(grant("team", "team"))
            .into()
    }
}

impl ToSchema for Grant {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Permission::name().into(), Permission::schema()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema an operation names is in the document's components.
    #[test]
    fn every_reference_resolves() {
        let document: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let text = document.to_string();
        let schemas = &document["components"]["schemas"];
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                schemas.get(name).is_some(),
                "{name} is referenced, not defined"
            );
        }
    }
}
