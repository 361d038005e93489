//! The OpenAPI 3 document of `/v1`, generated from the handlers' annotations.

use serde_json::json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{exec, files, logs, pause, processes, sandboxes, snapshots, stats};

#[derive(OpenApi)]
#[openapi(
    info(title = "hearth", description = "hearth's REST API: microVM sandboxes, exec, files, processes, logs."),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::get_one, sandboxes::delete,
        sandboxes::timeout, sandboxes::stop, sandboxes::start,
        pause::pause, pause::resume,
        exec::exec, exec::exec_stream, exec::stdin, exec::exec_ws,
        files::download, files::upload, files::list, files::stat, files::mkdir,
        files::remove, files::rename,
        processes::list, processes::start, processes::attach, processes::kill,
        stats::stats, logs::logs,
        snapshots::create, snapshots::list, snapshots::get_one, snapshots::delete,
        snapshots::restore, snapshots::fork,
    ),
    components(schemas(
        crate::error::ErrorBody, sandboxes::ProgressEvent, exec::ExecEvent,
        processes::AttachEventView, logs::Source, super::model::Status,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: the generated one with the request schemas whose
/// rules the derive cannot say (one of `argv`/`cmd`, a non-empty program,
/// env names without `=`) written out by hand, so the document accepts
/// exactly what the handlers accept.
pub fn document_json() -> serde_json::Value {
    let mut v = serde_json::to_value(document()).unwrap_or_default();
    let schemas = &mut v["components"]["schemas"];
    schemas["ExecRequest"] = exec_schema(true);
    schemas["StartProcessRequest"] = exec_schema(false);
    schemas["Signal"] = json!({
        "description": "A signal: a number (1-64) or a name (`TERM`, `SIGTERM`, ...).",
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 64},
            {"type": "string", "enum": super::processes::signal_names()},
        ],
    });
    // Snapshot names: the rule the runtime checks (other names are 400).
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            if !path.starts_with("/v1/snapshots/{name}") {
                continue;
            }
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == "name" {
                        p["schema"]["pattern"] = json!(SNAPSHOT_NAME);
                        p["schema"]["maxLength"] = json!(64);
                    }
                }
            }
        }
    }
    v
}

/// A snapshot name (as `check_name` in the runtime takes it).
const SNAPSHOT_NAME: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";

/// No NUL anywhere in the string.
const NO_NUL: &str = "^[^\\x00]*$";

fn exec_schema(streaming: bool) -> serde_json::Value {
    let s = |d: &str| json!({"type": ["string", "null"], "pattern": NO_NUL, "description": d});
    let mut props = json!({
        "argv": {
            "type": ["array", "null"],
            "description": "Program and arguments (no shell); with `cmd`, the shell's $0, $1, ...",
            "minItems": 1,
            "prefixItems": [{"type": "string", "minLength": 1, "pattern": NO_NUL}],
            "items": {"type": "string", "pattern": NO_NUL},
        },
        "cmd": s("A shell command line, run as `/bin/sh -c CMD [argv...]`."),
        "env": {
            "type": ["object", "null"],
            "description": "Added to the sandbox's environment.",
            "propertyNames": {"pattern": "^[^=\\x00]+$"},
            "additionalProperties": {"type": "string", "pattern": NO_NUL},
        },
        "cwd": {"type": ["string", "null"], "pattern": "^/[^\\x00]*$", "description": "Working directory (absolute; default `/`)."},
        "user": {"type": ["string", "null"], "pattern": "^[^\\x00:/]+$", "description": "A user of the guest's /etc/passwd."},
        "stdin": {"type": ["string", "null"], "description": "Stdin as text."},
        "stdin_base64": {"type": ["string", "null"], "pattern": B64, "description": "Stdin as base64 (after `stdin` when both are given)."},
        "timeout_secs": {"type": ["integer", "null"], "minimum": 1, "maximum": 2592000, "description": "Kill the command's process group after this many seconds (kind `timed_out`)."},
    });
    if streaming {
        props["stdin_open"] = json!({"type": ["boolean", "null"], "description": "Streaming execs: keep stdin open for `/execs/{exec_id}/stdin` or WebSocket binary messages. Ignored by the collected exec."});
    } else {
        props["tag"] = json!({"type": ["string", "null"], "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]*[A-Za-z._-][A-Za-z0-9._-]*$", "description": "A name unique among running processes: 1-64 of `[A-Za-z0-9._-]`, not all digits."});
        props["buffer_bytes"] = json!({"type": ["integer", "null"], "minimum": 4096, "maximum": 67108864, "description": "Output ring buffer in bytes (default 1 MiB)."});
    }
    json!({
        "type": "object",
        "description": if streaming { "A command to run: `argv`, or `cmd` (a shell line), or both." } else { "A background process to start: `argv`, or `cmd`, or both." },
        "additionalProperties": false,
        "properties": props,
        "anyOf": [
            {"required": ["argv"], "properties": {"argv": {"type": "array"}}},
            {"required": ["cmd"], "properties": {"cmd": {"type": "string"}}},
        ],
    })
}

/// Canonical standard base64 (padded, zero trailing bits).
const B64: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

pub async fn serve() -> axum::Json<serde_json::Value> {
    axum::Json(document_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_once_with_its_auth_and_errors() {
        let doc = document_json();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(path.starts_with("/v1/"), "{path}");
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
                ids.push(id.to_string());
                let r = op["responses"].as_object().unwrap();
                assert!(r.contains_key("401"), "{method} {path}: 401 undocumented");
                assert!(
                    r.keys().any(|k| k.starts_with('2') || k == "101"),
                    "{method} {path}: no success"
                );
                for (code, resp) in r {
                    if code.starts_with('4') || code.starts_with('5') {
                        let s = &resp["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(
                            s, "#/components/schemas/ErrorBody",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids repeat");
        assert_eq!(n, 32);
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["api_key"]["name"], "X-API-Key");
        // Every reference resolves.
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "unresolved {name}"
            );
        }
    }

    #[test]
    fn the_exec_schema_needs_argv_or_cmd() {
        let s = exec_schema(true);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["anyOf"].as_array().unwrap().len(), 2);
        assert!(s["properties"]["stdin_open"].is_object());
        assert!(exec_schema(false)["properties"]["tag"].is_object());
    }
}
